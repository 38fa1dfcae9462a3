"""A bundle edited after the download is caught by verify and by push, even when SHA256SUMS is recomputed to
match; files that are not regular (a FIFO, a link to /dev/zero) are refused at once, without being opened."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from charts import package, write_chart
from images import make_image
from servers import Registry
from support import one_line_error, wsm
from wsm._bundle import Bundle
from wsm._push import PushResult, push_images
from wsm._reference import Reference
from wsm._target import TargetRegistry, plan_targets

WAIT = 60  # seconds: a hang (the old behaviour on a FIFO) fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def original(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("integrity")
    make_image(registry, "integrity/app", work, tag="1.0")
    chart = package(write_chart(work / "src", {"apiVersion": "v2", "name": "integ", "version": "0.1.0"},
                                {"image": {"repository": f"{registry.host}/integrity/app", "tag": "1.0"}}), work)
    result = wsm("download", "--chart", str(chart), "--bundle", str(work / "bundle"), "--plain-http", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "bundle"


@pytest.fixture
def bundle(original, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(original, copy)
    return copy


@pytest.fixture(scope="module")
def internal(tmp_path_factory):
    with Registry(tmp_path_factory.mktemp("integrity-internal")) as server:
        yield server


def tarball(bundle: Path) -> Path:
    return next((bundle / "images").glob("*.tar"))


def recompute_sums(bundle: Path) -> None:
    """What an attacker who edits a file does next: SHA256SUMS made to match again (with sha256sum itself)."""
    names = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    sums = subprocess.run(["sha256sum", "--", *names], cwd=bundle, check=True, capture_output=True).stdout
    (bundle / "SHA256SUMS").write_bytes(sums)


def retag(path: Path, new_tag: str) -> None:
    """Rewrite the tarball with manifest.json's RepoTags changed; every blob stays intact."""
    members = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                text = data.decode()
                start = text.index('"RepoTags": [') + len('"RepoTags": [')
                data = (text[:start] + f'"{new_tag}"' + text[text.index("]", start):]).encode()
                member.size = len(data)
            members.append((member, data))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)


def push(bundle: Path, internal: Registry):
    return wsm("push", "--bundle", str(bundle), "--registry", f"{internal.host}/integrity", "--plain-http",
               cwd=bundle.parent)


def run_bounded(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "wsm", *args], capture_output=True, text=True, timeout=WAIT,
                          stdin=subprocess.DEVNULL)


def test_retagged_tarball_with_recomputed_sums_fails_verify_and_push(bundle, internal):
    tar = tarball(bundle)
    retag(tar, "evil.example/app:pwned")
    recompute_sums(bundle)
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 0
    verified = wsm("verify", str(bundle))
    one_line_error(verified, tar.name, "the lock says")
    one_line_error(push(bundle, internal), tar.name, "the lock says")


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_tarball_that_is_not_a_regular_file_is_refused_at_once(bundle, internal, kind):
    tar = tarball(bundle)
    tar.unlink()
    if kind == "fifo":
        os.mkfifo(tar)
    else:
        tar.symlink_to("/dev/zero")
    for args in (["verify", str(bundle)],
                 ["push", "--bundle", str(bundle), "--registry", f"{internal.host}/integrity", "--plain-http"]):
        result = run_bounded(*args)
        one_line_error(result, tar.name, "not a regular file")


def test_push_itself_refuses_a_fifo_without_opening_it(bundle, internal, plain_client):
    """push_images alone (no verify before it, as a faster push may skip a full pass) must not block on a FIFO."""
    opened = Bundle.open(bundle)
    tar = tarball(bundle)
    tar.unlink()
    os.mkfifo(tar)
    targets = plan_targets([Reference.parse(key) for key in opened.lock.images], TargetRegistry.parse(internal.host))
    jobs: list = []
    worker = threading.Thread(target=lambda: jobs.extend(push_images(opened, targets, plain_client)), daemon=True)
    worker.start()
    worker.join(WAIT)
    if worker.is_alive():  # release the blocked reader before failing
        os.close(os.open(tar, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("push_images blocked on a FIFO")
    assert [job.result for job in jobs] == [PushResult.FAILED]
    assert "not a regular file" in str(jobs[0].error)


def test_a_lock_left_out_of_sha256sums_fails_verify(bundle):
    """The root digest covers the lock only through SHA256SUMS: a list without the lock is refused."""
    sums = bundle / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "wsm.lock.json" not in line))
    one_line_error(wsm("verify", str(bundle)), "wsm.lock.json: not listed in SHA256SUMS")
