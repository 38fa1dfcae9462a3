"""The runbook and report of a push: the exact commands for this bundle and this site, and what moved.

Operators paste it into change tickets, so it is plain Markdown: steps with commands, then a table of every
image (source -> digest -> target, sent or already there) and chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._install import ChartLocation, InstallFile
from ._manifest import ChartEntry, ReleaseManifest

REPO_ALIAS = "internal"


@dataclass(frozen=True)
class MovedImage:
    source: str
    digest: str
    target: str
    result: str  # "sent", "present" (already there), "skipped" (tag policy), "failed: ..."
    bytes_sent: int = 0


@dataclass(frozen=True)
class MovedChart:
    name: str
    version: str
    target: str
    result: str  # "sent", "present" (the repository has this exact archive), "would publish" (a dry run)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "target": self.target, "result": self.result}


def runbook(
    manifest: ReleaseManifest,
    bundle_dir: Path,
    registry: str,
    locations: dict[str, ChartLocation],
    files: Sequence[InstallFile],
    images: Sequence[MovedImage],
    charts: Sequence[MovedChart],
    repinned: Sequence[tuple[str, str]] = (),
) -> str:
    lines = [f"# Offline install of {manifest.name or 'the release'} from {registry}", ""]
    lines += [f"Bundle: `{bundle_dir}`. Images are in `{registry}`; charts in `{_repo_urls(locations)}`.",
              f"Run the commands from the directory that holds `{bundle_dir.name}/`.", ""]
    step = 1
    classic = sorted({loc.repo_url for loc in locations.values() if not loc.is_oci})
    if classic:
        lines += [f"## {step}. Add the internal Helm repository", "", "```sh"]
        lines += [f"helm repo add {REPO_ALIAS} {url} && helm repo update" for url in classic] + ["```", ""]
        step += 1
    by_chart = {f.chart: f for f in files}
    for entry in manifest.charts:
        location, file = locations[entry.name], by_chart[entry.name]
        if entry.install == "operator":
            lines += [f"## {step}. Install {entry.name} through its operator", ""]
            lines += _placeholder_note(file)
            lines += ["```sh", f"kubectl apply -f {_shown(file.path, bundle_dir)}", "```", ""]
        else:
            lines += [f"## {step}. Install {entry.name}", "", "```sh", _helm_install(entry, location, file, bundle_dir)]
            lines += ["```", ""]
        lines += _unredirected_note(file)
        step += 1
    lines += _repinned_note(repinned)
    lines += _image_table(images) + [""] + _chart_table(charts)
    return "\n".join(lines) + "\n"


def _helm_install(entry: ChartEntry, location: ChartLocation, file: InstallFile, bundle_dir: Path) -> str:
    chart = location.oci_ref if location.is_oci else f"{REPO_ALIAS}/{location.name}"
    release = entry.release or entry.name
    return (
        f"helm upgrade --install {release} {chart} --version {location.version} "
        f"-n {entry.namespace} --create-namespace -f {_shown(file.path, bundle_dir)}"
    )


def _shown(path: Path, bundle_dir: Path) -> str:
    """Paths relative to the bundle's parent, as the operator runs the commands beside the bundle."""
    try:
        return str(Path(bundle_dir.name) / path.relative_to(bundle_dir))
    except ValueError:
        return str(path)


def _placeholder_note(file: InstallFile) -> list[str]:
    if not file.placeholders:
        return []
    keys = ", ".join(f"`{key}`" for key in file.placeholders)
    return [f"First fill in the site's keys marked CHANGE-ME in `{file.path.name}`: {keys}.", ""]


def _unredirected_note(file: InstallFile) -> list[str]:
    if not file.unredirected:
        return []
    images = ", ".join(f"`{image}`" for image in file.unredirected)
    return [f"Note: no values path sets {images}; the chart hard-codes it. It is in the internal registry, "
            "but the cluster needs a registry mirror rule for it.", ""]


def _repinned_note(repinned: Sequence[tuple[str, str]]) -> list[str]:
    if not repinned:
        return []
    lines = ["## Digest-pinned images", "",
             "The bundle kept only some platforms of these digest-pinned images, so the internal registry does not "
             "have the upstream digest; the values pin the digest of what was kept:", ""]
    lines += [f"- `{source}` -> `{target}`" for source, target in repinned]
    return lines + [""]


def _image_table(images: Sequence[MovedImage]) -> list[str]:
    lines = ["## Images", "", "| source | digest | target | result |", "|---|---|---|---|"]
    lines += [f"| {i.source} | `{i.digest}` | {i.target} | {i.result} |" for i in images]
    return lines


def _chart_table(charts: Sequence[MovedChart]) -> list[str]:
    lines = ["## Charts", "", "| chart | version | target | result |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.version} | {c.target} | {c.result} |" for c in charts]
    return lines


def _repo_urls(locations: dict[str, ChartLocation]) -> str:
    return ", ".join(sorted({location.repo_url for location in locations.values()}))
