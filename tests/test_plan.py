"""The download planner and `Manifest.subset`, without a registry: small manifests and indexes built here.

What the planner decides is README's "Platforms" section: an image manifest as it is; an index with every
platform as it is; one platform as that platform's manifest; several as a wsm-made index that keeps the
attestations of the kept platforms, the upstream order and every other field; a missing platform or a
nested index fails the image in one line.
"""

from __future__ import annotations

import json

import pytest

from support import sha256
from wsm._exceptions import NotFound, RegistryError
from wsm._lock import Kept
from wsm._plan import Selection, plan_image, select_children
from wsm._reference import Reference
from wsm._remote import OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Descriptor, Manifest, Platform

REF = Reference.parse("registry.example.com/team/app:1.0")
AMD64, ARM64, S390X = Platform.parse("linux/amd64"), Platform.parse("linux/arm64"), Platform.parse("linux/s390x")
IN_TOTO = "application/vnd.in-toto+json"


def blob(name: str, size: int = 100, media_type: str = OCI_LAYER) -> dict:
    return {"mediaType": media_type, "digest": sha256(name.encode()), "size": size}


def manifest(*layers: str, config: str = "config", layer_type: str = OCI_LAYER) -> Manifest:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob(config, 10, "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(layer, 1000 + len(layer), layer_type) for layer in layers],
    }
    return Manifest.from_bytes(json.dumps(document).encode())


def attestation(of: str) -> Manifest:
    return manifest(f"statement-{of}", config=f"att-config-{of}", layer_type=IN_TOTO)


def entry(child: Manifest, platform: str, **annotations: str) -> dict:
    os_name, architecture = platform.split("/")
    data = {**child.descriptor().to_dict(), "platform": {"os": os_name, "architecture": architecture}}
    if annotations:
        data["annotations"] = dict(annotations)
    return data


def attestation_entry(child: Manifest, refers_to: Manifest) -> dict:
    return entry(child, "unknown/unknown", **{"vnd.docker.reference.type": "attestation-manifest",
                                              "vnd.docker.reference.digest": refers_to.digest})


def index(*entries: dict, **fields: object) -> Manifest:
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, **fields, "manifests": list(entries)}
    return Manifest.from_bytes(json.dumps(document, separators=(",", ":")).encode())


class Release:
    """A buildx-style index: three platforms sharing a base layer, then an attestation for each."""

    def __init__(self) -> None:
        self.amd64 = manifest("base", "app-amd64")
        self.arm64 = manifest("base", "app-arm64")
        self.s390x = manifest("base", "app-s390x")
        self.attestations = {name: attestation(name) for name in ("amd64", "arm64", "s390x")}
        self.index = index(
            entry(self.amd64, "linux/amd64"),
            entry(self.arm64, "linux/arm64"),
            entry(self.s390x, "linux/s390x"),
            attestation_entry(self.attestations["amd64"], self.amd64),
            attestation_entry(self.attestations["arm64"], self.arm64),
            attestation_entry(self.attestations["s390x"], self.s390x),
            annotations={"org.opencontainers.image.created": "2025-01-01T00:00:00Z"},
            subject={"mediaType": OCI_MANIFEST, "digest": sha256(b"subject"), "size": 7},
            **{"x-unknown": [1, 2]},
        )

    @property
    def children(self) -> dict[str, Manifest]:
        every = [self.amd64, self.arm64, self.s390x, *self.attestations.values()]
        return {child.digest: child for child in every}

    def plan(self, platforms):
        selection = select_children(self.index, platforms, REF)
        given = {entry.digest: self.children[entry.digest] for entry in selection.children}
        return selection, plan_image(REF, self.index, given, platforms)


# ------------------------------------------------------------------------------------------- image manifests


def test_an_image_manifest_is_kept_as_is_whatever_platforms_are_asked_and_each_blob_is_fetched_once():
    image = manifest("base", "app", "base")  # a layer listed twice is still one blob
    assert select_children(image, [ARM64], REF) == Selection(Kept.AS_IS)
    plan = plan_image(REF, image, {}, [ARM64])

    assert plan.kept is Kept.AS_IS and plan.top == image.descriptor() and plan.manifests == (image,)
    assert plan.documents == (image,) and plan.index is None and plan.note is None
    assert [d.digest for d in plan.fetch] == [sha256(b"config"), sha256(b"base"), sha256(b"app")]
    assert plan.blobs == (image.descriptor(), *plan.fetch)
    assert plan.size == len(image.raw) + sum(d.size for d in plan.fetch)
    assert plan.docker_manifest() is image


def test_an_image_of_attestations_only_has_nothing_to_load():
    with pytest.raises(NotFound, match=r"team/app:1.0: no image manifest to load \(only attestations\)"):
        plan_image(REF, attestation("alone"), {}, None)


# ---------------------------------------------------------------------------------------------------- indexes


def test_every_platform_keeps_the_index_byte_for_byte_with_its_attestations():
    release = Release()
    for asked in (None, [AMD64, ARM64, S390X]):  # all platforms, or all the image has
        selection, plan = release.plan(asked)
        assert selection.kept is Kept.AS_IS and len(selection.children) == 6
        assert plan.kept is Kept.AS_IS and plan.top == release.index.descriptor() and plan.note is None
        assert plan.documents[0] is release.index and len(plan.manifests) == 6
        assert [m.digest for m in plan.image_manifests()] == [release.amd64.digest, release.arm64.digest,
                                                              release.s390x.digest]
        fetched = [d.digest for d in plan.fetch]
        assert len(fetched) == len(set(fetched)) and fetched.count(sha256(b"base")) == 1  # shared layer once
        assert plan.entry_platforms[release.arm64.digest] == ARM64


def test_one_platform_keeps_only_that_platform_manifest_and_says_whose_index_it_came_from():
    release = Release()
    selection, plan = release.plan([ARM64])

    assert selection == Selection(Kept.PLATFORM, (Descriptor.from_dict(json.loads(release.index.raw)["manifests"][1],
                                                                       "test"),))
    assert plan.kept is Kept.PLATFORM and plan.manifests == (release.arm64,)
    assert plan.top.digest == release.arm64.digest and plan.top.platform == ARM64
    assert plan.documents == (release.arm64,)  # the upstream index is not in the tarball
    assert plan.note == f"platform linux/arm64 of upstream index {release.index.digest}"
    assert plan.index is None and plan.docker_manifest() is release.arm64


def test_a_subset_gets_an_index_made_by_wsm_with_the_attestations_of_the_kept_platforms():
    release = Release()
    selection, plan = release.plan([S390X, AMD64])  # asked out of order: the upstream order is kept

    kept = [release.amd64, release.s390x, release.attestations["amd64"], release.attestations["s390x"]]
    assert selection.kept is Kept.SUBSET_INDEX
    assert [child.digest for child in selection.children] == [child.digest for child in kept]
    assert plan.kept is Kept.SUBSET_INDEX and plan.manifests == tuple(kept)
    made = json.loads(plan.index.raw)
    upstream = json.loads(release.index.raw)
    assert made == {**upstream, "manifests": [upstream["manifests"][i] for i in (0, 2, 3, 5)]}
    assert plan.top == Descriptor(OCI_INDEX, sha256(plan.index.raw), len(plan.index.raw))
    assert plan.top.digest != release.index.digest and plan.documents[0] is plan.index
    assert plan.note == (f"index written by wsm over linux/amd64, linux/s390x of upstream index "
                         f"{release.index.digest} (not an upstream digest)")
    assert plan.docker_manifest() is release.amd64  # docker gets linux/amd64 even though s390x was asked first
    assert not any(d.digest == sha256(b"app-arm64") for d in plan.fetch)


def test_a_platform_the_image_lacks_fails_in_one_line_naming_what_it_has_before_anything_is_fetched():
    release = Release()
    with pytest.raises(NotFound) as raised:
        select_children(release.index, [S390X, Platform.parse("linux/riscv64"), Platform.parse("windows/amd64")],
                        REF)
    assert str(raised.value) == (
        "registry.example.com/team/app:1.0 has no linux/riscv64 or windows/amd64 image; "
        "it has linux/amd64, linux/arm64, linux/s390x"
    )
    bare = index(attestation_entry(release.attestations["amd64"], release.amd64))
    with pytest.raises(NotFound, match="has no linux/amd64 image; it has no platform at all"):
        select_children(bare, [AMD64], REF)


def test_an_index_nesting_another_index_is_refused():
    inner = index(entry(manifest("x"), "linux/amd64"))
    outer = index({**inner.descriptor().to_dict(), "platform": {"os": "linux", "architecture": "amd64"}})
    selection = select_children(outer, [AMD64], REF)
    with pytest.raises(NotFound) as raised:
        plan_image(REF, outer, {inner.digest: inner}, [AMD64])
    assert str(raised.value) == (
        f"registry.example.com/team/app:1.0: index {inner.digest} nests another index; wsm keeps one level"
    )
    assert selection.children[0].digest == inner.digest


def test_a_child_manifest_the_caller_did_not_fetch_is_a_programming_error():
    release = Release()
    with pytest.raises(ValueError, match="was not given"):
        plan_image(REF, release.index, {}, [AMD64, ARM64])


# ------------------------------------------------------------------------------------------- Manifest.subset


def test_subset_keeps_every_other_field_and_the_order_and_has_its_own_digest():
    release = Release()
    upstream = json.loads(release.index.raw)
    keep = {release.s390x.digest, release.amd64.digest}
    made = release.index.subset(keep)

    assert json.loads(made.raw) == {**upstream, "manifests": [upstream["manifests"][0], upstream["manifests"][2]]}
    assert made.media_type == OCI_INDEX and made.is_index and made.digest == sha256(made.raw)
    assert [child.digest for child in made.children()] == [release.amd64.digest, release.s390x.digest]
    assert made.raw.endswith(b"}\n")  # new bytes, written by wsm
    assert json.loads(release.index.raw) == upstream and len(release.index.children()) == 6  # upstream untouched
    assert release.index.subset([child.digest for child in release.index.children()]).children() == \
        release.index.children()


def test_subset_of_an_index_without_a_media_type_field_takes_the_served_one():
    raw = json.dumps({"schemaVersion": 2, "manifests": [entry(manifest("a"), "linux/amd64")]}).encode()
    served = Manifest.from_bytes(raw, "application/vnd.docker.distribution.manifest.list.v2+json")
    made = served.subset({served.children()[0].digest})
    assert made.media_type == served.media_type and "mediaType" not in json.loads(made.raw)


def test_subset_of_an_image_manifest_is_refused():
    image = manifest("a")
    with pytest.raises(RegistryError, match="not an index"):
        image.subset({image.digest})
