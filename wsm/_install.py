"""What the offline site installs from: a values file per Helm-installed chart, a custom resource per
operator-installed chart, each pointing every image at the internal registry and declaring air-gapped mode.

A values file holds the release's pinned values (the manifest's, which make the release what it is) plus
the image overrides; a chart whose defaults have an `airgapped` switch (the W&B operator) gets it set true.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._chart import Chart
from ._exceptions import WsmError
from ._manifest import ChartEntry, CustomResource, ReleaseManifest
from ._model import ResolvedImage
from ._names import inside
from ._overrides import image_overrides
from ._reference import Reference
from ._values import Values, copy_tree, get_path, merge, set_path

PLACEHOLDER = "CHANGE-ME"
VALUES_DIR = "values"


@dataclass(frozen=True)
class ChartLocation:
    """Where a chart sits in the internal Helm repository, as helm and an operator address it."""

    repo_url: str  # https://charts.corp or oci://registry.corp/charts
    name: str
    version: str

    @property
    def is_oci(self) -> bool:
        return self.repo_url.startswith("oci://")

    @property
    def oci_ref(self) -> str:
        return f"{self.repo_url.rstrip('/')}/{self.name}"


@dataclass(frozen=True)
class InstallFile:
    chart: str  # the chart's name in the release
    path: Path
    kind: str  # "values" or "resource"
    unredirected: tuple[str, ...] = ()  # images of the chart that no values path can point elsewhere
    placeholders: tuple[str, ...] = ()  # dotted keys still marked CHANGE-ME


def write_install_files(
    bundle_dir: Path,
    manifest: ReleaseManifest,
    images: Sequence[ResolvedImage],
    targets: Mapping[Reference, Reference],
    charts: Mapping[str, Chart],
    locations: Mapping[str, ChartLocation],
    site_values: Mapping[str, Values] | None = None,
) -> list[InstallFile]:
    """Write `bundle/values/<chart>.yaml` or the chart's custom resource for every chart of the release."""
    directory = bundle_dir / VALUES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in manifest.charts:
        overrides, unredirected = chart_overrides(images, targets, entry.name, charts.get(entry.name))
        values = merge(merge(entry.values, (site_values or {}).get(entry.name, {})), overrides)
        if entry.resource is not None:
            document = custom_resource(entry.resource, values, locations[entry.name])
            path = inside(directory, entry.resource.file, f"chart {entry.name}: resource.file", WsmError)
            kind = "resource"
        else:
            document, kind = values, "values"
            path = inside(directory, f"{entry.name}.yaml", f"chart {entry.name}", WsmError)
        path.write_text(_header(entry, kind) + yaml.safe_dump(document, sort_keys=False))
        written.append(InstallFile(entry.name, path, kind, tuple(unredirected), tuple(placeholders(document))))
    return written


def chart_overrides(
    images: Iterable[ResolvedImage], targets: Mapping[Reference, Reference], name: str, chart: Chart | None
) -> tuple[Values, list[str]]:
    """What the site sets for the release chart `name`: every image at the internal registry, and air-gapped
    mode where the chart has that switch (the W&B operator); plus the images no values path can redirect."""
    overrides, unredirected = image_overrides(images, targets, name)
    if chart is not None and "airgapped" in chart.values:
        overrides["airgapped"] = True
    return overrides, unredirected


def custom_resource(resource: CustomResource, values: Values, location: ChartLocation) -> dict[str, Any]:
    document: dict[str, Any] = copy_tree(resource.template)  # a plain tree: YAML aliases in it are not shared
    chart_ref = {"url": location.repo_url, "name": location.name, "version": location.version}
    set_path(document, resource.chart_path.split("."), chart_ref)
    template_values = get_path(document, resource.values_path) or {}
    set_path(document, resource.values_path.split("."), merge(template_values, values))
    return document


def placeholders(node: Any, path: str = "") -> list[str]:
    """Dotted keys whose value still says CHANGE-ME."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in placeholders(value, f"{path}.{key}" if path else str(key))]
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in placeholders(value, f"{path}[{i}]")]
    return [path] if isinstance(node, str) and node.startswith(PLACEHOLDER) else []


def _header(entry: ChartEntry, kind: str) -> str:
    what = "custom resource" if kind == "resource" else "values"
    return (
        f"# {what} for {entry.name}, written by wsm push: every image points at the internal registry.\n"
        f"# Keys marked {PLACEHOLDER} are the site's to fill in.\n"
    )
