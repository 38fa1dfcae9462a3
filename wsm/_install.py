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
from ._files import write_atomically
from ._format import one_line
from ._manifest import ChartEntry, CustomResource, ReleaseManifest
from ._model import ResolvedImage
from ._names import inside
from ._overrides import image_overrides, image_paths
from ._pullsecret import pull_secret_overrides
from ._reference import Reference
from ._values import Values, copy_tree, get_path, merge, set_path

PLACEHOLDER = "CHANGE-ME"
VALUES_DIR = "values"


@dataclass(frozen=True)
class ChartLocation:
    """Where a chart sits in the internal Helm repository, as helm and an operator address it."""

    repo_url: str  # https://charts.corp or oci://registry.corp/charts, never with credentials
    name: str
    version: str
    username: str | None = None  # the user the repository URL was given with (its password is not kept)

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
    pull_secret_keys: tuple[str, ...] = ()  # dotted keys set to the pull secret (none: the chart takes none)


def write_install_files(
    bundle_dir: Path,
    manifest: ReleaseManifest,
    images: Sequence[ResolvedImage],
    targets: Mapping[Reference, Reference],
    charts: Mapping[str, Chart],
    locations: Mapping[str, ChartLocation],
    site_values: Mapping[str, Values] | None = None,
    pull_secret: str | None = None,
) -> list[InstallFile]:
    """Write `bundle/values/<chart>.yaml` or the chart's custom resource for every chart of the release;
    `pull_secret` names the secret every chart is to pull with."""
    directory = bundle_dir / VALUES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in manifest.charts:
        overrides, unredirected = chart_overrides(images, targets, entry.name, charts.get(entry.name))
        user = merge(entry.values, (site_values or {}).get(entry.name, {}))
        secrets, secret_keys = pull_secret_values(images, entry.name, charts.get(entry.name), user, pull_secret)
        values = merge(merge(user, secrets), overrides)
        path = install_file_path(bundle_dir, entry)
        if entry.resource is not None:
            document, kind = custom_resource(entry.resource, values, locations[entry.name]), "resource"
        else:
            document, kind = values, "values"
        # Atomically: a rename replaces whatever is at the path (a link planted in a copied bundle is not
        # followed), and a killed push leaves no half-written values file.
        write_atomically(path, (_header(entry, kind) + yaml.safe_dump(document, sort_keys=False)).encode())
        written.append(InstallFile(entry.name, path, kind, tuple(unredirected), tuple(placeholders(document)),
                                   tuple(secret_keys)))
    return written


def install_file_path(bundle_dir: Path, entry: ChartEntry) -> Path:
    """Where the values file or custom resource of `entry` goes: inside the bundle's values directory, whatever
    the names (they come from a manifest the bundle carries)."""
    if entry.resource is not None:
        return inside(bundle_dir / VALUES_DIR, entry.resource.file, f"chart {entry.name}: resource.file", WsmError)
    return inside(bundle_dir / VALUES_DIR, f"{entry.name}.yaml", f"chart {entry.name}", WsmError)


def pull_secret_values(
    images: Iterable[ResolvedImage], name: str, chart: Chart | None, user: Values, secret: str | None
) -> tuple[Values, list[str]]:
    """The values naming `secret` wherever the release chart `name` takes pull secrets, and the keys set."""
    if secret is None or chart is None:
        return {}, []
    return pull_secret_overrides(chart, user, image_paths(images, name), secret)


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
        f"# {what} for {one_line(entry.name)}, written by wsm push: every image points at the internal registry.\n"
        f"# Keys marked {PLACEHOLDER} are the site's to fill in.\n"
    )
