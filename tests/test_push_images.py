"""Pushing a bundle's images into an internal registry (Distribution with TLS and htpasswd), checked with skopeo:
the internal digests equal the upstream ones; a second push sends nothing; an interrupted push completes;
a tag that exists with another digest fails by default and names both digests."""

from __future__ import annotations

import builtins
import contextlib
import io
import subprocess
import tarfile

import pytest
import trustme

from faults import FaultProxy
from images import make_image
from servers import Registry
from wsm._bundle import Bundle
from wsm._download import download
from wsm._exceptions import CorruptBundle, DigestMismatch
from wsm._http import TransportOptions
from wsm._layout import blob_member, tar_members
from wsm._model import ImageSource, Method, ResolvedImage
from wsm._push import OnExisting, PushOptions, image_totals, push_images, push_release
from wsm._reference import Reference
from wsm._remote import Platform, RegistryClient, RegistryOptions
from wsm._target import TargetRegistry, plan_targets
from wsm._verify import verify

USER, PASSWORD = "pusher", "s3cret"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def internal(tmp_path, ca):
    with Registry(tmp_path / "internal", tls=ca, htpasswd={USER: PASSWORD}) as server:
        yield server


@pytest.fixture
def internal_client(internal, ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    options = RegistryOptions(
        transport=TransportOptions(ca_file=str(ca_file), retries=3, backoff=0.01), username=USER, password=PASSWORD
    )
    with RegistryClient(options) as client:
        yield client


def bundle_of(registry, tmp_path, plain_client, names_and_kwargs, platforms=None):
    images = []
    built = {}
    for name, kwargs in names_and_kwargs:
        built[name] = make_image(registry, name, tmp_path, **kwargs)
        source = ImageSource("app", Method.VALUES, f"{name.split('/')[-1]}.image")
        images.append(ResolvedImage(Reference.parse(f"{registry.host}/{name}:1.0"), "g", (source,)))
    bundle_dir = tmp_path / "bundle"
    report = download(images, [], bundle_dir, client=plain_client, platforms=platforms)
    assert report.ok, report.failures
    bundle = Bundle.open(bundle_dir)
    return bundle, bundle.lock, built


def inspect_digest(reference: str, ca_dir) -> str:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"--cert-dir={ca_dir}", f"--creds={USER}:{PASSWORD}", f"docker://{reference}"],
        check=True, capture_output=True,
    ).stdout
    import hashlib

    return "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.fixture
def ca_dir(tmp_path, ca):
    directory = tmp_path / "certs"
    directory.mkdir()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    return directory


def targets_for(lock, internal, prefix=""):
    sources = [Reference.parse(image) for image in lock.images]
    return plan_targets(sources, TargetRegistry.parse(f"{internal.host}/{prefix}" if prefix else internal.host))


def test_push_keeps_upstream_digests_and_a_second_push_sends_nothing(
    registry, internal, internal_client, plain_client, tmp_path, ca_dir
):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [
        ("push/docker", {}),
        ("push/oci", {"oci": True}),
        ("push/index", {"platforms": ("linux/amd64", "linux/arm64"), "oci": True}),
    ])
    targets = targets_for(lock, internal, "harbor-project")
    first = push_images(bundle, targets, internal_client)
    assert [job.result for job in first] == ["sent"] * 3, [job.error for job in first]
    for source, target in targets.items():
        assert target.canonical == f"{internal.host}/harbor-project/{source.repository}:1.0"
        assert inspect_digest(target.canonical, ca_dir) == built[source.repository].digest
    assert sum(job.bytes_sent for job in first) == sum(sum(b.blobs.values()) for b in built.values()) - sum(
        size for b in built.values() for digest, size in b.blobs.items() if digest in b.manifests.values() or digest == b.digest
    )
    second = push_images(bundle, targets, internal_client)
    assert [job.result for job in second] == ["present"] * 3
    assert sum(job.bytes_sent for job in second) == 0


def test_platform_subset_bundle_pushes_what_was_kept(registry, internal, internal_client, plain_client, tmp_path, ca_dir):
    bundle, lock, built = bundle_of(
        registry, tmp_path, plain_client, [("push/multi", {"platforms": ("linux/amd64", "linux/arm64")})],
        platforms=[Platform.parse("linux/arm64")],
    )
    targets = targets_for(lock, internal)
    assert [job.result for job in push_images(bundle, targets, internal_client)] == ["sent"]
    target = next(iter(targets.values()))
    assert inspect_digest(target.canonical, ca_dir) == built["push/multi"].manifests["linux/arm64"]


def test_interrupted_push_completes_on_rerun_sending_only_the_rest(
    registry, internal, internal_client, plain_client, tmp_path
):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [("push/big", {"layer_sizes": (300_000, 400_000, 500_000), "incompressible": True})])
    targets = targets_for(lock, internal)
    calls = {"n": 0}

    class Stop(Exception):
        pass

    class StopAfterFirstLayer:
        def expect(self, count):
            pass

        def advance(self, count):
            calls["n"] += count
            if calls["n"] > 350_000:
                raise Stop()

    with pytest.raises(Stop):
        push_images(bundle, targets, internal_client, progress=StopAfterFirstLayer(), concurrency=1)
    rerun = push_images(bundle, targets, internal_client)
    assert [job.result for job in rerun] == ["sent"]
    assert rerun[0].blobs_present >= 1 and rerun[0].bytes_sent < sum(built["push/big"].blobs.values())


def test_tag_conflict_fails_by_default_and_names_both_digests(
    registry, internal, internal_client, plain_client, tmp_path
):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [("push/conflict", {})])
    targets = targets_for(lock, internal)
    target = next(iter(targets.values()))
    other = make_image(registry, "push/other", tmp_path)  # something else, then tagged as our target
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"--dest-creds={USER}:{PASSWORD}", f"docker://{registry.host}/push/other:1.0",
                    f"docker://{target.canonical}"], check=True, capture_output=True)
    failed = push_images(bundle, targets, internal_client)[0]
    assert failed.result == "failed"
    assert other.digest in str(failed.error) and built["push/conflict"].digest in str(failed.error)
    skipped = push_images(bundle, targets, internal_client, on_existing=OnExisting.SKIP)[0]
    assert skipped.result.startswith("skipped")
    forced = push_images(bundle, targets, internal_client, on_existing=OnExisting.OVERWRITE)[0]
    assert forced.result == "sent"


def test_dry_run_sends_nothing(registry, internal, internal_client, plain_client, tmp_path):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [("push/dry", {})])
    targets = targets_for(lock, internal)
    jobs = push_images(bundle, targets, internal_client, dry_run=True)
    assert jobs[0].result == "would send" and jobs[0].bytes_sent > 0
    assert internal_client.head_manifest(next(iter(targets.values()))) is None


def test_blobs_shared_between_images_are_mounted_not_sent_again(
    registry, internal, internal_client, plain_client, tmp_path
):
    from images import build_image, push_layout

    built = build_image(tmp_path / "shared", "1.0", layer_sizes=(50_000, 60_000), incompressible=True)
    for name in ("push/twin-a", "push/twin-b"):
        push_layout(built, f"{registry.host}/{name}:1.0")
    images = [ResolvedImage(Reference.parse(f"{registry.host}/{name}:1.0"), "g") for name in ("push/twin-a", "push/twin-b")]
    report = download(images, [], tmp_path / "bundle", client=plain_client, platforms=None)
    assert report.ok
    bundle = Bundle.open(tmp_path / "bundle")
    lock = bundle.lock
    jobs = push_images(bundle, targets_for(lock, internal), internal_client, concurrency=1)
    assert [job.result for job in jobs] == ["sent", "sent"]
    assert jobs[0].blobs_sent == 3 and jobs[0].blobs_mounted == 0
    assert jobs[1].blobs_sent == 0 and jobs[1].blobs_mounted == 3 and jobs[1].bytes_sent == 0


def test_a_second_push_asks_for_each_tag_only_and_reads_no_tarball(
    registry, plain_client, tmp_path, monkeypatch
):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [
        ("again/one", {"layer_sizes": (200_000, 100_000)}),
        ("again/index", {"platforms": ("linux/amd64", "linux/arm64"), "oci": True}),
    ])
    with Registry(tmp_path / "target") as target, FaultProxy(target.url) as proxy:
        options = PushOptions(registry=f"{proxy.host}/site")
        with recorded_opens(monkeypatch) as opened_first:
            first = push_release(bundle, options, plain_client)
        assert [job.result for job in first.images] == ["sent", "sent"]
        assert [path for path in opened_first if "/images/" in path]  # the recorder sees tarballs being read
        proxy.reset_counts()
        with recorded_opens(monkeypatch) as opened:
            second = push_release(Bundle.open(bundle.root), options, plain_client)
    assert [job.result for job in second.images] == ["present", "present"]
    assert image_totals(second.images)["bytes_sent"] == 0
    # One HEAD per image for its tag, nothing else: no blob is looked at, none is sent.
    assert sorted((r.method, r.path.split("/manifests/")[0]) for r in proxy.records) == [
        ("HEAD", "/v2/site/again/index"), ("HEAD", "/v2/site/again/one")]
    # No byte of any image tarball is read (the lock, SHA256SUMS and the small files are).
    assert opened and not [path for path in opened if "/images/" in path]


@contextlib.contextmanager
def recorded_opens(monkeypatch):
    """Every file opened inside the block (by open(), io.open, pathlib and tarfile), as strings."""
    opened: list[str] = []
    real_open = io.open

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    with monkeypatch.context() as patch:
        for owner in (builtins, io):
            patch.setattr(owner, "open", recording_open)
        patch.setattr(tarfile, "bltn_open", recording_open)
        yield opened


def test_push_hashes_what_it_uploads_and_refuses_a_damaged_blob(registry, plain_client, tmp_path):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [("damaged/app", {"layer_sizes": (300_000,)})])
    entry = lock.release_images()[0]
    layer = next(blob for blob in entry.blobs if blob.size == max(b.size for b in entry.blobs))
    tarball = bundle.path(entry)
    offset, _ = tar_members(tarball)[blob_member(layer.digest)]
    with open(tarball, "r+b") as handle:  # same size, lock and SHA256SUMS untouched: only hashing can tell
        handle.seek(offset + 1000)
        byte = handle.read(1)
        handle.seek(offset + 1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with Registry(tmp_path / "target") as target:
        report = push_release(bundle, PushOptions(registry=f"{target.host}/site"), plain_client)
        (job,) = report.images
        assert job.result == "failed" and isinstance(job.error, DigestMismatch)
        assert "hashes to" in str(job.error) and layer.digest in str(job.error)
        assert not plain_client.has_blob(job.target, layer.digest)  # the registry never took it
    with pytest.raises(CorruptBundle, match=layer.digest):
        verify(bundle)  # the full pass names the same blob


def test_push_refuses_a_tarball_of_another_size_before_sending_anything(registry, plain_client, tmp_path):
    bundle, lock, built = bundle_of(registry, tmp_path, plain_client, [("resized/app", {})])
    tarball = bundle.path(lock.release_images()[0])
    with open(tarball, "ab") as handle:
        handle.write(b"\0" * 512)
    with Registry(tmp_path / "target") as target, FaultProxy(target.url) as proxy:
        with pytest.raises(CorruptBundle, match=rf"{tarball.name}: {tarball.stat().st_size} bytes, the lock says"):
            push_release(bundle, PushOptions(registry=f"{proxy.host}/site"), plain_client)
        assert proxy.records == []  # checked before the first request


def test_a_pinned_reference_the_registry_does_not_serve_fails_in_one_line_naming_it(registry, plain_client, tmp_path):
    """The values pin `tag@digest`; a registry that lost the manifest after the upload (a retention policy, a
    garbage collection) must stop the push before any values are written."""
    import urllib.request

    from wsm._exceptions import ProofFailed
    from wsm._push import check_pinned, pin_what_was_kept

    built = make_image(registry, "pinned/one", tmp_path)
    source = ImageSource("app", Method.VALUES, "one.image")
    pinned = Reference.parse(f"{registry.host}/pinned/one:1.0@{built.digest}")
    assert download([ResolvedImage(pinned, "g", (source,))], [], tmp_path / "bundle", client=plain_client,
                    platforms=None).ok
    bundle = Bundle.open(tmp_path / "bundle")
    with Registry(tmp_path / "target") as target:
        first = push_release(bundle, PushOptions(registry=f"{target.host}/site"), plain_client)
        assert [job.result for job in first.images] == ["sent"]
        entries = bundle.lock.release_images()
        targets = pin_what_was_kept(entries, plan_targets([e.reference for e in entries],
                                                          TargetRegistry.parse(f"{target.host}/site")))
        check_pinned(entries, targets, first.images, plain_client)  # served: no error
        deleted = urllib.request.urlopen(urllib.request.Request(
            f"{target.url}/v2/site/pinned/one/manifests/{built.digest}", method="DELETE"), timeout=10)
        assert deleted.status == 202
        with pytest.raises(ProofFailed) as failed:
            check_pinned(entries, targets, first.images, plain_client)
    expected = f"{target.host}/site/pinned/one:1.0@{built.digest}"
    assert str(failed.value) == f"the internal registry does not serve {expected}, which the values pin"
    assert "\n" not in str(failed.value)
