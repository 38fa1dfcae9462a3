"""`load` into a real Docker engine (dockerd, vfs), and `podman load` of the same tarballs without wsm."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from images import make_image
from wsm._download import download
from wsm._exceptions import BundleError, CorruptBundle, WsmError
from wsm._bundle import Bundle
from wsm._load import load
from wsm._model import ResolvedImage
from wsm._reference import Reference


@pytest.fixture(scope="module")
def bundle(registry, tmp_path_factory, plain_client) -> tuple[Path, dict]:
    """One bundle with a single-platform Docker image and a two-platform OCI index."""
    tmp = tmp_path_factory.mktemp("load")
    built = {
        "load/single": make_image(registry, "load/single", tmp),
        "load/multi": make_image(registry, "load/multi", tmp, platforms=("linux/amd64", "linux/arm64"), oci=True),
    }
    images = [ResolvedImage(Reference.parse(f"{registry.host}/{name}:1.0"), "core") for name in built]
    report = download(images, [], tmp / "bundle", client=plain_client, platforms=None)
    assert report.ok
    return tmp / "bundle", built


def docker(engine, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", engine.url, *args], capture_output=True, text=True)


@pytest.mark.docker
def test_load_puts_every_image_into_docker_under_its_name(docker_engine, bundle, registry):
    root, built = bundle
    loaded = load(Bundle.open(root), docker_host=docker_engine.url)
    assert sorted(loaded) == sorted(f"{registry.host}/{name}:1.0" for name in built)
    for name in built:
        inspected = docker(docker_engine, "image", "inspect", f"{registry.host}/{name}:1.0")
        assert inspected.returncode == 0, inspected.stderr
        (info,) = json.loads(inspected.stdout)
        assert info["Architecture"] == "amd64" and f"{registry.host}/{name}:1.0" in info["RepoTags"]


@pytest.mark.docker
def test_load_can_pick_images_by_name(docker_engine, bundle, registry):
    root, _ = bundle
    assert load(Bundle.open(root), docker_host=docker_engine.url, images=[f"{registry.host}/load/single:1.0"]) == [
        f"{registry.host}/load/single:1.0"
    ]
    with pytest.raises(BundleError, match="'nope:1' is not in the bundle"):
        load(Bundle.open(root), docker_host=docker_engine.url, images=["nope:1"])


@pytest.mark.docker
def test_a_damaged_tarball_is_refused_before_docker_sees_it(docker_engine, bundle, tmp_path):
    """Docker skips layers it already has, so it would load this one without a word."""
    root, _ = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(root, copy)
    tar = next((copy / "images").glob("*single*"))
    data = bytearray(tar.read_bytes())
    data[-3000] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(CorruptBundle) as caught:
        load(Bundle.open(copy), docker_host=docker_engine.url, images=[tar.name])
    expected = f"images/{tar.name} does not match the bundle's lock file: it is damaged; run wsm verify"
    assert str(caught.value) == expected


@pytest.mark.docker
def test_docker_refusing_a_tarball_is_one_line_naming_it(docker_engine, registry, plain_client, tmp_path):
    built = make_image(registry, "load/fresh", tmp_path, layer_sizes=(20_000,), incompressible=True)
    wanted = [ResolvedImage(Reference.parse(f"{registry.host}/load/fresh:1.0"), "core")]
    download(wanted, [], tmp_path / "bundle", client=plain_client, platforms=None)
    tar = next((tmp_path / "bundle" / "images").glob("*fresh*"))
    layer = max(built.blobs, key=built.blobs.get)
    with tarfile.open(tar) as archive:
        offset = archive.getmember("blobs/sha256/" + layer.split(":")[1]).offset_data
    data = bytearray(tar.read_bytes())
    data[offset + 10_000] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(WsmError) as caught:
        load(Bundle.open(tmp_path / "bundle"), docker_host=docker_engine.url, check=False)
    assert str(caught.value).startswith(f"docker refused images/{tar.name}: ")
    assert "\n" not in str(caught.value)


def test_no_engine_answering_is_one_clear_line(bundle, tmp_path):
    root, _ = bundle
    host = f"unix://{tmp_path}/no-docker.sock"
    with pytest.raises(WsmError) as caught:
        load(Bundle.open(root), docker_host=host)
    assert str(caught.value) == f"no Docker engine answers at {host}; start dockerd or set DOCKER_HOST"


def test_a_directory_that_is_not_a_bundle_is_refused(tmp_path):
    with pytest.raises(BundleError, match="wsm.lock.json is missing: not a wsm bundle"):
        Bundle.open(tmp_path)


def test_podman_loads_a_downloaded_tarball_keeping_name_and_digest(bundle, registry):
    root, built = bundle
    run_root = tempfile.mkdtemp(prefix="wsm-podrun-")  # podman wants a run root under 50 characters
    storage = tempfile.mkdtemp(prefix="wsm-podroot-")
    podman = ["podman", "--storage-driver=vfs", "--root", storage, "--runroot", run_root]
    try:
        for name, expected in built.items():
            tar = next((root / "images").glob(f"*{name.replace('/', '_')}*"))
            loaded = subprocess.run([*podman, "load", "-i", str(tar)], capture_output=True, text=True)
            assert loaded.returncode == 0, loaded.stderr
            assert f"{registry.host}/{name}:1.0" in loaded.stdout
            listed = subprocess.run(
                [*podman, "images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"],
                check=True, capture_output=True, text=True,
            ).stdout.splitlines()
            assert f"{registry.host}/{name}:1.0 {expected.digest}" in listed
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
        subprocess.run([*podman, "system", "reset", "--force"], capture_output=True)
        shutil.rmtree(storage, ignore_errors=True)
