"""`wsm download --max-file-size`: image tarballs and charts above the size are stored as NAME.part-NNN, listed in
SHA256SUMS and the lock; verify, push and load read across the parts without rejoining them, and `cat` rejoins
them into the file docker loads."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from charts import package, write_chart
from images import make_image
from support import one_line_error, skopeo, wsm
from wsm._bundle import Bundle
from wsm._exceptions import WsmError
from wsm._layout import blob_member, tar_members
from wsm._load import load
from wsm._lock import FilePart
from wsm._parts import FAT32_MAX, PartedFile, PartsOpener, parse_size

LIMIT = 300_000


def lock_of(bundle: Path) -> dict:
    return json.loads((bundle / "wsm.lock.json").read_text())


@pytest.fixture(scope="module")
def release(registry, tmp_path_factory) -> dict:
    """Two images of about 1.2 MB (one a two-platform index) and a chart, downloaded with --max-file-size 300KB."""
    work = tmp_path_factory.mktemp("parts")
    built = {
        "parts/app": make_image(registry, "parts/app", work, layer_sizes=(700_000, 500_000), incompressible=True),
        "parts/multi": make_image(registry, "parts/multi", work, layer_sizes=(400_000,), incompressible=True,
                                  platforms=("linux/amd64", "linux/arm64"), oci=True),
    }
    chart = write_chart(work / "src" / "demo", {"apiVersion": "v2", "name": "demo", "version": "1.0.0"},
                        {"app": {"image": f"{registry.host}/parts/app:1.0"},
                         "multi": {"image": f"{registry.host}/parts/multi:1.0"}})
    archive = package(chart, work / "pkg")
    bundle = work / "bundle"
    result = wsm("download", "--chart", str(archive), "--bundle", str(bundle), "--plain-http", "--all-platforms",
                 "--max-file-size", "300KB", cwd=work)
    assert result.returncode == 0, result.stderr
    return {"work": work, "bundle": bundle, "built": built, "archive": archive}


def copied(release, tmp_path: Path) -> Path:
    subprocess.run(["cp", "-a", str(release["bundle"]), str(tmp_path / "bundle")], check=True)
    return tmp_path / "bundle"


def rejoin(bundle: Path, image: dict, dest: Path) -> Path:
    """README's line: cat NAME.part-* > NAME."""
    subprocess.run(f"cat {image['file']}.part-* > {dest}", shell=True, cwd=bundle, check=True)
    return dest


def test_large_files_are_parts_listed_in_sha256sums_and_the_lock(release):
    bundle = release["bundle"]
    lock = lock_of(bundle)
    sums = (bundle / "SHA256SUMS").read_text()
    assert len(lock["images"]) == 2
    for image in lock["images"]:
        assert not (bundle / image["file"]).exists()
        parts = image["parts"]
        assert len(parts) >= 2 and [p["file"] for p in parts] == [f"{image['file']}.part-{i:03d}" for i in range(len(parts))]
        assert all(p["size"] <= LIMIT for p in parts) and sum(p["size"] for p in parts) == image["file_size"]
        for part in parts:
            data = (bundle / part["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == part["sha256"]
            assert f"{part['sha256']}  {part['file']}\n" in sums
        assert f"  {image['file']}\n" not in sums
    assert (bundle / "tools" / "wsm.pyz").stat().st_size > LIMIT  # the bundle's own tool stays one file
    checked = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_cat_rejoins_the_tarball_the_lock_describes(release, tmp_path):
    for image in lock_of(release["bundle"])["images"]:
        whole = rejoin(release["bundle"], image, tmp_path / "whole.tar")
        assert hashlib.sha256(whole.read_bytes()).hexdigest() == image["file_sha256"]


def test_some_blob_spans_two_parts(release):
    """What push must upload from two files: the test would not show it otherwise."""
    bundle = release["bundle"]
    spanning = 0
    for image in lock_of(bundle)["images"]:
        parts = [FilePart(p["file"], p["size"], p["sha256"]) for p in image["parts"]]
        bounds = [sum(p["size"] for p in image["parts"][: i + 1]) for i in range(len(image["parts"]))]
        members = tar_members(bundle / image["file"], PartsOpener(bundle, parts))
        for blob in image["blobs"]:
            offset, size = members[blob_member(blob["digest"])]
            spanning += any(offset < bound < offset + size for bound in bounds)
    assert spanning >= 2


def test_verify_reads_across_parts_and_names_a_damaged_part(release, tmp_path):
    result = wsm("verify", str(release["bundle"]))
    assert result.returncode == 0, result.stderr
    assert "2 images" in result.stdout and "not part of" not in result.stdout
    bundle = copied(release, tmp_path)
    part = lock_of(bundle)["images"][0]["parts"][1]
    data = bytearray((bundle / part["file"]).read_bytes())
    data[len(data) // 2] ^= 1
    (bundle / part["file"]).write_bytes(bytes(data))
    one_line_error(wsm("verify", str(bundle)), part["file"])


def test_a_missing_part_is_named(release, tmp_path):
    bundle = copied(release, tmp_path)
    part = lock_of(bundle)["images"][1]["parts"][-1]
    (bundle / part["file"]).unlink()
    one_line_error(wsm("verify", str(bundle)), part["file"], "missing")


def test_push_uploads_blobs_across_parts_with_upstream_digests(release, registry):
    result = wsm("push", "--bundle", str(release["bundle"]), "--registry", f"{registry.host}/pushed-parts",
                 "--plain-http")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, built in release["built"].items():
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/pushed-parts/{name}:1.0")
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == built.digest
        for digest in built.blobs:  # every blob arrived whole (the registry checks each digest as it stores it)
            url = f"http://{registry.host}/v2/pushed-parts/{name}/blobs/{digest}"
            assert httpx.head(url).status_code == 200 or digest in built.manifests.values() or digest == built.digest


@pytest.mark.docker
def test_cat_rejoined_parts_load_into_dockerd_and_wsm_load_reads_the_parts(docker_engine, release, registry, tmp_path):
    bundle = release["bundle"]
    app = next(image for image in lock_of(bundle)["images"] if image["image"].endswith("parts/app:1.0"))
    whole = rejoin(bundle, app, tmp_path / "app.tar")
    loaded = subprocess.run(["docker", "-H", docker_engine.url, "load", "-i", str(whole)], capture_output=True,
                            text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert f"{registry.host}/parts/app:1.0" in loaded.stdout
    subprocess.run(["docker", "-H", docker_engine.url, "rmi", f"{registry.host}/parts/app:1.0"], capture_output=True)
    names = load(Bundle.open(bundle), docker_host=docker_engine.url, images=[f"{registry.host}/parts/app:1.0"])
    assert names == [f"{registry.host}/parts/app:1.0"]
    inspected = subprocess.run(["docker", "-H", docker_engine.url, "image", "inspect", names[0]], capture_output=True)
    assert inspected.returncode == 0


def test_a_rerun_keeps_the_parts_with_or_without_the_option(release, tmp_path):
    bundle = copied(release, tmp_path)
    before = lock_of(bundle)["images"]
    for extra in (["--max-file-size", "300KB"], []):
        result = wsm("download", "--chart", str(release["archive"]), "--bundle", str(bundle), "--plain-http",
                     "--all-platforms", *extra, cwd=release["work"])
        assert result.returncode == 0, result.stderr
        assert "already in the bundle" in result.stderr or "2 of 2 images" in result.stdout
        assert [image["parts"] for image in lock_of(bundle)["images"]] == [image["parts"] for image in before]
        assert wsm("verify", str(bundle)).returncode == 0


def test_a_kill_between_the_lock_and_removing_the_whole_file_is_finished_by_a_rerun(release, tmp_path):
    bundle = copied(release, tmp_path)
    image = lock_of(bundle)["images"][0]
    rejoin(bundle, image, bundle / image["file"])  # the whole file still there, the lock listing the parts
    result = wsm("download", "--chart", str(release["archive"]), "--bundle", str(bundle), "--plain-http",
                 "--all-platforms", "--max-file-size", "300KB", cwd=release["work"])
    assert result.returncode == 0, result.stderr
    assert not (bundle / image["file"]).exists()
    assert wsm("verify", str(bundle)).returncode == 0


def test_sizes_and_media_names():
    assert parse_size("4GiB") == 4 * 1024**3
    assert parse_size("700MB") == 700_000_000
    assert parse_size("300KB") == 300_000
    assert parse_size("123456") == 123456
    assert parse_size("1.5GiB") == 3 * 1024**3 // 2
    assert FAT32_MAX == 4 * 1024**3 - 1
    for bad in ("lots", "4 parsecs", "12"):
        with pytest.raises(WsmError):
            parse_size(bad)
    result = wsm("download", "--max-file-size", "lots", "--bundle", "/nonexistent")
    assert result.returncode == 2 and "lots" in result.stderr
    result = wsm("download", "--max-file-size", "1GB", "--media", "fat32")
    assert result.returncode == 2 and "not allowed with" in result.stderr


def test_a_parted_file_reads_and_seeks_as_the_whole(tmp_path):
    data = bytes(range(256)) * 50
    files = []
    for index, start in enumerate(range(0, len(data), 3000)):
        path = tmp_path / f"f.part-{index:03d}"
        path.write_bytes(data[start : start + 3000])
        files.append((path, len(data[start : start + 3000])))
    parted = PartedFile(files)
    assert parted.read() == data
    parted.seek(2990)
    assert parted.read(20) == data[2990:3010]
    parted.seek(-5, 2)
    assert parted.read() == data[-5:]
    parted.seek(0)
    parted.read()
    assert parted.part_sha256s() == [hashlib.sha256(path.read_bytes()).hexdigest() for path, _ in files]


def test_a_chart_in_parts_publishes_and_the_bundles_tool_pushes_it(registry, helm_repo, tmp_path):
    """A chart above the size is stored in parts too; the bundle's own wsm.pyz (no site-packages) verifies and
    pushes the bundle, and the published chart is byte for byte the one downloaded."""
    from support import DEBIAN_PYTHON, run_tool

    make_image(registry, "parts/small", tmp_path, tag="1.0")
    chart = write_chart(tmp_path / "src" / "big", {"apiVersion": "v2", "name": "big", "version": "1.0.0"},
                        {"image": f"{registry.host}/parts/small:1.0"})
    (chart / "files").mkdir()
    (chart / "files" / "blob.bin").write_bytes(hashlib.shake_256(b"big chart").digest(400_000))  # incompressible
    bundle = tmp_path / "bundle"
    result = wsm("download", "--chart", str(package(chart, tmp_path / "pkg")), "--bundle", str(bundle),
                 "--plain-http", "--max-file-size", "300KB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (locked,) = lock_of(bundle)["charts"]
    assert len(locked["parts"]) == 2 and not (bundle / locked["file"]).exists()
    pyz = bundle / "tools" / "wsm.pyz"
    assert run_tool(DEBIAN_PYTHON, pyz, "verify", str(bundle), cwd=tmp_path).returncode == 0
    pushed = run_tool(DEBIAN_PYTHON, pyz, "push", "--bundle", str(bundle), "--registry", f"{registry.host}/big",
                      "--helm-repo", f"{helm_repo.url}/big", "--plain-http", "-o", "json", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    (moved,) = json.loads(pushed.stdout)["charts"]
    served = httpx.get(moved["target"])
    assert served.status_code == 200 and "sha256:" + hashlib.sha256(served.content).hexdigest() == locked["digest"]


def test_a_file_fat32_cannot_hold_gets_a_note_only_from_4_gib():
    from wsm._parts import size_note

    assert size_note("images/a.tar", FAT32_MAX) is None
    note = size_note("images/a.tar", FAT32_MAX + 1)
    assert note is not None and "images/a.tar" in note and "FAT32" in note


def test_verify_notes_a_signature_it_was_not_asked_to_check(release, tmp_path):
    bundle = copied(release, tmp_path)
    (bundle / "SHA256SUMS.sig").write_text("MEQ=")
    result = wsm("verify", str(bundle))
    assert result.returncode == 0 and "give --key PUB.pem" in result.stdout, result.stderr


def test_an_upload_reads_a_blob_across_parts_also_from_the_middle(tmp_path):
    """push re-sends from an offset after a cut connection: a range across the part boundary reads right, and a
    blob damaged in its second part is refused at its last byte."""
    from wsm._parts import segments
    from wsm._remote import Descriptor
    from wsm._remote._blobs import UploadSource

    data = hashlib.shake_256(b"blob").digest(10_000)
    (tmp_path / "t.tar.part-000").write_bytes(b"x" * 100 + data[:6000])
    (tmp_path / "t.tar.part-001").write_bytes(data[6000:] + b"y" * 50)
    parts = [FilePart("t.tar.part-000", 6100, ""), FilePart("t.tar.part-001", 4050, "")]
    chain = segments(tmp_path, parts, 100, len(data))
    assert [segment.size for segment in chain.segments] == [6000, 4000]
    descriptor = Descriptor("application/octet-stream", "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    source = UploadSource(chain, descriptor, None)
    assert b"".join(source.read()) == data
    assert b"".join(source.read(5000, 2000)) == data[5000:7000]
    (tmp_path / "t.tar.part-001").write_bytes(b"Z" + data[6001:] + b"y" * 50)
    with pytest.raises(WsmError, match="hashes to"):
        b"".join(UploadSource(chain, descriptor, None).read())
