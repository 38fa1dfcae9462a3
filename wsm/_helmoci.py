"""Helm charts stored as OCI artifacts, as `helm push` and `helm pull oci://` handle them.

The manifest is an OCI image manifest whose config (`application/vnd.cncf.helm.config.v1+json`) is Chart.yaml
as JSON and whose one layer (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`) is the .tgz itself, byte
for byte. Helm tags version `1.2.3+build` as `1.2.3_build`, since `+` is not allowed in a tag.
"""

from __future__ import annotations

import json
from typing import Any

from ._exceptions import ChartError, NotFound
from ._helmrepo import Published
from ._reference import Reference
from ._remote import HELM_CHART_CONFIG, HELM_CHART_LAYER, OCI_MANIFEST, Descriptor, RegistryClient, compute_digest
from ._versions import highest_matching, is_exact


def chart_reference(repo_url: str, name: str, tag: str = "latest") -> Reference:
    """`oci://registry.corp/charts` + `platform` -> registry.corp/charts/platform:<tag>."""
    return Reference.parse(f"{repo_url.removeprefix('oci://').rstrip('/')}/{name}:{tag}")


def pull_chart(client: RegistryClient, location: str, version: str | None) -> tuple[bytes, str]:
    """The .tgz and tag of the chart at `location` (oci://host/path/name), for a version or a range."""
    base = Reference.parse(location.removeprefix("oci://").rstrip("/") + ":latest")
    tag = _tag_for(client, base, location, version)
    manifest = client.get_manifest(base.with_tag(tag))
    layers = [layer for layer in manifest.layers() if layer.media_type == HELM_CHART_LAYER]
    if not layers:
        raise ChartError(f"{location}:{tag} is not a Helm chart (no {HELM_CHART_LAYER} layer)")
    return client.read_blob(base, layers[0]), tag


def push_chart(client: RegistryClient, repo_url: str, archive: bytes, metadata: dict[str, Any]) -> Published:
    """Push the archive as Helm's OCI artifact under `repo_url`/<name>:<version>; skip it when present."""
    name, version = str(metadata["name"]), str(metadata["version"])
    target = chart_reference(repo_url, name, version.replace("+", "_"))
    config = json.dumps({k: v for k, v in metadata.items() if v is not None}, separators=(",", ":")).encode()
    layer = Descriptor(HELM_CHART_LAYER, compute_digest(archive), len(archive))
    config_descriptor = Descriptor(HELM_CHART_CONFIG, compute_digest(config), len(config))
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_descriptor.to_dict(),
        "layers": [layer.to_dict()],
        "annotations": {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version},
    }, separators=(",", ":")).encode()
    url = f"oci://{target.name}:{target.tag}"
    existing = client.head_manifest(target)
    if existing is not None and _same_chart(client, target, existing, layer.digest):
        return Published(name, version, url, sent=False)
    if existing is not None:
        raise ChartError(f"{url} already holds another archive for {name} {version}; a chart version is immutable")
    client.push_blob(target, layer, archive)
    client.push_blob(target, config_descriptor, config)
    client.put_manifest(target, manifest, OCI_MANIFEST)
    return Published(name, version, url, sent=True)


def _same_chart(client: RegistryClient, target: Reference, existing: Descriptor, layer_digest: str) -> bool:
    manifest = client.get_manifest(target.with_digest(existing.digest))
    return any(layer.digest == layer_digest for layer in manifest.layers())


def _tag_for(client: RegistryClient, base: Reference, location: str, version: str | None) -> str:
    if version and is_exact(version):
        return version.replace("+", "_")
    tags = client.list_tags(base)
    versions = {tag.replace("_", "+"): tag for tag in tags}
    try:
        best = highest_matching(version or "*", versions)
    except ValueError as error:
        raise ChartError(f"chart {location} {version}: not a valid version or range ({error})") from None
    if best is None:
        raise NotFound(f"chart {location}: no version matches {version} (tags: {', '.join(sorted(tags)[-5:]) or 'none'})")
    return versions[best]
