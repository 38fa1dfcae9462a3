"""Referrers carried along, against real Distribution 2.8 (no referrers API: the fallbacks are exercised).

The referrers are made with the `oras` Python SDK, a client we did not write. It is used only here: its SDK
cannot push Docker v2 manifests or indexes and buffers whole blobs in memory, so wsm's own client does the
carrying; for a test artifact of a few bytes that does not matter. A cosign-style signature goes under the tag
`sha256-<hex>.sig`; an SBOM is attached with `subject`, and as Distribution 2.8 has no referrers API the
fallback tag `sha256-<hex>` indexes it (written by hand with the SDK's PUT, as a 1.1 client does).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import oras.client
import oras.oci
import pytest

from charts import IMAGE_DEPLOYMENT, package, write_chart
from images import OCI_INDEX, make_image
from servers import Registry
from support import wsm
from wsm._reference import Reference

SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM = "application/spdx+json"


def raw_manifest(reference: str) -> bytes:
    """What the registry serves for `reference`, read by skopeo."""
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                          check=True, capture_output=True).stdout


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oras_push(client: oras.client.OrasClient, target: str, work: Path, name: str, content: bytes,
              media_type: str, subject: oras.oci.Subject | None = None) -> str:
    """Push a one-file artifact with the oras SDK; returns its manifest digest."""
    payload = work / name
    payload.write_bytes(content)
    config = work / f"{name}.config.json"
    config.write_text("{}")
    response = client.push(target=target, files=[f"{payload}:{media_type}"], disable_path_validation=True,
                           manifest_config=f"{config}:application/vnd.oci.image.config.v1+json", subject=subject,
                           quiet=True)
    return str(response.headers["Docker-Content-Digest"])


@pytest.fixture(scope="module")
def signed(registry, tmp_path_factory):
    """An image in the session registry with a cosign-style signature and an attached SBOM, and a chart."""
    work = tmp_path_factory.mktemp("referrers")
    image = make_image(registry, "refs/app", work, tag="1.0", oci=True)
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    hex_part = image.digest.split(":")[1]
    signature = oras_push(client, f"{registry.host}/refs/app:sha256-{hex_part}.sig", work, "sig.json",
                          b'{"critical": {"image": {"docker-manifest-digest": "' + image.digest.encode() + b'"}}}',
                          SIGNATURE)
    top = raw_manifest(f"{registry.host}/refs/app:1.0")
    subject = oras.oci.Subject(mediaType=json.loads(top)["mediaType"], digest=image.digest, size=len(top))
    sbom = oras_push(client, f"{registry.host}/refs/app:sbom-upload", work, "sbom.spdx.json", b'{"spdxVersion": "2.3"}',
                     SBOM, subject)
    sbom_raw = raw_manifest(f"{registry.host}/refs/app@{sbom}")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sbom, "size": len(sbom_raw),
         "artifactType": "application/vnd.oci.image.config.v1+json"}]}
    # The SDK's upload_manifest validates against the image-manifest schema only: the index goes by its PUT.
    container = client.get_container(f"{registry.host}/refs/app:sha256-{hex_part}")
    put = client.do_request(f"http://{container.manifest_url()}", "PUT", headers={"Content-Type": OCI_INDEX},
                            data=json.dumps(index).encode())
    assert put.status_code == 201, put.text
    chart = write_chart(work / "src" / "demo", {"apiVersion": "v2", "name": "demo", "version": "1.0.0"},
                        {"image": {"repository": f"{registry.host}/refs/app", "tag": "1.0"}},
                        {"deployment.yaml": IMAGE_DEPLOYMENT})
    archive = package(chart, work / "pkg")
    bundle = work / "bundle"
    result = wsm("download", "--chart", str(archive), "--bundle", str(bundle), "--plain-http", "--with-referrers",
                 "-o", "json", cwd=work)
    assert result.returncode == 0, result.stderr
    return {"work": work, "image": image, "signature": signature, "sbom": sbom, "bundle": bundle,
            "host": registry.host, "hex": hex_part, "download": json.loads(result.stdout)}


def test_distribution_2_8_has_no_referrers_api(registry, signed, plain_client):
    """A 404 from the referrers endpoint means "not supported": wsm falls back to the tags."""
    assert plain_client.referrers(Reference.parse(f"{registry.host}/refs/app:1.0"), signed["image"].digest) is None


def test_download_records_each_referrer_with_its_scheme_and_stores_its_files(signed):
    lock = json.loads((signed["bundle"] / "wsm.lock.json").read_text())
    (entry,) = lock["images"]
    assert signed["download"]["images"][0]["referrers"] == 2
    by_scheme = {referrer["scheme"]: referrer for referrer in entry["referrers"]}
    assert set(by_scheme) == {"tag-index", "cosign-tag"}
    cosign, index = by_scheme["cosign-tag"], by_scheme["tag-index"]
    assert cosign["subject"] == index["subject"] == signed["image"].digest
    assert cosign["tag"] == f"sha256-{signed['hex']}.sig" and cosign["manifest"]["digest"] == signed["signature"]
    assert index["tag"] == f"sha256-{signed['hex']}"
    assert signed["sbom"] in [blob["digest"] for blob in index["blobs"]]
    sums = (signed["bundle"] / "SHA256SUMS").read_text()
    for referrer in entry["referrers"]:
        for digest in [referrer["manifest"]["digest"], *(blob["digest"] for blob in referrer["blobs"])]:
            hex_part = digest.split(":")[1]
            assert f"{hex_part}  referrers/{hex_part}\n" in sums
            assert digest_of((signed["bundle"] / "referrers" / hex_part).read_bytes()) == digest
    checked = wsm("verify", str(signed["bundle"]), cwd=signed["work"])
    assert checked.returncode == 0, checked.stderr
    report = (signed["bundle"] / "REPORT.md").read_text()
    assert f"`{signed['signature']}` | cosign-tag | sha256-{signed['hex']}.sig |" in report


def test_verify_fails_when_a_referrer_file_is_gone(signed, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(signed["bundle"], copy)
    (copy / "referrers" / signed["signature"].split(":")[1]).unlink()
    result = wsm("verify", str(copy), cwd=tmp_path)
    assert result.returncode == 1 and signed["signature"].split(":")[1] in result.stderr


def test_push_writes_referrers_by_the_source_scheme_and_they_name_the_internal_digest(signed, tmp_path):
    with Registry(tmp_path / "internal") as internal:
        result = wsm("push", "--bundle", str(signed["bundle"]), "--registry", f"{internal.host}/site",
                     "--plain-http", "-o", "json", cwd=signed["work"])
        assert result.returncode == 0, result.stderr + result.stdout
        pushed = json.loads(result.stdout)["referrers"]
        assert {item["scheme"] for item in pushed} == {"tag-index", "cosign-tag"}
        source, target = f"{signed['host']}/refs/app", f"{internal.host}/site/refs/app"
        assert digest_of(raw_manifest(f"{target}:1.0")) == signed["image"].digest
        tag = f"sha256-{signed['hex']}"
        for suffix in (".sig", ""):  # same tags, same bytes
            assert raw_manifest(f"{target}:{tag}{suffix}") == raw_manifest(f"{source}:{tag}{suffix}")
        sbom = json.loads(raw_manifest(f"{target}@{signed['sbom']}"))
        assert sbom["subject"]["digest"] == signed["image"].digest
        # the oras SDK reads the carried signature back from the internal registry, byte for byte
        client = oras.client.OrasClient(hostname=internal.host, insecure=True)
        files = client.pull(target=f"{target}:{tag}.sig", outdir=str(tmp_path / "pulled"))
        assert Path(files[0]).read_bytes() == (signed["work"] / "sig.json").read_bytes()
        again = wsm("push", "--bundle", str(signed["bundle"]), "--registry", f"{internal.host}/site",
                    "--plain-http", cwd=signed["work"])
        assert again.returncode == 0 and "referrers: 2 of 2" in again.stdout


def test_a_referrers_api_referrer_pushed_to_a_registry_without_the_api_lands_in_the_fallback_index(
        signed, tmp_path, plain_client):
    """A referrer the source's 1.1 API listed is pushed by digest; Distribution 2.8 does not index `subject`,
    so push adds it to the `sha256-<hex>` tag index, as a 1.1 client does."""
    from dataclasses import replace

    from wsm._bundle import Bundle
    from wsm._lock import BundleReferrer, ReferrerScheme
    from wsm._referrers import push_referrers
    from wsm._remote import Descriptor

    bundle = Bundle.open(signed["bundle"])
    (entry,) = bundle.lock.images.values()
    index = next(r for r in entry.referrers if r.scheme is ReferrerScheme.TAG_INDEX)
    sbom = next(blob for blob in index.blobs if blob.digest == signed["sbom"])
    sbom_blobs = tuple(blob for blob in index.blobs if blob.digest != signed["sbom"])
    api = BundleReferrer(entry.top.digest, ReferrerScheme.API, Descriptor(sbom.media_type, sbom.digest, sbom.size),
                         "application/spdx+json", None, sbom_blobs)
    with Registry(tmp_path / "internal") as internal:
        target = Reference.parse(f"{internal.host}/refs/app:1.0")
        subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--src-tls-verify=false",
                        "--dest-tls-verify=false", f"docker://{signed['host']}/refs/app:1.0", f"docker://{target}"],
                       check=True, capture_output=True)
        (result,) = push_referrers(bundle, [replace(entry, referrers=(api,))], {entry.reference: target}, plain_client)
        assert result.error is None and result.scheme == "referrers-api"
        fallback = json.loads(raw_manifest(f"{internal.host}/refs/app:sha256-{signed['hex']}"))
        assert fallback["manifests"] == [{**sbom.to_dict(), "artifactType": "application/spdx+json"}]
        assert digest_of(raw_manifest(f"{internal.host}/refs/app@{signed['sbom']}")) == signed["sbom"]
        push_referrers(bundle, [replace(entry, referrers=(api,))], {entry.reference: target}, plain_client)
        again = json.loads(raw_manifest(f"{internal.host}/refs/app:sha256-{signed['hex']}"))
        assert again == fallback  # listed once


def test_lock_referrer_records_round_trip_and_a_bad_tag_is_refused(signed):
    from wsm._exceptions import BundleError
    from wsm._lock import BundleLock

    raw = (signed["bundle"] / "wsm.lock.json").read_bytes()
    lock = BundleLock.from_json(raw, "wsm.lock.json")
    assert json.loads(lock.to_json()) == json.loads(raw)
    data = json.loads(raw)
    data["images"][0]["referrers"][0]["tag"] = "../../etc"
    with pytest.raises(BundleError, match=r"referrers\[0\]\.tag"):
        BundleLock.from_dict(data, "wsm.lock.json")


@pytest.mark.parametrize("digest", ["sha256:../../etc/passwd", "sha512:" + "a" * 128, "sha256:" + "A" * 64, ""])
def test_a_digest_that_could_leave_referrers_dir_is_refused(digest):
    """Digests from upstream become URLs and `referrers/<hex>` names: only exact sha256 digests pass."""
    from wsm._exceptions import BundleError
    from wsm._referrers import check_digest

    with pytest.raises(BundleError, match="only sha256 digests are carried"):
        check_digest(digest, "a referrer of x")
    check_digest("sha256:" + "a" * 64, "a referrer of x")


def test_a_rerun_keeps_the_referrers(signed):
    result = wsm("download", "--chart", str(next((signed["work"] / "pkg").glob("*.tgz"))), "--bundle",
                 str(signed["bundle"]), "--plain-http", "--with-referrers", "-o", "json", cwd=signed["work"])
    assert result.returncode == 0, result.stderr
    (image,) = json.loads(result.stdout)["images"]
    assert image["status"] == "skipped" and image["referrers"] == 2
    assert wsm("verify", str(signed["bundle"]), cwd=signed["work"]).returncode == 0


def test_referrers_of_a_kept_platform_manifest_come_along_and_of_a_cut_index_do_not(registry, plain_client, tmp_path):
    """One platform kept of two: the tarball's top is the amd64 manifest, so its signature is carried; the
    upstream index is not inside the gap, so a signature of the index has nothing to verify against there."""
    from wsm._download import download
    from wsm._model import ImageSource, Method, ResolvedImage
    from wsm._remote import Platform

    image = make_image(registry, "refs/multi", tmp_path, platforms=("linux/amd64", "linux/arm64"), oci=True)
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    amd64 = image.manifests["linux/amd64"]
    for subject in (amd64, image.digest):
        oras_push(client, f"{registry.host}/refs/multi:sha256-{subject.split(':')[1]}.sig", tmp_path,
                  f"sig-{subject[7:15]}.json", subject.encode(), SIGNATURE)
    wanted = ResolvedImage(Reference.parse(f"{registry.host}/refs/multi:1.0"), "core",
                           (ImageSource(chart="app", method=Method.VALUES, path="image"),))
    report = download([wanted], [], tmp_path / "bundle", client=plain_client,
                      platforms=[Platform.parse("linux/amd64")], with_referrers=True)
    assert report.ok and report.images[0].referrers == 1
    (entry,) = json.loads((tmp_path / "bundle" / "wsm.lock.json").read_text())["images"]
    assert entry["kept"] == "platform"
    assert [(r["subject"], r["tag"]) for r in entry["referrers"]] == [(amd64, f"sha256-{amd64.split(':')[1]}.sig")]
