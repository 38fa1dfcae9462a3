"""Delta bundles against real Distribution registries: two stand-in releases of one product that share most of
their layers; `download --since` carries only what the new one adds; verify with and without the base; push
onto a registry that holds the old release (digests equal upstream) and onto an empty one (refused before
anything is sent, naming the missing layers); load with the base into dockerd; the inventory of a site's
registry as a base."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from faults import FaultProxy
from images import build_image, make_layers, push_layout
from servers import Registry
from support import wsm
from wsm._bundle import Bundle
from wsm._delta import MissingBaseBlobs, read_base
from wsm._download import download
from wsm._exceptions import BundleError, CorruptBundle
from wsm._lock import BaseKind
from wsm._model import ImageSource, Method, ResolvedImage
from wsm._push import PushOptions, push_release
from wsm._reference import Reference
from wsm._verify import verify

SHARED = 3 * 1024 * 1024  # bytes of layers both releases share, per image
NEW = 2 * 1024 * 1024  # bytes of the layer each image adds (a tarball adds ~7 KiB of headers, manifest, config)


@pytest.fixture(scope="module")
def releases(registry, tmp_path_factory):
    """Release 1: delta/app:1.0 and delta/worker:1.0; release 2: delta/app:2.0 (the same base layers, one new
    layer), the worker unchanged, and a new repository delta/api:1.0 on the same base layers (on the site they
    are mounted from the repositories the old release went to). Layers are incompressible, so bytes on the wire are the sizes."""
    tmp = tmp_path_factory.mktemp("releases")
    base = make_layers((SHARED // 2, SHARED // 2), incompressible=True)
    built = {}
    for name, tag, sizes in [("delta/app", "1.0", (NEW,)), ("delta/worker", "1.0", (NEW,)),
                             ("delta/app", "2.0", (NEW,)), ("delta/api", "1.0", (NEW,))]:
        image = build_image(tmp / f"{name.replace('/', '_')}-{tag}", tag, layer_sizes=sizes, incompressible=True,
                            shared_layers=base)
        push_layout(image, f"{registry.host}/{name}:{tag}")
        built[f"{registry.host}/{name}:{tag}"] = image
    return built


def resolved(names):
    return [ResolvedImage(Reference.parse(name), "g", (ImageSource("app", Method.VALUES, f"v{i}.image"),))
            for i, name in enumerate(names)]


def release_names(registry, number):
    if number == 1:
        return [f"{registry.host}/delta/app:1.0", f"{registry.host}/delta/worker:1.0"]
    return [f"{registry.host}/delta/app:2.0", f"{registry.host}/delta/worker:1.0", f"{registry.host}/delta/api:1.0"]


@pytest.fixture(scope="module")
def bundles(registry, releases, plain_client, tmp_path_factory):
    """The old release's full bundle, the new release's full bundle, and the new release's delta."""
    tmp = tmp_path_factory.mktemp("bundles")
    made = {}
    for label, names, since in [("old", release_names(registry, 1), None), ("full", release_names(registry, 2), None),
                                ("delta", release_names(registry, 2), "old")]:
        base = read_base(made[since]) if since else None
        report = download(resolved(names), [], tmp / label, client=plain_client, platforms=None, base=base)
        assert report.ok, report.failures
        made[label] = tmp / label
    return made


def image_bytes(root):
    return sum(path.stat().st_size for path in (root / "images").iterdir())


def added_blob_bytes(releases, registry):
    old = {d for name in release_names(registry, 1) for d in releases[name].blobs}
    new = {d: s for name in release_names(registry, 2) for d, s in releases[name].blobs.items()}
    return sum(size for digest, size in new.items() if digest not in old)


def test_delta_carries_only_what_the_new_release_adds(bundles, releases, registry):
    added = added_blob_bytes(releases, registry)
    delta, full = image_bytes(bundles["delta"]), image_bytes(bundles["full"])
    print(f"\nnew release: full bundle images {full} B, delta {delta} B, blobs added {added} B, saved {full - delta} B "
          f"({100 * (full - delta) / full:.1f} %)")
    assert delta <= 1.01 * added
    lock = Bundle.open(bundles["delta"]).lock
    old_root = hashlib.sha256((bundles["old"] / "SHA256SUMS").read_bytes()).hexdigest()
    assert lock.base is not None and lock.base.kind is BaseKind.BUNDLE and lock.base.digest == f"sha256:{old_root}"
    worker = lock.images[f"{registry.host}/delta/worker:1.0"]
    # The unchanged image: its manifest and config stay, every layer is the base's.
    upstream = releases[f"{registry.host}/delta/worker:1.0"].blobs
    assert len(worker.blobs) == 2 and {b.digest for b in worker.from_base} == set(upstream) - {
        b.digest for b in worker.blobs}
    raw = json.loads((bundles["delta"] / "wsm.lock.json").read_text())
    assert raw["format"] == 2 and raw["base"]["kind"] == "bundle" and raw["images"][0]["from_base"]


def test_a_lock_alone_is_a_base_and_its_own_sha256_is_recorded(bundles, registry, plain_client, tmp_path):
    lock_path = bundles["old"] / "wsm.lock.json"
    report = download(resolved(release_names(registry, 2)), [], tmp_path / "d", client=plain_client, platforms=None,
                      base=read_base(lock_path))
    assert report.ok
    lock = Bundle.open(tmp_path / "d").lock
    assert lock.base.kind is BaseKind.LOCK
    assert lock.base.digest == "sha256:" + hashlib.sha256(lock_path.read_bytes()).hexdigest()
    with pytest.raises(BundleError, match="made against base"):  # one bundle, one base
        download(resolved(release_names(registry, 2)), [], tmp_path / "d", client=plain_client, platforms=None,
                 base=read_base(bundles["old"]))


def test_verify_checks_what_a_delta_holds_and_with_base_what_it_expects(bundles):
    report = verify(Bundle.open(bundles["delta"]))
    assert report.from_base and not report.base_checked
    with_base = verify(Bundle.open(bundles["delta"]), base=read_base(bundles["old"]))
    assert with_base.base_checked and with_base.from_base == report.from_base
    with pytest.raises(CorruptBundle, match="the bundle was made against"):
        verify(Bundle.open(bundles["delta"]), base=read_base(bundles["full"]))


def test_verify_cli_lists_what_the_base_must_provide(bundles):
    result = wsm("verify", str(bundles["delta"]))
    assert result.returncode == 0, result.stderr
    assert "layers expected from base" in result.stdout and "give --base" in result.stdout
    result = wsm("verify", str(bundles["delta"]), "--base", str(bundles["old"]))
    assert result.returncode == 0, result.stderr
    assert "each checked in the base" in result.stdout


def inspect_digest(reference: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                         check=True, capture_output=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_push_of_a_delta_onto_the_old_release_gives_upstream_digests(bundles, releases, registry, plain_client,
                                                                      tmp_path):
    with Registry(tmp_path / "site") as site:
        old = push_release(Bundle.open(bundles["old"]), PushOptions(registry=f"{site.host}/corp"), plain_client)
        assert old.ok
        dry = push_release(Bundle.open(bundles["delta"]), PushOptions(registry=f"{site.host}/corp", dry_run=True),
                           plain_client)
        assert sum(job.bytes_sent for job in dry.images) <= 1.01 * added_blob_bytes(releases, registry)
        report = push_release(Bundle.open(bundles["delta"]), PushOptions(registry=f"{site.host}/corp"), plain_client)
        assert report.ok, [job.error for job in report.images]
        for name in release_names(registry, 2):
            reference = Reference.parse(name)
            assert inspect_digest(f"{site.host}/corp/{reference.repository}:{reference.tag}") == releases[name].digest
        sent = sum(job.bytes_sent for job in report.images)
        assert sent <= 1.01 * added_blob_bytes(releases, registry)
        api = next(job for job in report.images if job.source.repository == "delta/api")
        assert api.blobs_present == 2  # the base layers, mounted from corp/delta/app or corp/delta/worker


def test_push_of_a_delta_onto_an_empty_registry_fails_before_sending_anything(bundles, plain_client, tmp_path):
    lock = Bundle.open(bundles["delta"]).lock
    with Registry(tmp_path / "empty") as site, FaultProxy(site.url) as proxy:
        with pytest.raises(MissingBaseBlobs) as caught:
            push_release(Bundle.open(bundles["delta"]), PushOptions(registry=f"{proxy.host}/corp"), plain_client)
        expected = sorted({b.digest for image in lock.images.values() for b in image.from_base})
        assert list(caught.value.missing) == expected
        assert lock.base.digest in str(caught.value) and expected[0] in str(caught.value)
        assert {r.method for r in proxy.records} <= {"HEAD", "GET"}  # nothing written
        assert not proxy.requests_for("HEAD", "/manifests/")  # not a single image was started
        result = wsm("push", "--bundle", str(bundles["delta"]), "--registry", f"{proxy.host}/corp", "--plain-http")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and lock.base.digest in result.stderr and expected[0] in result.stderr
        assert {r.method for r in proxy.records} <= {"HEAD", "GET"}


@pytest.mark.docker
def test_load_of_a_delta_with_its_base_puts_full_images_into_docker(docker_engine, bundles, registry):
    from wsm._load import load

    with pytest.raises(BundleError, match="part of a delta bundle"):
        load(Bundle.open(bundles["delta"]), docker_host=docker_engine.url)
    loaded = load(Bundle.open(bundles["delta"]), docker_host=docker_engine.url, base=read_base(bundles["old"]))
    assert sorted(loaded) == sorted(release_names(registry, 2))
    for name in release_names(registry, 2):
        inspected = subprocess.run(["docker", "-H", docker_engine.url, "image", "inspect", name], capture_output=True,
                                   text=True)
        assert inspected.returncode == 0, inspected.stderr
        assert len(json.loads(inspected.stdout)[0]["RootFS"]["Layers"]) == 3
    result = wsm("load", "--bundle", str(bundles["delta"]), "--docker-host", docker_engine.url)
    assert result.returncode == 1 and "--base OLD" in result.stderr and "Traceback" not in result.stderr


def test_load_of_a_delta_and_its_base_both_stored_in_parts(docker_engine, registry, releases, plain_client,
                                                          tmp_path):
    """Files in parts (FAT32 media) and deltas together: the joined stream reads both tarballs across parts."""
    from wsm._load import load

    old, delta = tmp_path / "old", tmp_path / "delta"
    small = 300_000  # below the 2 MiB layers: every tarball is stored in parts
    assert download(resolved(release_names(registry, 1)), [], old, client=plain_client, platforms=None,
                    max_file_size=small).ok
    assert download(resolved(release_names(registry, 2)), [], delta, client=plain_client, platforms=None,
                    base=read_base(old), max_file_size=small).ok
    assert any(entry.parts and entry.from_base for entry in Bundle.open(delta).lock.images.values())
    assert all(entry.parts for entry in Bundle.open(old).lock.images.values())
    loaded = load(Bundle.open(delta), docker_host=docker_engine.url, base=read_base(old))
    assert sorted(loaded) == sorted(release_names(registry, 2))


def test_inventory_of_the_site_and_a_download_of_only_what_it_lacks(bundles, releases, registry, plain_client,
                                                                   tmp_path):
    with Registry(tmp_path / "site") as site:
        assert push_release(Bundle.open(bundles["old"]), PushOptions(registry=f"{site.host}/corp"), plain_client).ok
        push_layout(releases[f"{registry.host}/delta/app:1.0"], f"{site.host}/elsewhere/app:1.0")  # not under corp
        assert sorted(plain_client.list_repositories(site.host, page=1)) == [  # Link pages followed
            "corp/delta/app", "corp/delta/worker", "elsewhere/app"]
        inventory = tmp_path / "inventory.json"
        result = wsm("inventory", "--registry", f"{site.host}/corp", "-o", str(inventory), "--plain-http")
        assert result.returncode == 0, result.stderr
        data = json.loads(inventory.read_text())
        assert [repo["name"] for repo in data["repositories"]] == ["corp/delta/app", "corp/delta/worker"]
        app = data["repositories"][0]
        assert app["tags"] == {"1.0": releases[f"{registry.host}/delta/app:1.0"].digest}
        assert {b["digest"] for b in app["blobs"]} | set(app["manifests"]) == set(
            releases[f"{registry.host}/delta/app:1.0"].blobs)
        report = download(resolved(release_names(registry, 2)), [], tmp_path / "d", client=plain_client,
                          platforms=None, base=read_base(inventory))
        assert report.ok and image_bytes(tmp_path / "d") <= 1.01 * added_blob_bytes(releases, registry)
        lock = Bundle.open(tmp_path / "d").lock
        assert lock.base.kind is BaseKind.INVENTORY and lock.base.repositories == ("corp/delta/app",
                                                                                 "corp/delta/worker")
        text = (tmp_path / "d" / "REPORT.md").read_text()
        assert "compared by blobs only" in text and "Images:" not in text.split("## Since the base")[1]
        assert verify(Bundle.open(tmp_path / "d")).ok
        pushed = push_release(Bundle.open(tmp_path / "d"), PushOptions(registry=f"{site.host}/corp"), plain_client)
        assert pushed.ok, [job.error for job in pushed.images]
        for name in release_names(registry, 2):
            reference = Reference.parse(name)
            assert inspect_digest(f"{site.host}/corp/{reference.repository}:{reference.tag}") == releases[name].digest


def test_inventory_with_read_only_credentials_over_tls(releases, registry, tmp_path):
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with Registry(tmp_path / "site", tls=ca, htpasswd={"reader": "s3cret"}) as site:
        push_layout(releases[f"{registry.host}/delta/worker:1.0"], f"{site.host}/corp/delta/worker:1.0",
                    creds="reader:s3cret")
        inventory = tmp_path / "inventory.json"
        denied = wsm("inventory", "--registry", f"{site.host}/corp", "-o", str(inventory), "--ca-file", str(ca_file))
        assert denied.returncode == 1 and "Traceback" not in denied.stderr and not inventory.exists()
        result = wsm("inventory", "--registry", f"{site.host}/corp", "-o", str(inventory), "--ca-file", str(ca_file),
                     "--username", "reader", "--password-stdin", stdin="s3cret\n")
        assert result.returncode == 0, result.stderr
        assert "s3cret" not in inventory.read_text() + result.stdout + result.stderr
        (repo,) = json.loads(inventory.read_text())["repositories"]
        assert repo["tags"] == {"1.0": releases[f"{registry.host}/delta/worker:1.0"].digest}


def test_a_base_that_is_none_of_the_three_is_one_line(tmp_path):
    result = wsm("download", "--since", str(tmp_path / "nope"), "--bundle", str(tmp_path / "b"), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "does not exist" in result.stderr
    (tmp_path / "junk.json").write_text('{"inventory": 1, "repositories": [{"name": "../x"}]}')
    result = wsm("verify", str(tmp_path), "--base", str(tmp_path / "junk.json"))
    assert result.returncode == 1 and "not a wsm inventory file" in result.stderr


def test_report_md_of_a_delta_says_what_changed_since_its_base(bundles, registry):
    host, delta = registry.host, bundles["delta"]
    lock = json.loads((delta / "wsm.lock.json").read_text())
    old = json.loads((bundles["old"] / "wsm.lock.json").read_text())
    assert lock["base"]["release"]["images"] == {i["image"]: i["digest"] for i in old["images"]}
    left_out = {b["digest"]: b["size"] for image in lock["images"] for b in image.get("from_base", [])}
    held = {b["digest"] for image in lock["images"] for b in image["blobs"]}
    text = (delta / "REPORT.md").read_text()
    old_root = "sha256:" + hashlib.sha256((bundles["old"] / "SHA256SUMS").read_bytes()).hexdigest()
    assert f"## Since the base\n\nBase root digest: `{old_root}`" in text
    assert "Images: 2 added, 1 removed, 0 changed" in text
    assert f"- added {host}/delta/api:1.0\n- added {host}/delta/app:2.0\n- removed {host}/delta/app:1.0\n" in text
    assert f"{len(held - left_out.keys())} blobs" in text and f"{sum(left_out.values())} bytes of blobs" in text
    # the shared base layers (in three images) and worker's own layer, each counted once
    assert SHARED + NEW <= sum(left_out.values()) < SHARED + NEW + 64 * 1024
    assert verify(Bundle.open(delta)).ok  # REPORT.md is what the lock alone says: not stale
    result = wsm("report", str(delta), "-o", "json", cwd=delta.parent)
    assert result.returncode == 0, result.stderr
    since = json.loads(result.stdout)["since"]
    assert since["base_root_digest"] == old_root and since["by_blobs_only"] is False
    assert since["images"] == {"added": [f"{host}/delta/api:1.0", f"{host}/delta/app:2.0"],
                               "removed": [f"{host}/delta/app:1.0"], "changed": []}
    assert since["bytes_saved"] == sum(left_out.values()) and since["new_blobs"] == len(held - left_out.keys())
    explicit = json.loads(wsm("report", str(delta), "--since", str(bundles["full"]), "-o", "json").stdout)["since"]
    assert explicit["images"] == {"added": [], "removed": [], "changed": []}  # an explicit OLD wins


def test_a_delta_lock_from_before_the_base_release_was_recorded_still_verifies(bundles, tmp_path):
    from wsm._bundle import BundleDir
    from wsm._report import write_report

    copy = tmp_path / "delta"
    shutil.copytree(bundles["delta"], copy)
    lock_path = copy / "wsm.lock.json"
    data = json.loads(lock_path.read_text())
    del data["base"]["release"]
    lock_path.write_text(json.dumps(data, indent=2))
    sums = copy / "SHA256SUMS"
    digest = hashlib.sha256(lock_path.read_bytes()).hexdigest()
    sums.write_text("".join(f"{digest}  wsm.lock.json\n" if line.endswith("  wsm.lock.json") else f"{line}\n"
                            for line in sums.read_text().splitlines()))
    bundle = Bundle.open(copy)
    assert bundle.lock.base is not None and bundle.lock.base.release is None
    write_report(BundleDir(copy), bundle.lock)  # what the wsm before it wrote: no section
    assert "Since the base" not in (copy / "REPORT.md").read_text()
    result = wsm("verify", str(copy))
    assert result.returncode == 0, result.stderr
