"""The synthetic-image fixture itself: what skopeo pushes is byte for byte what was built."""

import json
import subprocess

import pytest

from images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, make_image


@pytest.mark.parametrize(
    "kwargs,media_type",
    [
        ({}, DOCKER_MANIFEST),
        ({"oci": True}, OCI_MANIFEST),
        ({"platforms": ("linux/amd64", "linux/arm64")}, DOCKER_LIST),
        ({"platforms": ("linux/amd64", "linux/arm64"), "oci": True}, OCI_INDEX),
    ],
)
def test_pushed_image_keeps_built_digest(registry, tmp_path, kwargs, media_type):
    repo = f"fixture/{media_type.split('.')[-1].replace('+', '-')}-{len(kwargs)}"
    built = make_image(registry, repo, tmp_path, **kwargs)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{repo}:1.0"],
        check=True, capture_output=True,
    ).stdout
    assert json.loads(raw)["mediaType"] == media_type == built.media_type
    import hashlib
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == built.digest
