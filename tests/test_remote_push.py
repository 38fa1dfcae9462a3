"""Pushing into a real Distribution registry: blobs (monolithic, chunked, retried, skipped, mounted) and
manifests, checked afterwards with skopeo, a client we did not write."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from faults import FaultProxy
from images import make_image
from remote_support import client, isolated_credentials, ref, unique  # noqa: F401
from servers import Registry
from support import skopeo

from wsm import DigestMismatch, RegistryError
from wsm._remote import HELM_CHART_CONFIG, HELM_CHART_LAYER, OCI_MANIFEST, Descriptor, compute_digest


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A second registry to push into (the session `registry` is the source)."""
    with Registry(tmp_path_factory.mktemp("target")) as server:
        yield server


def skopeo_raw(host: str, name: str) -> bytes:
    return skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/{name}")


def blob_file(built, digest: str):
    return built.layout / digest.split(":")[1]


def test_copy_an_index_into_another_registry(registry, target, tmp_path):
    """Everything an image has, pushed by us, reads back byte for byte with skopeo."""
    source_repo, dest_repo = unique("push/src"), unique("push/dst")
    built = make_image(registry, source_repo, tmp_path, platforms=("linux/amd64", "linux/arm64"), oci=True)
    source, dest = ref(registry.host, source_repo), ref(target.host, dest_repo, "2.0")
    with client() as c:
        index = c.get_manifest(source)
        for child in index.children():
            manifest = c.get_manifest(source.with_digest(child.digest))
            for number, blob in enumerate([manifest.config(), *manifest.layers()]):
                # From a file for some, from bytes for others: both are supported sources.
                c.push_blob(dest, blob, blob_file(built, blob.digest) if number % 2 else c.read_blob(source, blob))
                assert c.has_blob(dest, blob.digest)
            assert c.put_manifest(dest.with_tag(None).with_digest(child.digest), manifest.raw, manifest.media_type) \
                == child.digest
        assert c.put_manifest(dest, index.raw, index.media_type) == built.digest
    raw = skopeo_raw(target.host, f"{dest_repo}:2.0")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == built.digest
    for digest in built.manifests.values():
        assert compute_digest(skopeo_raw(target.host, f"{dest_repo}@{digest}")) == digest


def test_push_blob_reports_progress_and_skips_what_is_there(registry, target, tmp_path):
    built = make_image(registry, unique("push/skip"), tmp_path, platforms=("linux/amd64",),
                       layer_sizes=(150_000,), incompressible=True)
    digest, size = max(built.blobs.items(), key=lambda item: item[1])
    blob = Descriptor("application/octet-stream", digest, size)
    repository = unique("push/skip")
    with FaultProxy(target.url) as proxy, client() as c:
        seen = []
        c.push_blob(ref(proxy.host, repository), blob, blob_file(built, digest), progress=seen.append)
        assert sum(seen) == size
        assert [r.method for r in proxy.records] == ["HEAD", "POST", "PUT"]  # monolithic: one PUT
        proxy.reset_counts()
        seen.clear()
        c.push_blob(ref(proxy.host, repository), blob, blob_file(built, digest), progress=seen.append)
        assert [r.method for r in proxy.records] == ["HEAD"]
        assert sum(seen) == size


def test_chunked_upload_when_monolithic_is_refused(registry, target, tmp_path):
    built = make_image(registry, unique("push/chunked"), tmp_path, platforms=("linux/amd64",),
                       layer_sizes=(150_000,), incompressible=True)
    digest, size = max(built.blobs.items(), key=lambda item: item[1])
    blob = Descriptor("application/octet-stream", digest, size)
    destination = ref(target.host, unique("push/chunked"))
    with FaultProxy(target.url, refuse_monolithic=True) as proxy:
        seen = []
        with client(upload_chunk_size=64 * 1024) as c:
            c.push_blob(ref(proxy.host, destination.repository), blob, blob_file(built, digest), progress=seen.append)
        assert len(proxy.requests_for("PATCH")) == 3  # 64 + 64 + the rest
        assert sum(seen) == size
    with client() as c:
        assert c.read_blob(destination, blob) == blob_file(built, digest).read_bytes()


def test_upload_pieces_shrink_behind_a_proxy_body_limit(target):
    """nginx's client_max_body_size in front of a registry: the PUT and the first pieces get 413, smaller pass."""
    data = os.urandom(600_000)
    blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
    repository = unique("push/limited")
    with FaultProxy(target.url, max_body=300_000) as proxy, client() as c:
        seen = []
        c.push_blob(ref(proxy.host, repository), blob, data, progress=seen.append)
        assert sum(seen) == len(data)
        passed = [r for r in proxy.requests_for("PATCH") if r.status == 202]
        assert len(passed) == 3  # 256 KiB, 256 KiB, the rest
        assert c.read_blob(ref(target.host, repository), blob) == data
        with FaultProxy(target.url, max_body=100_000) as tighter, pytest.raises(RegistryError) as error:
            c.push_blob(ref(tighter.host, repository + "-b"), blob, data)
        assert "client_max_body_size" in str(error.value)


def test_upload_retries_restart_the_session(registry, target, tmp_path):
    built = make_image(registry, unique("push/retry"), tmp_path, platforms=("linux/amd64",))
    repository = unique("push/retry")
    with FaultProxy(target.url, fail_every=3, fail_status=503) as proxy, client() as c:
        for digest, size in built.blobs.items():
            seen = []
            c.push_blob(ref(proxy.host, repository), Descriptor("x", digest, size), blob_file(built, digest),
                        progress=seen.append)
            assert sum(seen) == size
        assert any(r.status == 503 for r in proxy.records)
    with client() as c:
        for digest in built.blobs:
            assert c.has_blob(ref(target.host, repository), digest)


def test_push_blob_refuses_a_source_that_does_not_match(target, tmp_path):
    data = b"the real content"
    blob = Descriptor("application/octet-stream", compute_digest(data), len(data))
    destination = ref(target.host, unique("push/wrong"))
    with client() as c:
        with pytest.raises(DigestMismatch, match="bytes"):
            c.push_blob(destination, blob, b"short")
        with pytest.raises(DigestMismatch) as error:
            c.push_blob(destination, blob, b"the fake content")
        assert "damaged" in str(error.value)
        assert not c.has_blob(destination, blob.digest)


def test_mount_blob_between_repositories(registry, tmp_path):
    source_repo, dest_repo = unique("mount/src"), unique("mount/dst")
    built = make_image(registry, source_repo, tmp_path, platforms=("linux/amd64",))
    with client() as c:
        destination = ref(registry.host, dest_repo)
        for digest in built.blobs:
            if digest in built.manifests.values():
                continue
            assert c.mount_blob(destination, digest, source_repo)
            assert c.has_blob(destination, digest)
        assert not c.mount_blob(destination, "sha256:" + "1" * 64, source_repo)


def test_put_manifest_checks(registry, target, tmp_path):
    built = make_image(registry, unique("push/manifest"), tmp_path, platforms=("linux/amd64",))
    raw = blob_file(built, built.digest).read_bytes()
    destination = ref(target.host, unique("push/manifest"))
    with client() as c:
        with pytest.raises(RegistryError) as error:
            c.put_manifest(destination, raw, built.media_type)  # its blobs are not there
        assert "MANIFEST_BLOB_UNKNOWN" in str(error.value)
        with pytest.raises(DigestMismatch):
            c.put_manifest(destination.with_digest("sha256:" + "2" * 64), raw, built.media_type)


def test_helm_chart_artifact_round_trip(target, tmp_path):
    """A chart stored as an OCI artifact, the way `helm push` stores it, pushed and read back."""
    chart = b"\x1f\x8b not really a tgz, but blobs are opaque"
    config = json.dumps({"name": "demo", "version": "0.1.0", "apiVersion": "v2"}).encode()
    layer = Descriptor(HELM_CHART_LAYER, compute_digest(chart), len(chart))
    config_blob = Descriptor(HELM_CHART_CONFIG, compute_digest(config), len(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_blob.to_dict(), "layers": [layer.to_dict()],
    }).encode()
    destination = ref(target.host, unique("charts/demo"), "0.1.0")
    with client() as c:
        c.push_blob(destination, config_blob, config)
        c.push_blob(destination, layer, chart)
        digest = c.put_manifest(destination, manifest, OCI_MANIFEST)
        served = c.get_manifest(destination)
        assert served.digest == digest and served.config() == config_blob
        [chart_layer] = [d for d in served.layers() if d.media_type == HELM_CHART_LAYER]
        assert c.read_blob(destination, chart_layer) == chart
        assert "0.1.0" in c.list_tags(destination)


@pytest.mark.helm
def test_charts_pushed_by_helm_and_pulled_by_helm(registry, target, helm_home, tmp_path):
    """Interop with the real helm: we read what `helm push` stored, and `helm pull` reads what we pushed."""
    from servers import run_helm

    run_helm(helm_home, "create", str(tmp_path / "demo"))
    run_helm(helm_home, "package", str(tmp_path / "demo"), "--destination", str(tmp_path))
    archive = tmp_path / "demo-0.1.0.tgz"
    namespace = unique("helmcharts")
    run_helm(helm_home, "push", str(archive), f"oci://{registry.host}/{namespace}")
    source = ref(registry.host, f"{namespace}/demo", "0.1.0")
    destination = ref(target.host, f"{namespace}/demo", "0.1.0")
    with client() as c:
        manifest = c.get_manifest(source)
        assert manifest.config().media_type == HELM_CHART_CONFIG
        [layer] = [d for d in manifest.layers() if d.media_type == HELM_CHART_LAYER]
        assert c.read_blob(source, layer) == archive.read_bytes()
        for blob in [manifest.config(), *manifest.layers()]:
            c.push_blob(destination, blob, c.read_blob(source, blob))
        c.put_manifest(destination, manifest.raw, manifest.media_type)
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    run_helm(helm_home, "pull", f"oci://{target.host}/{namespace}/demo", "--version", "0.1.0", "-d", str(pulled))
    assert (pulled / "demo-0.1.0.tgz").read_bytes() == archive.read_bytes()
