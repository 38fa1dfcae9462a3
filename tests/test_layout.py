"""The image tarball format, read back by tools we did not write (skopeo, podman), and scanned by wsm."""

from __future__ import annotations

import atexit
import errno
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from images import BuiltImage, build_image
from support import skopeo
from wsm import _layout
from wsm._exceptions import BundleError
from wsm._layout import TarBlob, scan_image_tar, write_image_tar
from wsm._reference import Reference


def tar_from_layout(built: BuiltImage, dest: Path, name: str) -> Path:
    """A tarball of everything `build_image` wrote, the way the downloader assembles one."""
    blobs = [TarBlob(digest, size, built.layout / digest.split(":")[1]) for digest, size in built.blobs.items()]
    amd64 = json.loads((built.layout / built.manifests["linux/amd64"].split(":")[1]).read_bytes())
    top = {"mediaType": built.media_type, "digest": built.digest, "size": built.blobs[built.digest]}
    write_image_tar(dest, reference=Reference.parse(name), top=top, image_manifest=amd64, blobs=blobs)
    return dest


KINDS = {
    "docker": {},
    "oci": {"oci": True},
    "docker-list": {"platforms": ("linux/amd64", "linux/arm64")},
    "oci-index": {"platforms": ("linux/amd64", "linux/arm64"), "oci": True},
}


@pytest.mark.parametrize("kind", KINDS)
def test_skopeo_reads_the_tarball_keeping_every_digest(tmp_path, kind):
    built = build_image(tmp_path / "layout", **KINDS[kind])
    tar = tar_from_layout(built, tmp_path / "image.tar", f"127.0.0.1:5000/acme/{kind}:1.0")

    raw = skopeo("inspect", "--raw", f"oci-archive:{tar}")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == built.digest
    skopeo("copy", "--quiet", "--all", f"oci-archive:{tar}", f"dir:{tmp_path / 'copy'}")
    copied = tmp_path / "copy"
    assert "sha256:" + hashlib.sha256((copied / "manifest.json").read_bytes()).hexdigest() == built.digest
    manifests = set(built.manifests.values()) | {built.digest}
    for digest in built.blobs:  # every blob, byte for byte
        hex_part = digest.split(":")[1]
        if digest == built.digest:
            continue  # the top manifest is copied.manifest.json, checked above
        name = f"{hex_part}.manifest.json" if digest in manifests else hex_part
        assert (copied / name).read_bytes() == (built.layout / hex_part).read_bytes()
    # docker-archive: reads the same file (it recompresses layers, so only readability is checked).
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{tar}"))
    assert config["architecture"] == "amd64"


def test_the_tarball_is_a_plain_tar_with_the_documented_members(tmp_path):
    built = build_image(tmp_path / "layout", platforms=("linux/amd64", "linux/arm64"))
    tar = tar_from_layout(built, tmp_path / "image.tar", "registry.example.com/acme/app:2.0")
    with tarfile.open(tar) as archive:
        names = archive.getnames()
        index = json.load(archive.extractfile("index.json"))
        docker = json.load(archive.extractfile("manifest.json"))
        assert json.load(archive.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    assert set(names) == {"oci-layout", "index.json", "manifest.json", "blobs", "blobs/sha256"} | {
        "blobs/sha256/" + digest.split(":")[1] for digest in built.blobs
    }
    (entry,) = index["manifests"]
    assert entry["digest"] == built.digest and entry["mediaType"] == built.media_type
    assert entry["annotations"] == {
        "io.containerd.image.name": "registry.example.com/acme/app:2.0",
        "org.opencontainers.image.ref.name": "2.0",
    }
    amd64 = json.loads((built.layout / built.manifests["linux/amd64"].split(":")[1]).read_bytes())
    assert docker == [
        {
            "Config": "blobs/sha256/" + amd64["config"]["digest"].split(":")[1],
            "RepoTags": ["registry.example.com/acme/app:2.0"],
            "Layers": ["blobs/sha256/" + layer["digest"].split(":")[1] for layer in amd64["layers"]],
        }
    ]


def test_docker_hub_names_are_familiar_in_manifest_json_and_qualified_in_index_json(tmp_path):
    built = build_image(tmp_path / "layout")
    tar = tar_from_layout(built, tmp_path / "image.tar", "redis:7")
    scan = scan_image_tar(tar)
    assert scan.json("manifest.json")[0]["RepoTags"] == ["redis:7"]
    annotations = scan.json("index.json")["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "docker.io/library/redis:7"


def test_a_digest_only_reference_is_named_by_digest_and_loads_untagged(tmp_path):
    built = build_image(tmp_path / "layout")
    digest = "sha256:" + "ab" * 32
    tar = tar_from_layout(built, tmp_path / "image.tar", f"quay.io/acme/app@{digest}")
    scan = scan_image_tar(tar)
    assert scan.json("manifest.json")[0]["RepoTags"] == []
    annotations = scan.json("index.json")["manifests"][0]["annotations"]
    assert annotations == {"io.containerd.image.name": f"quay.io/acme/app@{digest}"}


def podman_command(tmp_path: Path) -> list[str]:
    """podman with private vfs storage; its run root must be under 50 characters, so not in tmp_path."""
    run_root = tempfile.mkdtemp(prefix="wsm-podrun-")
    atexit.register(shutil.rmtree, run_root, True)
    return ["podman", "--storage-driver=vfs", "--root", str(tmp_path / "podman"), "--runroot", run_root]


def test_podman_loads_the_tarball_with_its_name_and_digest(tmp_path):
    built = build_image(tmp_path / "layout", platforms=("linux/amd64", "linux/arm64"), oci=True)
    tar = tar_from_layout(built, tmp_path / "image.tar", "127.0.0.1:5000/acme/podman:3.1")
    podman = podman_command(tmp_path)
    loaded = subprocess.run([*podman, "load", "-i", str(tar)], check=True, capture_output=True, text=True)
    assert "127.0.0.1:5000/acme/podman:3.1" in loaded.stdout
    listed = subprocess.run(
        [*podman, "images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"],
        check=True, capture_output=True, text=True,
    )
    assert f"127.0.0.1:5000/acme/podman:3.1 {built.digest}" in listed.stdout.splitlines()


def test_scan_hashes_the_file_and_every_blob_in_one_pass(tmp_path):
    built = build_image(tmp_path / "layout", platforms=("linux/amd64", "linux/arm64"), layer_sizes=(300_000, 5000))
    tar = tar_from_layout(built, tmp_path / "image.tar", "acme/app:1")
    seen = []
    scan = scan_image_tar(tar, seen.append)
    assert scan.sha256 == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert scan.size == tar.stat().st_size == sum(seen)
    assert {digest: size for digest, (size, _) in scan.blobs.items()} == built.blobs
    assert all(actual == digest for digest, (_, actual) in scan.blobs.items())


def test_scan_finds_the_blob_a_flipped_byte_is_in(tmp_path):
    built = build_image(tmp_path / "layout", layer_sizes=(200_000,))
    tar = tar_from_layout(built, tmp_path / "image.tar", "acme/app:1")
    layer = next(d for d, s in built.blobs.items() if s == max(built.blobs.values()))
    with tarfile.open(tar) as archive:
        offset = archive.getmember("blobs/sha256/" + layer.split(":")[1]).offset_data + 1000
    with open(tar, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    scan = scan_image_tar(tar)
    broken = [digest for digest, (_, actual) in scan.blobs.items() if actual != digest]
    assert broken == [layer]


def test_a_file_that_is_not_a_tar_is_refused_in_one_line(tmp_path):
    bogus = tmp_path / "image.tar"
    bogus.write_bytes(b"not a tar" * 100)
    with pytest.raises(BundleError, match=r"image.tar: not a readable tar") as caught:
        scan_image_tar(bogus)
    assert "\n" not in str(caught.value)


def test_nothing_is_left_under_the_final_name_when_writing_fails(tmp_path):
    built = build_image(tmp_path / "layout")
    blobs = [TarBlob(digest, size + 1, built.layout / digest.split(":")[1]) for digest, size in built.blobs.items()]
    dest = tmp_path / "image.tar"
    with pytest.raises(BundleError, match="bytes on disk"):
        write_image_tar(
            dest,
            reference=Reference.parse("acme/app:1"),
            top={"mediaType": built.media_type, "digest": built.digest, "size": 1},
            image_manifest=json.loads((built.layout / built.digest.split(":")[1]).read_bytes()),
            blobs=blobs,
        )
    assert not dest.exists() and not (tmp_path / "image.tar.partial").exists()


@pytest.mark.parametrize("method", ["copy_file_range", "sendfile", "read_write"])
def test_every_copy_method_writes_the_same_bytes(tmp_path, method, monkeypatch):
    """copy_file_range is refused across some filesystems and kernels; the fallbacks must be exact."""
    source = tmp_path / "source"
    source.write_bytes(os.urandom(3 * _layout.CHUNK + 17))
    size = source.stat().st_size

    def refuse(*args):
        raise OSError(errno.EXDEV, "refused")

    steps = list(_layout.COPY_STEPS)
    if method != "copy_file_range":
        steps[0] = refuse
    if method == "read_write":
        steps[1] = refuse
    monkeypatch.setattr(_layout, "COPY_STEPS", steps)

    with open(source, "rb") as src, open(tmp_path / "dest", "wb") as dest:
        dest.write(b"head")
        dest.flush()
        os.lseek(dest.fileno(), 4, os.SEEK_SET)
        _layout._copy_fd(src.fileno(), dest.fileno(), size)
        assert os.lseek(dest.fileno(), 0, os.SEEK_CUR) == 4 + size
    assert (tmp_path / "dest").read_bytes() == b"head" + source.read_bytes()


def test_blob_members_are_sha256_only():
    assert _layout.blob_member("sha256:" + "0" * 64) == "blobs/sha256/" + "0" * 64
    with pytest.raises(BundleError, match="only sha256"):
        _layout.blob_member("sha512:" + "0" * 128)


def streamed_tar(built: BuiltImage, dest: Path, name: str, partial: Path | None = None) -> list[int]:
    """The tarball of `tar_from_layout`, every blob streamed in (as a download does): with `partial`,
    continued from what is there. Returns how many bytes of each blob had to be written."""
    amd64 = json.loads((built.layout / built.manifests["linux/amd64"].split(":")[1]).read_bytes())
    top = {"mediaType": built.media_type, "digest": built.digest, "size": built.blobs[built.digest]}
    written: list[int] = []

    def fill_from(data: bytes):
        def fill(member: _layout.TarMember) -> None:
            assert b"".join(member.read_stored()) == data[: member.stored()]
            rest = data[member.stored():]
            for start in range(0, len(rest), 64 * 1024):
                member.write(rest[start : start + 64 * 1024])
            member.close()
            written.append(len(rest))
        return fill

    with _layout.ImageTarWriter(dest, reference=Reference.parse(name), top=top, image_manifest=amd64,
                                partial=partial, resume=partial is not None) as writer:
        for digest, size in built.blobs.items():
            writer.add_streamed(digest, size, fill_from((built.layout / digest.split(":")[1]).read_bytes()))
        writer.commit()
    return written


def test_a_partial_tarball_is_continued_to_the_same_bytes_writing_only_what_is_missing(tmp_path):
    built = build_image(tmp_path / "layout", layer_sizes=(3_000_000, 500_000), incompressible=True)
    whole = tmp_path / "whole.tar"
    streamed_tar(built, whole, "acme/app:1.0")
    assert whole.read_bytes() == tar_from_layout(built, tmp_path / "copied.tar", "acme/app:1.0").read_bytes()
    data = whole.read_bytes()
    biggest = max(built.blobs.values())
    for cut in (100, 700, 2_000_000, len(data) - 600, len(data) + 4096):  # in a header, in a layer, at the end, past it
        partial = tmp_path / "image.tar.partial"
        partial.write_bytes(data[:cut] + (b"\x07" * 4096 if cut > len(data) else b""))
        dest = tmp_path / f"resumed-{cut}.tar"
        written = streamed_tar(built, dest, "acme/app:1.0", partial=partial)
        assert dest.read_bytes() == data and not partial.exists()
        assert sum(written) <= max(0, len(data) - cut)  # what was there was kept
        if cut == 2_000_000:
            assert 0 < sum(written) < biggest  # the layer went on from where it was cut
    # Another image's partial file (another name in index.json): kept up to the first difference only.
    partial = tmp_path / "image.tar.partial"
    partial.write_bytes(data)
    streamed_tar(built, tmp_path / "other.tar", "acme/other:1.0", partial=partial)
    assert (tmp_path / "other.tar").read_bytes() == streamed_tar_bytes(built, tmp_path, "acme/other:1.0")


def streamed_tar_bytes(built: BuiltImage, tmp_path: Path, name: str) -> bytes:
    dest = tmp_path / "fresh.tar"
    streamed_tar(built, dest, name)
    return dest.read_bytes()
