"""Platforms, descriptors and manifests, read from images built by tests/images.py (no server needed)."""

from __future__ import annotations

import json

import pytest
from images import build_image

from wsm import WsmError
from wsm._exceptions import InvalidPlatform
from wsm._remote import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    compute_digest,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("Linux/x86_64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        (" windows/amd64 ", Platform("windows", "amd64")),
    ],
)
def test_platform_parse(text, expected):
    assert Platform.parse(text) == expected


@pytest.mark.parametrize("text", ["", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux amd64", "linux/am d64"])
def test_platform_parse_refuses_junk_in_one_line(text):
    with pytest.raises(InvalidPlatform) as error:
        Platform.parse(text)
    assert isinstance(error.value, WsmError)
    assert "\n" not in str(error.value) and repr(text) in str(error.value) and "linux/amd64" in str(error.value)


def test_platform_str_round_trips():
    for text in ("linux/amd64", "linux/arm/v7"):
        assert str(Platform.parse(text)) == text


def test_platform_matches():
    arm64 = Platform.parse("linux/arm64")
    assert arm64.matches(Platform("linux", "arm64", "v8"))
    assert arm64.matches(Platform("linux", "arm64"))
    assert not arm64.matches(Platform("linux", "amd64"))
    assert not arm64.matches(Platform("windows", "arm64"))
    assert Platform.parse("linux/arm/v7").matches(Platform("linux", "arm", "v7"))
    assert not Platform.parse("linux/arm/v7").matches(Platform("linux", "arm", "v6"))
    assert not Platform.parse("linux/arm/v7").matches(Platform("linux", "arm"))
    # arm64 manifests rarely state a variant: v8 is implied.
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64"))


def test_descriptor_to_dict_has_oci_shape():
    plain = Descriptor("application/x", "sha256:" + "a" * 64, 12)
    assert plain.to_dict() == {"mediaType": "application/x", "digest": "sha256:" + "a" * 64, "size": 12}
    full = Descriptor(OCI_MANIFEST, "sha256:" + "b" * 64, 3, Platform("linux", "arm", "v7"), {"k": "v"})
    assert full.to_dict()["platform"] == {"os": "linux", "architecture": "arm", "variant": "v7"}
    assert full.to_dict()["annotations"] == {"k": "v"}
    assert Descriptor.from_dict(full.to_dict(), "test") == full
    assert hash(full)  # usable in sets although annotations is a dict


@pytest.mark.parametrize("oci", [False, True])
def test_manifest_reads_index_and_children(tmp_path, oci):
    built = build_image(tmp_path / "img", platforms=("linux/amd64", "linux/arm64"), oci=oci)
    raw = (built.layout / built.digest.split(":")[1]).read_bytes()
    index = Manifest.from_bytes(raw)
    assert index.digest == built.digest and index.media_type == (OCI_INDEX if oci else DOCKER_LIST)
    assert index.is_index
    assert {str(child.platform): child.digest for child in index.children()} == built.manifests
    assert index.child_for(Platform.parse("linux/arm64")).digest == built.manifests["linux/arm64"]
    assert index.child_for(Platform.parse("linux/s390x")) is None
    assert index.descriptor() == Descriptor(index.media_type, built.digest, len(raw))
    with pytest.raises(WsmError, match="index"):
        index.layers()

    child_raw = (built.layout / built.manifests["linux/amd64"].split(":")[1]).read_bytes()
    image = Manifest.from_bytes(child_raw)
    assert image.media_type == (OCI_MANIFEST if oci else DOCKER_MANIFEST) and not image.is_index
    assert image.children() == []
    assert {image.config().digest, *(layer.digest for layer in image.layers())} <= set(built.blobs)
    assert all(layer.size == built.blobs[layer.digest] for layer in image.layers())


def test_manifest_takes_media_type_from_header_when_body_has_none():
    raw = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "c" * 64, "size": 1}, "layers": []})
    manifest = Manifest.from_bytes(raw.encode(), OCI_MANIFEST)
    assert manifest.media_type == OCI_MANIFEST and manifest.digest == compute_digest(raw.encode())


def test_malformed_manifest_is_a_one_line_error():
    with pytest.raises(WsmError) as error:
        Manifest.from_bytes(b"<html>proxy login</html>")
    assert "not a JSON object" in str(error.value)
    broken = Manifest.from_bytes(json.dumps({"mediaType": OCI_MANIFEST, "layers": [{"size": 1}]}).encode())
    with pytest.raises(WsmError, match="malformed descriptor"):
        broken.layers()
