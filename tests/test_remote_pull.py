"""Pulling from a real Distribution registry: manifests of every type, blobs (with drops, resume, corruption),
retries, tag paging, mirrors and unreachable registries. Images are pushed by skopeo (tests/images.py)."""

from __future__ import annotations

import hashlib

import pytest
from faults import FaultProxy
from images import make_image
from remote_support import client, isolated_credentials, ref, transport, unique  # noqa: F401
from servers import Registry, free_port

from wsm import DigestMismatch, NotFound, RegistryError
from wsm._remote import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Descriptor


@pytest.fixture(scope="module")
def big_image(registry, tmp_path_factory):
    """One platform, one ~200 KB layer that does not compress: big enough to cut a download midway."""
    repository = unique("pull/big")
    built = make_image(
        registry, repository, tmp_path_factory.mktemp("big"), platforms=("linux/amd64",),
        layer_sizes=(200_000,), incompressible=True,
    )
    with client() as c:
        manifest = c.get_manifest(ref(registry.host, repository))
    layer = max(manifest.layers(), key=lambda d: d.size)
    return repository, built, layer


def blob_bytes(built, digest: str) -> bytes:
    return (built.layout / digest.split(":")[1]).read_bytes()


@pytest.mark.parametrize(
    "oci, platforms, media_type",
    [
        (False, ("linux/amd64",), DOCKER_MANIFEST),
        (True, ("linux/amd64",), OCI_MANIFEST),
        (False, ("linux/amd64", "linux/arm64"), DOCKER_LIST),
        (True, ("linux/amd64", "linux/arm64"), OCI_INDEX),
    ],
)
def test_get_manifest_of_every_type(registry, tmp_path, oci, platforms, media_type):
    repository = unique("pull/types")
    built = make_image(registry, repository, tmp_path, platforms=platforms, oci=oci)
    with client() as c:
        manifest = c.get_manifest(ref(registry.host, repository))
        assert manifest.media_type == media_type == built.media_type
        assert manifest.digest == built.digest
        assert manifest.raw == blob_bytes(built, built.digest)
        assert c.head_manifest(ref(registry.host, repository)) == manifest.descriptor()
        if manifest.is_index:
            assert {str(child.platform): child.digest for child in manifest.children()} == built.manifests
            child_ref = ref(registry.host, repository).with_digest(manifest.children()[1].digest)
            image = c.get_manifest(child_ref)
            assert image.digest == manifest.children()[1].digest
        else:
            image = manifest
        for descriptor in [image.config(), *image.layers()]:
            assert c.read_blob(ref(registry.host, repository), descriptor) == blob_bytes(built, descriptor.digest)


def test_get_manifest_by_digest_verifies_it(registry, tmp_path):
    repository = unique("pull/bydigest")
    built = make_image(registry, repository, tmp_path, platforms=("linux/amd64",))
    with client() as c:
        pinned = ref(registry.host, repository, "no-such-tag").with_digest(built.digest)
        assert c.get_manifest(pinned).digest == built.digest  # the digest wins over the tag
        assert c.head_manifest(pinned).digest == built.digest


def test_missing_manifest_and_repository(registry, tmp_path):
    repository = unique("pull/missing")
    make_image(registry, repository, tmp_path, platforms=("linux/amd64",))
    with client() as c:
        assert c.head_manifest(ref(registry.host, repository, "2.0")) is None
        with pytest.raises(NotFound) as error:
            c.get_manifest(ref(registry.host, repository, "2.0"))
        message = str(error.value)
        assert f"{registry.host}/{repository}:2.0" in message and "not found" in message and "\n" not in message
        assert error.value.status == 404
        with pytest.raises(NotFound):
            c.get_manifest(ref(registry.host, unique("pull/nothing-here")))
        with pytest.raises(NotFound):
            c.list_tags(ref(registry.host, unique("pull/nothing-here")))


def test_fetch_blob_plain(registry, big_image, tmp_path):
    repository, built, layer = big_image
    dest = tmp_path / "layer.partial"
    seen = []
    with client() as c:
        c.fetch_blob(ref(registry.host, repository), layer, dest, progress=seen.append)
    assert dest.read_bytes() == blob_bytes(built, layer.digest)
    assert sum(seen) == layer.size and all(n > 0 for n in seen)


def test_fetch_blob_survives_dropped_connections(registry, big_image, tmp_path):
    repository, built, layer = big_image
    dest = tmp_path / "layer.partial"
    seen = []
    with FaultProxy(registry.url, drop_blob_after=50_000, drops=3) as proxy, client() as c:
        c.fetch_blob(ref(proxy.host, repository), layer, dest, progress=seen.append)
        gets = proxy.requests_for("GET", layer.digest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == layer.digest.split(":")[1]
    assert sum(seen) == layer.size
    # Each retry resumed where the last one was cut: nothing was downloaded twice.
    assert [g.range for g in gets] == [None, "bytes=50000-", "bytes=100000-", "bytes=150000-"]
    assert proxy.blob_bytes_served == layer.size


def test_fetch_blob_keeps_going_while_data_moves(registry, big_image, tmp_path):
    """More cuts than `retries` allows in a row: each cut moved data along, so the download still finishes."""
    repository, built, layer = big_image
    dest = tmp_path / "layer.partial"
    with FaultProxy(registry.url, drop_blob_after=20_000, drops=8) as proxy:
        with client(transport=transport(retries=2)) as c:
            c.fetch_blob(ref(proxy.host, repository), layer, dest)
        assert len(proxy.requests_for("GET", layer.digest)) == 9
    assert dest.read_bytes() == blob_bytes(built, layer.digest)


def test_fetch_blob_that_gives_up_keeps_the_partial_file(registry, big_image, tmp_path):
    repository, built, layer = big_image
    dest = tmp_path / "layer.partial"
    dest.write_bytes(blob_bytes(built, layer.digest)[:50_000])
    with FaultProxy(registry.url, fail_every=1, fail_status=503) as proxy, client(transport=transport(retries=1)) as c:
        with pytest.raises(RegistryError, match="503"):
            c.fetch_blob(ref(proxy.host, repository), layer, dest)
    assert dest.read_bytes() == blob_bytes(built, layer.digest)[:50_000]  # the next run resumes from here


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "server-ignores-range"])
def test_fetch_blob_resumes_a_prefix_with_a_range_request(registry, big_image, tmp_path, ignore_range):
    """A prefix left by an earlier run is resumed with `Range`; a server that ignores it sends all again."""
    repository, built, layer = big_image
    content = blob_bytes(built, layer.digest)
    dest = tmp_path / "layer.partial"
    dest.write_bytes(content[:120_000])
    seen = []
    with FaultProxy(registry.url, ignore_range=ignore_range) as proxy, client() as c:
        c.fetch_blob(ref(proxy.host, repository), layer, dest, progress=seen.append)
    assert dest.read_bytes() == content
    assert [r.range for r in proxy.requests_for("GET", layer.digest)] == ["bytes=120000-"]
    assert proxy.blob_bytes_served == layer.size - (0 if ignore_range else 120_000)
    assert sum(seen) == layer.size  # with a restart, the prefix was taken back: no byte counted twice


def test_fetch_blob_with_a_complete_file_asks_nothing(registry, big_image, tmp_path):
    repository, built, layer = big_image
    dest = tmp_path / "layer.partial"
    dest.write_bytes(blob_bytes(built, layer.digest))
    with FaultProxy(registry.url) as proxy, client() as c:
        c.fetch_blob(ref(proxy.host, repository), layer, dest)
        assert proxy.records == []


def test_fetch_blob_truncates_an_overlong_file(registry, big_image, tmp_path):
    repository, built, layer = big_image
    dest = tmp_path / "layer.partial"
    dest.write_bytes(b"x" * (layer.size + 10))
    with client() as c:
        c.fetch_blob(ref(registry.host, repository), layer, dest)
    assert dest.read_bytes() == blob_bytes(built, layer.digest)


def test_fetch_blob_with_a_corrupted_prefix_deletes_the_file(registry, big_image, tmp_path):
    repository, built, layer = big_image
    prefix = bytearray(blob_bytes(built, layer.digest)[:80_000])
    prefix[1000] ^= 0xFF
    dest = tmp_path / "layer.partial"
    dest.write_bytes(bytes(prefix))
    with client() as c, pytest.raises(DigestMismatch) as error:
        c.fetch_blob(ref(registry.host, repository), layer, dest)
    assert not dest.exists()
    assert layer.digest in str(error.value) and "run again" in str(error.value)


def test_fetch_blob_refuses_content_altered_on_the_way(registry, big_image, tmp_path):
    repository, _, layer = big_image
    dest = tmp_path / "layer.partial"
    with FaultProxy(registry.url, corrupt_blobs=True) as proxy, client() as c:
        with pytest.raises(DigestMismatch):
            c.fetch_blob(ref(proxy.host, repository), layer, dest)
        with pytest.raises(DigestMismatch):
            c.read_blob(ref(proxy.host, repository), layer)
    assert not dest.exists()


def test_fetch_blob_not_found(registry, big_image, tmp_path):
    repository, _, layer = big_image
    missing = Descriptor(layer.media_type, "sha256:" + "0" * 64, 10)
    with client() as c, pytest.raises(NotFound) as error:
        c.fetch_blob(ref(registry.host, repository), missing, tmp_path / "x.partial")
    assert missing.digest in str(error.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_on_server_errors_and_rate_limits(registry, big_image, tmp_path, status):
    repository, built, layer = big_image
    with FaultProxy(registry.url, fail_every=2, fail_status=status) as proxy, client() as c:
        target = ref(proxy.host, repository)
        manifest = c.get_manifest(target)
        assert manifest.digest == built.digest
        assert c.head_manifest(target).digest == built.digest
        assert c.read_blob(target, manifest.config()) == blob_bytes(built, manifest.config().digest)
        c.fetch_blob(target, layer, tmp_path / "layer.partial")
        assert any(r.status == status for r in proxy.records)
    assert (tmp_path / "layer.partial").read_bytes() == blob_bytes(built, layer.digest)


def test_gives_up_after_the_configured_retries(registry, big_image):
    repository, _, _ = big_image
    with FaultProxy(registry.url, fail_every=1, fail_status=503) as proxy:
        with client(transport=transport(retries=2)) as c, pytest.raises(RegistryError) as error:
            c.get_manifest(ref(proxy.host, repository))
        assert len(proxy.records) == 3
    assert "503" in str(error.value) and "3 times" in str(error.value) and error.value.status == 503


def test_list_tags_follows_link_pages(registry, tmp_path):
    repository = unique("pull/tags")
    built = make_image(registry, repository, tmp_path, platforms=("linux/amd64",))
    raw = blob_bytes(built, built.digest)
    tags = [f"v{i}" for i in range(7)]
    with client() as c:
        for tag in tags:
            c.put_manifest(ref(registry.host, repository, tag), raw, built.media_type)
        with FaultProxy(registry.url, tag_page_size=3) as proxy:
            assert sorted(c.list_tags(ref(proxy.host, repository))) == sorted(["1.0", *tags])
            assert len(proxy.requests_for("GET", "/tags/list")) == 3


def test_mirror_serves_pulls_under_the_original_name(registry, tmp_path):
    """{"docker.io": "<mirror>/dockerhub"}: redis:7 is fetched as <mirror>/dockerhub/library/redis:7."""
    tag = unique("t")
    built = make_image(registry, "dockerhub/library/redis", tmp_path, tag=tag, platforms=("linux/amd64",))
    from wsm import Reference

    redis = Reference.parse(f"redis:{tag}")
    with client(mirrors={"docker.io": f"http://{registry.host}/dockerhub/"}) as c:
        manifest = c.get_manifest(redis)
        assert manifest.digest == built.digest
        assert c.head_manifest(redis).digest == built.digest
        layer = manifest.layers()[0]
        c.fetch_blob(redis, layer, tmp_path / "layer.partial")
        assert (tmp_path / "layer.partial").read_bytes() == blob_bytes(built, layer.digest)
        with pytest.raises(NotFound) as error:
            c.get_manifest(redis.with_tag("absent"))
        assert "mirror of docker.io" in str(error.value)


def test_mirror_is_for_pulls_only(registry, tmp_path):
    """Pulls of <other>/acme/app go to the mirror; a push to <other> goes to <other> itself."""
    repository = unique("mirror/app")
    built = make_image(registry, f"upstream/{repository}", tmp_path, platforms=("linux/amd64",))
    with Registry(tmp_path / "other") as other:
        original = ref(other.host, repository)
        with client(mirrors={other.host: f"{registry.host}/upstream"}) as c:
            manifest = c.get_manifest(original)
            assert manifest.digest == built.digest
            assert not c.has_blob(original, manifest.config().digest)  # asked of <other>, not of the mirror
            for descriptor in [manifest.config(), *manifest.layers()]:
                c.push_blob(original, descriptor, c.read_blob(original, descriptor))
            assert c.put_manifest(original, manifest.raw, manifest.media_type) == built.digest
        with client() as direct:
            assert direct.get_manifest(original).digest == built.digest


def test_unreachable_registry_names_the_host():
    host = f"127.0.0.1:{free_port()}"
    with client(transport=transport(retries=1)) as c, pytest.raises(RegistryError) as error:
        c.get_manifest(ref(host, "acme/app"))
    assert host in str(error.value) and "refused" in str(error.value).lower()
