"""Small synthetic images made by the tests, put into a real registry with skopeo (a client we did not write).

`build_image()` writes one image or a multi-platform index, in Docker v2 or OCI media types, with random layer
content so every test gets fresh digests, as a directory in skopeo's `dir:` format (`manifest.json`, children
as `<hex>.manifest.json`, blobs as `<hex>`; skopeo 1.9's `oci:` source ignores Docker media types).
`push_layout()` copies it into a registry with `skopeo copy --all --preserve-digests`, so the registry serves
exactly the bytes built here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class BuiltImage:
    layout: Path
    tag: str
    digest: str  # of the top manifest or index
    media_type: str
    manifests: dict[str, str] = field(default_factory=dict)  # platform -> manifest digest
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size, every blob


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / digest.split(":")[1]).write_bytes(data)
    return digest, len(data)


def _layer(size: int, seed: bytes, incompressible: bool = False) -> tuple[bytes, str]:
    """A gzip'd tar with one file of `size` pseudo-random bytes; returns (blob, diff_id).

    `incompressible`: the blob is about as large as `size` (for tests that need to cut a transfer midway).
    """
    content = b""
    block = seed
    while len(content) < size and not incompressible:
        block = hashlib.sha256(block).digest()
        content += block * 64
    content = hashlib.shake_256(seed).digest(size) if incompressible else content[:size]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"data-{seed.hex()[:8]}.bin")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    level = 1 if incompressible else 9
    return gzip.compress(tar_bytes, compresslevel=level, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def make_layers(sizes: tuple[int, ...], incompressible: bool = False) -> list[tuple[bytes, str]]:
    """Layers (blob, diff_id) to share between images: `build_image(..., shared_layers=...)` puts them first,
    as two releases of one product share their base layers."""
    return [_layer(size, os.urandom(16), incompressible) for size in sizes]


def _one_manifest(
    layout: Path, platform: str, layer_sizes: list[int], oci: bool, built: BuiltImage, incompressible: bool = False,
    shared_layers: list[tuple[bytes, str]] | None = None,
) -> dict:
    os_name, arch = platform.split("/")[:2]
    layers, diff_ids = [], []
    fresh = [_layer(size, os.urandom(16), incompressible) for size in layer_sizes]
    for blob, diff_id in [*(shared_layers or []), *fresh]:
        digest, length = _write_blob(layout, blob)
        built.blobs[digest] = length
        layers.append({"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": digest, "size": length})
        diff_ids.append(diff_id)
    config = {
        "architecture": arch,
        "os": os_name,
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_digest, config_size = _write_blob(layout, json.dumps(config).encode())
    built.blobs[config_digest] = config_size
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }
    body = json.dumps(manifest, indent=2).encode()
    digest, size = _write_blob(layout, body)
    (layout / f"{digest.split(':')[1]}.manifest.json").write_bytes(body)
    built.blobs[digest] = size
    built.manifests[platform] = digest
    return {
        "mediaType": manifest["mediaType"],
        "digest": digest,
        "size": size,
        "platform": {"os": os_name, "architecture": arch},
    }


def build_image(
    layout: Path,
    tag: str = "1.0",
    *,
    platforms: tuple[str, ...] = ("linux/amd64",),
    layer_sizes: tuple[int, ...] = (2048, 4096),
    oci: bool = False,
    index: bool | None = None,
    incompressible: bool = False,
    shared_layers: list[tuple[bytes, str]] | None = None,
) -> BuiltImage:
    """Build an image layout; `index` defaults to True when there is more than one platform.

    `incompressible` layers are about `layer_sizes` bytes on the wire (else they compress ~60-fold).
    """
    layout = Path(layout)
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "version").write_text("Directory Transport Version: 1.1\n")
    index = len(platforms) > 1 if index is None else index
    built = BuiltImage(layout=layout, tag=tag, digest="", media_type="")
    descriptors = [_one_manifest(layout, p, list(layer_sizes), oci, built, incompressible, shared_layers)
                   for p in platforms]
    if index:
        media_type = OCI_INDEX if oci else DOCKER_LIST
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": descriptors}, indent=2)
        built.digest, size = _write_blob(layout, body.encode())
        built.blobs[built.digest] = size
        built.media_type = media_type
    else:
        built.digest, built.media_type = descriptors[0]["digest"], descriptors[0]["mediaType"]
    top = layout / built.digest.split(":")[1]
    (layout / "manifest.json").write_bytes(top.read_bytes())
    return built


def push_layout(built: BuiltImage, destination: str, *, tls_verify: bool = False, creds: str | None = None) -> None:
    """`skopeo copy` the layout to `docker://destination` keeping every digest."""
    argv = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", f"--dest-tls-verify={str(tls_verify).lower()}"]
    if creds:
        argv.append(f"--dest-creds={creds}")
    argv += [f"dir:{built.layout}", f"docker://{destination}"]
    subprocess.run(argv, check=True, capture_output=True)


def make_image(
    registry, repository: str, tmp_path: Path, tag: str = "1.0", *, creds: str | None = None, **kwargs
) -> BuiltImage:
    """Build an image and push it to `registry` (a tests.servers.Registry) as `repository:tag`."""
    built = build_image(tmp_path / f"layout-{repository.replace('/', '_')}-{tag}", tag, **kwargs)
    push_layout(built, f"{registry.host}/{repository}:{tag}", creds=creds)
    return built
