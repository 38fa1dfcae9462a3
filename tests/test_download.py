"""`download` against a real registry (Distribution), read back by skopeo and sha256sum; faults from a proxy
that drops connections and answers 500/429; a SIGKILL halfway; a file-size limit standing in for a full disk.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from faults import FaultProxy
from images import make_image, push_layout
from support import sha256, skopeo
from wsm._bundle import Bundle, BundleDir
from wsm._cli import ProgressBar
from wsm._download import Status, download
from wsm._exceptions import BundleError
from wsm._layout import scan_image_tar, tar_members
from wsm._model import ImageSource, Method, ResolvedChart, ResolvedImage
from wsm._reference import Reference
from wsm._remote import Platform
from wsm._verify import verify as verify_opened

CHILD = Path(__file__).resolve().parent / "download_child.py"
AMD64, ARM64, S390X = Platform.parse("linux/amd64"), Platform.parse("linux/arm64"), Platform.parse("linux/s390x")


@pytest.fixture
def client(plain_client):
    return plain_client


def image(host: str, name: str, tag: str = "1.0") -> ResolvedImage:
    source = ImageSource(chart="app", method=Method.VALUES, path=f"{name.split('/')[-1]}.image")
    return ResolvedImage(Reference.parse(f"{host}/{name}:{tag}"), "core", (source,))


def fetch(images, bundle: Path, client, platforms=None, **kwargs):
    charts = kwargs.pop("charts", [])
    return download(images, charts, bundle, client=client, platforms=platforms, **kwargs)


def verify(bundle: Path, **options):
    """`wsm verify` of the bundle directory, as the offline side runs it."""
    return verify_opened(Bundle.open(bundle), **options)


def sha256sum_check(bundle: Path) -> None:
    checked = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def lock_of(bundle: Path) -> dict:
    return json.loads((bundle / "wsm.lock.json").read_text())


def entry_for(bundle: Path, ref: str) -> dict:
    return next(entry for entry in lock_of(bundle)["images"] if entry["image"] == ref)


# -------------------------------------------------------------------------------------------- formats


def test_every_kind_of_image_becomes_one_tarball_that_skopeo_reads_with_upstream_digests(registry, tmp_path, client):
    built = {
        "dl/docker": make_image(registry, "dl/docker", tmp_path),
        "dl/oci": make_image(registry, "dl/oci", tmp_path, oci=True),
        "dl/list": make_image(registry, "dl/list", tmp_path, platforms=("linux/amd64", "linux/arm64")),
        "dl/index": make_image(registry, "dl/index", tmp_path, platforms=("linux/amd64", "linux/arm64"), oci=True),
    }
    bundle = tmp_path / "bundle"
    done = []
    report = fetch([image(registry.host, name) for name in built], bundle, client, on_image_done=done.append)

    assert report.ok and [r.status for r in report.images] == ["ok"] * 4 and len(done) == 4
    assert report.bytes_fetched == sum(
        size for b in built.values() for digest, size in b.blobs.items()
        if digest != b.digest and digest not in b.manifests.values()
    )
    for name, expected in built.items():
        ref = f"{registry.host}/{name}:1.0"
        tar = bundle / f"images/{registry.host.replace(':', '_')}_{name.replace('/', '_')}_1.0.tar"
        assert sha256(skopeo("inspect", "--raw", f"oci-archive:{tar}")) == expected.digest
        copy = tmp_path / name.replace("/", "-")
        skopeo("copy", "--quiet", "--all", f"oci-archive:{tar}", f"dir:{copy}")
        assert sha256((copy / "manifest.json").read_bytes()) == expected.digest
        assert json.loads(skopeo("inspect", "--config", f"docker-archive:{tar}"))["architecture"] == "amd64"
        entry = entry_for(bundle, ref)
        assert entry["digest"] == entry["top"]["digest"] == expected.digest and entry["kept"] == "as-is"
        assert {blob["digest"]: blob["size"] for blob in entry["blobs"]} == expected.blobs
        assert entry["resolved"] == image(registry.host, name).to_dict()
        assert entry["file"] == f"images/{tar.name}" and entry["requested_platforms"] is None
    assert sorted(entry_for(bundle, f"{registry.host}/dl/index:1.0")["platforms"]) == ["linux/amd64", "linux/arm64"]
    sha256sum_check(bundle)
    checked = verify(bundle)
    assert checked.ok and checked.images_checked == 4 and not checked.unlisted
    assert not (bundle / ".wsm-partial").exists()  # the work area is gone after a clean run


def test_one_platform_of_an_index_keeps_that_platform_manifest_and_records_both_digests(registry, tmp_path, client):
    built = make_image(registry, "dl/one-platform", tmp_path, platforms=("linux/amd64", "linux/arm64"))
    bundle = tmp_path / "bundle"
    report = fetch([image(registry.host, "dl/one-platform")], bundle, client, platforms=[ARM64])

    assert report.ok and report.images[0].platforms == ["linux/arm64"]
    tar = bundle / report.images[0].file
    assert sha256(skopeo("inspect", "--raw", f"oci-archive:{tar}")) == built.manifests["linux/arm64"]
    entry = entry_for(bundle, f"{registry.host}/dl/one-platform:1.0")
    assert entry["digest"] == built.digest  # the upstream index
    assert entry["top"]["digest"] == built.manifests["linux/arm64"] and entry["kept"] == "platform"
    assert entry["requested_platforms"] == ["linux/arm64"] and built.digest in entry["note"]
    assert not any(blob["digest"] == built.digest for blob in entry["blobs"])
    docker = scan_image_tar(tar).json("manifest.json")[0]
    assert json.loads(skopeo("inspect", "--config", f"docker-archive:{tar}"))["architecture"] == "arm64"
    assert docker["RepoTags"] == [f"{registry.host}/dl/one-platform:1.0"]


def test_a_subset_of_platforms_gets_an_index_made_by_wsm_and_recorded_as_such(registry, tmp_path, client):
    platforms = ("linux/amd64", "linux/arm64", "linux/s390x")
    built = make_image(registry, "dl/subset", tmp_path, platforms=platforms, oci=True)
    bundle = tmp_path / "bundle"
    report = fetch([image(registry.host, "dl/subset")], bundle, client, platforms=[S390X, AMD64])

    tar = bundle / report.images[0].file
    raw = skopeo("inspect", "--raw", f"oci-archive:{tar}")
    made = json.loads(raw)
    assert [m["digest"] for m in made["manifests"]] == [built.manifests["linux/amd64"], built.manifests["linux/s390x"]]
    entry = entry_for(bundle, f"{registry.host}/dl/subset:1.0")
    assert entry["kept"] == "subset-index" and entry["digest"] == built.digest != entry["top"]["digest"] == sha256(raw)
    assert f"upstream index {built.digest}" in entry["note"] and "wsm" in entry["note"]
    assert sorted(entry["platforms"]) == ["linux/amd64", "linux/s390x"]
    skopeo("copy", "--quiet", "--all", f"oci-archive:{tar}", f"dir:{tmp_path / 'copy'}")
    assert (tmp_path / "copy" / (built.manifests["linux/s390x"].split(":")[1] + ".manifest.json")).exists()
    # docker gets linux/amd64 even though s390x was asked for first
    assert json.loads(skopeo("inspect", "--config", f"docker-archive:{tar}"))["architecture"] == "amd64"
    verify(bundle)


class Recorded:
    """A `Progress` that remembers what it heard (from several threads)."""

    def __init__(self):
        self.expected = self.advanced = 0
        self.taken_back = False
        self._lock = threading.Lock()

    def expect(self, count: int) -> None:
        with self._lock:
            self.expected += count

    def advance(self, count: int) -> None:
        with self._lock:
            self.advanced += count
            self.taken_back = self.taken_back or count < 0


def test_progress_hears_every_byte_and_the_library_draws_nothing(registry, tmp_path, client, capfd):
    built = make_image(registry, "dl/progress", tmp_path, layer_sizes=(200_000,), incompressible=True)
    heard = Recorded()
    report = download([image(registry.host, "dl/progress")], [], tmp_path / "bundle", client=client, platforms=None,
                      progress=heard)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the library prints nothing: drawing is the caller's business
    fetched = sum(size for digest, size in built.blobs.items() if digest != built.digest)
    assert heard.expected == heard.advanced == report.bytes_fetched == fetched


def test_the_progress_bar_counts_bytes_on_stderr_only(registry, tmp_path, client, capfd):
    make_image(registry, "dl/progress-bar", tmp_path, layer_sizes=(200_000,), incompressible=True)
    with ProgressBar("download", enabled=True, leave=True) as bar:
        download([image(registry.host, "dl/progress-bar")], [], tmp_path / "bundle", client=client, platforms=None,
                 progress=bar)
    out, err = capfd.readouterr()
    assert out == "" and "download" in err and "100%" in err


def test_a_platform_the_image_lacks_fails_that_image_in_one_line_naming_what_it_has(registry, tmp_path, client):
    make_image(registry, "dl/no-s390x", tmp_path, platforms=("linux/amd64", "linux/arm64"))
    make_image(registry, "dl/has-s390x", tmp_path, platforms=("linux/amd64", "linux/s390x"))
    bundle = tmp_path / "bundle"
    report = fetch(
        [image(registry.host, "dl/no-s390x"), image(registry.host, "dl/has-s390x")], bundle, client,
        platforms=[S390X],
    )
    failed, ok = report.images
    assert failed.status is Status.FAILED and ok.status is Status.OK and not report.ok
    assert report.to_dict()["images"][0]["status"] == "failed"  # `-o json` keeps the plain words
    assert failed.reason == (
        f"{registry.host}/dl/no-s390x:1.0 has no linux/s390x image; it has linux/amd64, linux/arm64"
    )
    assert failed.file is None and not list((bundle / "images").glob("*no-s390x*"))


def test_a_single_platform_image_is_kept_as_is_whatever_platforms_are_asked(registry, tmp_path, client):
    built = make_image(registry, "dl/single", tmp_path)
    report = fetch([image(registry.host, "dl/single")], tmp_path / "bundle", client, platforms=[ARM64])
    assert report.ok and report.images[0].platforms == ["linux/amd64"]
    assert report.images[0].digest == built.digest


# --------------------------------------------------------------------------------------------- failures


def test_an_unknown_tag_is_reported_and_the_other_images_still_download(registry, tmp_path, client):
    make_image(registry, "dl/known", tmp_path)
    bundle = tmp_path / "bundle"
    wanted = [image(registry.host, "dl/known"), image(registry.host, "dl/known", "no-such-tag")]
    report = fetch(wanted, bundle, client)

    assert [r.status for r in report.images] == ["ok", "failed"]
    failure = report.failures[0]
    assert failure.image == f"{registry.host}/dl/known:no-such-tag" and "not found" in failure.reason
    assert "\n" not in failure.reason
    assert lock_of(bundle)["failures"] == [{"kind": "image", "name": failure.image, "reason": failure.reason}]
    assert report.to_dict()["ok"] is False
    sha256sum_check(bundle)  # what is there is complete and listed
    with pytest.raises(BundleError, match="incomplete: the download could not fetch .*no-such-tag"):
        verify(bundle)
    assert verify(bundle, allow_incomplete=True).images_checked == 1


def test_a_full_disk_stops_the_run_with_one_line(registry, tmp_path):
    make_image(registry, "dl/big", tmp_path, layer_sizes=(400_000,), incompressible=True)
    bundle = tmp_path / "bundle"
    child = run_child(bundle, [f"{registry.host}/dl/big:1.0"], file_size_limit=200_000)
    assert child.returncode == 1, child.stderr
    (line,) = child.stderr.strip().splitlines()
    assert line.startswith("cannot write ") and "larger than this filesystem or limit allows" in line
    assert not list((bundle / "images").iterdir())


def test_a_disk_too_small_for_the_bundle_is_refused_before_fetching(registry, tmp_path, client, monkeypatch):
    make_image(registry, "dl/roomy", tmp_path, layer_sizes=(50_000,), incompressible=True)
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    with pytest.raises(BundleError, match=r"needs .* but its disk has 1000 B free; free some space"):
        fetch([image(registry.host, "dl/roomy")], tmp_path / "bundle", client)


def test_two_downloads_into_one_bundle_at_once_are_refused(tmp_path, client):
    bundle = BundleDir(tmp_path / "bundle")
    bundle.prepare()
    with open(bundle.work / "run.lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(BundleError, match="another wsm download is writing bundle"):
            fetch([], bundle.root, client)


# -------------------------------------------------------------------------------------- reruns, resume


def test_a_rerun_skips_complete_images_and_keeps_those_of_earlier_runs(registry, tmp_path, client):
    make_image(registry, "dl/stays", tmp_path)
    make_image(registry, "dl/moves", tmp_path)
    make_image(registry, "dl/earlier", tmp_path)
    bundle = tmp_path / "bundle"
    with FaultProxy(registry.url) as proxy:
        first = fetch([image(proxy.host, n) for n in ("dl/stays", "dl/moves", "dl/earlier")], bundle, client)
        assert first.ok
        moved = make_image(registry, "dl/moves", tmp_path / "again")  # the tag now points elsewhere
        proxy.reset_counts()
        second = fetch([image(proxy.host, n) for n in ("dl/stays", "dl/moves")], bundle, client)

    stays, moves = second.images
    assert stays.status == "skipped" and stays.fetched == 0 and moves.status == "ok"
    assert proxy.blob_bytes_served == second.bytes_fetched == sum(
        size for digest, size in moved.blobs.items() if digest != moved.digest
    )
    assert second.kept_from_earlier == [f"{proxy.host}/dl/earlier:1.0"]
    entries = {entry["image"]: entry for entry in lock_of(bundle)["images"]}
    assert entries[f"{proxy.host}/dl/earlier:1.0"]["in_release"] is False
    assert (bundle / entries[f"{proxy.host}/dl/earlier:1.0"]["file"]).exists()
    assert entries[f"{proxy.host}/dl/moves:1.0"]["digest"] == moved.digest
    sha256sum_check(bundle)
    assert verify(bundle).images_checked == 3


def test_shared_layers_are_fetched_once_per_run(registry, tmp_path, client):
    built = make_image(registry, "dl/shared", tmp_path, layer_sizes=(30_000, 40_000), incompressible=True)
    push_layout(built, f"{registry.host}/dl/shared:same-content")
    bundle = tmp_path / "bundle"
    with FaultProxy(registry.url) as proxy:
        report = fetch([image(proxy.host, "dl/shared"), image(proxy.host, "dl/shared", "same-content")], bundle, client)
    assert report.ok and len(list((bundle / "images").iterdir())) == 2
    assert proxy.blob_bytes_served == sum(size for digest, size in built.blobs.items() if digest != built.digest)


def test_a_blob_an_earlier_run_left_complete_in_the_store_is_not_fetched_again(registry, tmp_path, client):
    """A run that shared blobs between two images was killed after they landed in the store; on the rerun one
    image is complete, so the other alone uses them: they come from the store, not from the registry again."""
    built = make_image(registry, "dl/left", tmp_path, layer_sizes=(30_000, 40_000), incompressible=True)
    push_layout(built, f"{registry.host}/dl/left:same-content")
    bundle = tmp_path / "bundle"
    assert fetch([image(registry.host, "dl/left")], bundle, client).ok
    first = Bundle.open(bundle).lock.images[image(registry.host, "dl/left").reference.canonical]
    store = BundleDir(bundle).blobs
    store.mkdir(parents=True, exist_ok=True)
    tarball = bundle / first.file
    with open(tarball, "rb") as handle:
        for name, (offset, size) in tar_members(tarball).items():
            if name.startswith("blobs/sha256/") and name != f"blobs/sha256/{built.digest.partition(':')[2]}":
                handle.seek(offset)
                (store / name.rpartition("/")[2]).write_bytes(handle.read(size))
    with FaultProxy(registry.url) as proxy:
        report = fetch([image(registry.host, "dl/left"), image(proxy.host, "dl/left", "same-content")], bundle,
                       client)
    assert report.ok and proxy.blob_bytes_served == 0
    verify(bundle)


def test_dropped_connections_and_500_and_429_answers_do_not_stop_the_download(registry, tmp_path, client):
    built = make_image(registry, "dl/flaky", tmp_path, layer_sizes=(300_000, 200_000), incompressible=True)
    bundle = tmp_path / "bundle"
    with FaultProxy(registry.url, drop_blob_after=70_000, drops=3, fail_every=4, fail_status=500) as proxy:
        report = fetch([image(proxy.host, "dl/flaky")], bundle, client)
        proxy.fail_status = 429
        proxy.drops = 2
        other = fetch([image(proxy.host, "dl/flaky", "1.0")], tmp_path / "other", client)
    assert report.ok and other.ok, report.failures + other.failures
    assert any(record.range for record in proxy.records)  # resumed with Range after a drop
    tar = bundle / report.images[0].file
    assert sha256(skopeo("inspect", "--raw", f"oci-archive:{tar}")) == built.digest
    verify(bundle)


def test_an_interrupt_stops_the_run_and_a_rerun_finishes_it(registry, tmp_path, client):
    names = ("dl/ctrl-c-a", "dl/ctrl-c-b", "dl/ctrl-c-c")
    for name in names:
        make_image(registry, name, tmp_path, layer_sizes=(100_000,), incompressible=True)
    bundle = tmp_path / "bundle"

    def press_ctrl_c(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch([image(registry.host, n) for n in names], bundle, client, concurrency=1, on_image_done=press_ctrl_c)
    assert not (bundle / "SHA256SUMS").exists()
    finished = [entry["image"] for entry in lock_of(bundle)["images"]]
    assert len(finished) == 1 and len(list((bundle / "images").glob("*.tar"))) == 1
    assert not list((bundle / "images").glob("*.partial"))  # a partial tarball waits in the work area only

    report = fetch([image(registry.host, n) for n in names], bundle, client)
    assert report.ok and sorted(r.status for r in report.images) == ["ok", "ok", "skipped"]
    assert next(r for r in report.images if r.status == "skipped").image == finished[0]
    sha256sum_check(bundle)


def test_a_killed_download_resumes_and_fetches_little_more_than_what_was_missing(registry, tmp_path, client):
    names = ("dl/kill-a", "dl/kill-b", "dl/kill-c")
    built = [make_image(registry, n, tmp_path, layer_sizes=(3_000_000, 250_000), incompressible=True) for n in names]
    sizes = [sum(size for digest, size in b.blobs.items() if digest != b.digest) for b in built]
    total = sum(sizes)
    bundle = tmp_path / "bundle"
    with FaultProxy(registry.url) as proxy:
        refs = [f"{proxy.host}/{n}:1.0" for n in names]
        # One blob at a time, in order: killed 2.3 MB into the second image's first layer, when at least its
        # first MiB is written (the tarball is written in 1 MiB batches, the one before waited for).
        child = run_child(bundle, refs, kill_after=sizes[0] + 2_300_000)
        assert child.returncode == -9, child.stderr  # SIGKILL: no cleanup ran

        # Nothing looks complete before it is: every tarball there is whole and recorded, no SHA256SUMS.
        assert not (bundle / "SHA256SUMS").exists()
        recorded = {entry["file"]: entry for entry in lock_of(bundle)["images"]}  # the first image
        tars = sorted(str(p.relative_to(bundle)) for p in (bundle / "images").glob("*.tar"))
        assert sorted(recorded) == tars
        for name in tars:
            scan = scan_image_tar(bundle / name)
            assert scan.sha256 == recorded[name]["file_sha256"]
        # Killed in the middle of a blob: the second image's partial tarball holds what had arrived of it.
        (partial,) = (bundle / ".wsm-partial" / "images").iterdir()
        fetched_blobs = {d.partition(":")[2] for b in built for d in b.blobs if d != b.digest}
        on_disk = blob_bytes_in(partial, fetched_blobs)
        assert 1024 * 1024 <= on_disk < sizes[1]
        in_tars = sum(b["size"] for e in recorded.values() for b in e["blobs"] if b["mediaType"].find("manifest") < 0)
        missing = total - on_disk - in_tars
        assert 0 < missing < total

        proxy.reset_counts()
        report = fetch([image(proxy.host, n) for n in names], bundle, client)
        served, ranged = proxy.blob_bytes_served, any(record.range for record in proxy.records)
        fresh = fetch([image(proxy.host, n) for n in names], tmp_path / "fresh", client)
    assert report.ok
    assert missing <= served <= missing + 64 * 1024
    assert ranged  # the partial blob was continued, not restarted
    assert report.bytes_fetched == served
    sha256sum_check(bundle)
    assert verify(bundle).images_checked == 3
    # The continued tarball is byte for byte the one a download in one go writes.
    assert fresh.ok
    sums = [[e["file_sha256"] for e in lock_of(where)["images"]] for where in (bundle, tmp_path / "fresh")]
    assert sums[0] == sums[1]


# ------------------------------------------------------------------------------------------------ charts


def test_charts_are_copied_byte_for_byte_and_checked_against_their_digest(tmp_path, client):
    archive = tmp_path / "wandb-0.1.0.tgz"
    archive.write_bytes(b"\x1f\x8b pretend chart archive" * 100)
    good = ResolvedChart("wandb", "0.1.0", "https://charts.wandb.ai", "core", archive, sha256(archive.read_bytes()))
    bad = ResolvedChart("other", "1.0.0", "https://charts.example.com", "core", archive, "sha256:" + "0" * 64)
    unpackaged = ResolvedChart("local", "2.0.0", "./charts/local", "core")
    bundle = tmp_path / "bundle"
    report = fetch([], bundle, client, charts=[good, bad, unpackaged], manifest_text="release: test\n")

    assert [c.status for c in report.charts] == ["ok", "failed", "failed"]
    assert (bundle / "charts/wandb-0.1.0.tgz").read_bytes() == archive.read_bytes()
    assert "the resolver recorded sha256:000" in report.charts[1].reason
    assert "package it" in report.charts[2].reason
    lock = lock_of(bundle)
    assert lock["manifest"] == "release: test\n"
    (chart,) = lock["charts"]
    assert chart == {**good.to_dict(), "file": "charts/wandb-0.1.0.tgz", "digest": good.digest,
                     "size": archive.stat().st_size, "in_release": True}
    again = fetch([], bundle, client, charts=[good])
    assert again.charts[0].status == "skipped" and again.ok
    sha256sum_check(bundle)


# ------------------------------------------------------------------------------------------------ helpers


def blob_bytes_in(partial: Path, hexes: set[str]) -> int:
    """Bytes of the members named blobs/sha256/<one of `hexes`> that a cut-off tarball holds."""
    data, offset, found = partial.read_bytes(), 0, 0
    while offset + tarfile.BLOCKSIZE <= len(data) and data[offset : offset + tarfile.BLOCKSIZE].strip(b"\0"):
        info = tarfile.TarInfo.frombuf(data[offset : offset + tarfile.BLOCKSIZE], "utf-8", "strict")
        start = offset + tarfile.BLOCKSIZE
        if info.name.removeprefix("blobs/sha256/") in hexes:
            found += max(0, min(info.size, len(data) - start))
        offset = start + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return found


def run_child(bundle: Path, refs: list[str], **options) -> subprocess.CompletedProcess:
    args = {"bundle": str(bundle), "images": refs, **options}
    return subprocess.run([sys.executable, str(CHILD), json.dumps(args)], capture_output=True, text=True, timeout=120)

