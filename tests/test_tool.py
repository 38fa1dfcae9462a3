"""The bundle carries its own tool: `tools/wsm.pyz` runs verify, push, list and load with nothing installed, on
Debian's python3 and on pyenv's; it is the same file on every download, listed in SHA256SUMS and the lock, and
`wsm verify` checks it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from charts import package, write_chart
from images import make_image
from servers import free_port
from support import (
    DEBIAN_PYTHON,
    one_line_error,
    run_tool,
    sha256,
    skopeo,
    supported_interpreters,
    tool_interpreters,
    wsm,
)
from wsm._exceptions import BundleError
from wsm._lock import BundleLock

TOOL = "tools/wsm.pyz"


@pytest.fixture(scope="module")
def release(registry, tmp_path_factory):
    """A one-chart release of two images in the session registry, and a bundle the installed wsm downloaded."""
    work = tmp_path_factory.mktemp("tool")
    images = {name: make_image(registry, f"tool/{name}", work, tag="1.0") for name in ("app", "side")}
    chart = write_chart(
        work / "src" / "demo", {"apiVersion": "v2", "name": "demo", "version": "1.0.0"},
        {"app": {"image": {"repository": f"{registry.host}/tool/app", "tag": "1.0"}},
         "side": {"image": f"{registry.host}/tool/side:1.0"}},
    )
    archive = package(chart, work / "pkg")
    bundle = work / "bundle"
    result = wsm("download", "--chart", str(archive), "--bundle", str(bundle), "--plain-http", cwd=work)
    assert result.returncode == 0, result.stderr
    return {"work": work, "archive": archive, "bundle": bundle, "images": images}


def copy_bundle(release, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(release["bundle"], copy)
    return copy


def test_the_tool_is_in_the_lock_and_in_sha256sums(release):
    bundle = release["bundle"]
    data = (bundle / TOOL).read_bytes()
    lock = json.loads((bundle / "wsm.lock.json").read_text())
    assert lock["tool"] == {"file": TOOL, "sha256": sha256(data).removeprefix("sha256:"), "size": len(data),
                            "wsm_version": "0.1.0"}
    assert f"{lock['tool']['sha256']}  {TOOL}\n" in (bundle / "SHA256SUMS").read_text()
    checked = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Executable, for the runbook's helm --post-renderer ./bundle/tools/wsm.pyz: the mode is in no digest.
    assert (bundle / TOOL).stat().st_mode & 0o777 == 0o755 and data.startswith(b"#!/usr/bin/env python3\n")
    verified = wsm("verify", str(bundle))
    assert verified.returncode == 0, verified.stderr


def test_the_tool_is_python_source_only(release):
    with zipfile.ZipFile(release["bundle"] / TOOL) as archive:
        names = set(archive.namelist())
    assert {"__main__.py", "wsm/_cli.py", "wsm/manifests/wandb.yaml", "certifi/cacert.pem", "yaml/__init__.py",
            "httpx/__init__.py", "docker/__init__.py", "ruamel/yaml/__init__.py"} <= names
    compiled = [name for name in names if name.endswith((".so", ".pyd", ".pyc")) or "__pycache__" in name]
    assert compiled == []
    assert not any(name.startswith(("pytest", "mypy", "cryptography")) for name in names)  # test tools stay out


@pytest.mark.parametrize("python", tool_interpreters(), ids=str)
def test_the_tool_runs_the_offline_side_with_nothing_installed(python, release, registry, helm_repo, tmp_path):
    bundle = copy_bundle(release, tmp_path)
    target = f"pyz-{hashlib.sha256(str(python).encode()).hexdigest()[:8]}"  # a registry path per interpreter
    pyz = bundle / TOOL

    version = run_tool(python, pyz, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "wsm 0.1.0", version.stderr

    verified = run_tool(python, pyz, "verify", str(bundle), cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "2 images" in verified.stdout and "the tool" in verified.stdout

    prefix, charts = f"{registry.host}/{target}", f"{helm_repo.url}/{target}"
    pushed = run_tool(python, pyz, "push", "--bundle", str(bundle), "--registry", prefix, "--helm-repo", charts,
                      "--plain-http", "-o", "json", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    report = json.loads(pushed.stdout)
    assert {job["result"] for job in report["images"]} == {"sent"} and len(report["images"]) == 2
    for name, built in release["images"].items():
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{prefix}/tool/{name}:1.0")
        assert sha256(raw) == built.digest
    assert (bundle / "values" / "demo.yaml").is_file() and (bundle / "RUNBOOK.md").is_file()

    listed = run_tool(python, pyz, "list", "-o", "plain", cwd=tmp_path)  # the embedded release, from its lock
    assert listed.returncode == 0 and "docker.io/wandb/local:" in listed.stdout, listed.stderr

    no_engine = run_tool(python, pyz, "load", "--bundle", str(bundle), "--docker-host",
                         f"tcp://127.0.0.1:{free_port()}", cwd=tmp_path)  # the docker SDK loads from the archive
    one_line_error(no_engine, "no Docker engine answers")


@pytest.mark.parametrize("python", supported_interpreters(), ids=str)
def test_the_tool_verifies_and_lists_on_every_supported_python_found_here(python, release, tmp_path):
    verified = run_tool(python, release["bundle"] / TOOL, "verify", str(release["bundle"]), "-o", "json", cwd=tmp_path)
    assert verified.returncode == 0 and json.loads(verified.stdout)["tool_checked"], verified.stderr
    listed = run_tool(python, release["bundle"] / TOOL, "list", "-o", "json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout)["images"], listed.stderr


OLDER_PYTHONS = sorted(Path.home().glob(".pyenv/versions/3.[6-9].*/bin/python3"))


@pytest.mark.parametrize("python", OLDER_PYTHONS[-1:], ids=str)
def test_an_older_python_is_told_what_the_tool_needs_in_one_line(python, release, tmp_path):
    result = run_tool(python, release["bundle"] / TOOL, "verify", str(release["bundle"]), cwd=tmp_path)
    one_line_error(result, "this wsm.pyz needs Python 3.10 or newer", str(python))
    assert len(result.stderr.splitlines()) == 1


def test_every_download_writes_the_same_tool_also_from_the_tool_itself(release, tmp_path):
    expected = (release["bundle"] / TOOL).read_bytes()
    again = tmp_path / "again"
    result = wsm("download", "--chart", str(release["archive"]), "--bundle", str(again), "--plain-http", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (again / TOOL).read_bytes() == expected and (again / TOOL).stat().st_mode & 0o777 == 0o755

    if not DEBIAN_PYTHON.exists():
        pytest.skip("no Debian python3 here")
    from_tool = tmp_path / "from-tool"
    result = run_tool(DEBIAN_PYTHON, release["bundle"] / TOOL, "download", "--chart", str(release["archive"]),
                      "--bundle", str(from_tool), "--plain-http", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (from_tool / TOOL).read_bytes() == expected


def test_verify_names_a_changed_tool_even_when_sha256sums_was_rewritten(release, tmp_path):
    bundle = copy_bundle(release, tmp_path)
    tool = bundle / TOOL
    data = bytearray(tool.read_bytes())
    data[len(data) // 2] ^= 0x40
    tool.write_bytes(bytes(data))
    one_line_error(wsm("verify", str(bundle)), TOOL, "SHA256SUMS says")

    sums = bundle / "SHA256SUMS"
    new = hashlib.sha256(bytes(data)).hexdigest()
    sums.write_text("".join(f"{new}  {TOOL}\n" if line.endswith(f"  {TOOL}") else line + "\n"
                            for line in sums.read_text().splitlines()))
    one_line_error(wsm("verify", str(bundle)), TOOL, "the lock says")


def test_a_lock_without_a_tool_still_reads_and_a_tool_outside_tools_is_refused(release):
    data = json.loads((release["bundle"] / "wsm.lock.json").read_text())
    tool = data.pop("tool")
    old = BundleLock.from_dict(data, "old.lock")
    assert old.tool is None and "tool" not in old.to_dict()

    current = BundleLock.from_dict({**data, "tool": tool}, "new.lock")
    assert current.tool is not None and current.tool.to_dict() == tool
    with pytest.raises(BundleError, match=r"tool\.file"):
        BundleLock.from_dict({**data, "tool": {**tool, "file": "../wsm.pyz"}}, "bad.lock")
