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
from ._nodefiles import NODE_FILES_DIR, NodeFiles, on_node

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
    nodes: NodeFiles | None = None,
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
    if nodes is not None and nodes.files:
        lines += _node_files_step(step, nodes, bundle_dir)
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
    lines += _image_table(images) + [""] + _chart_table(charts)
    return "\n".join(lines) + "\n"


def _helm_install(entry: ChartEntry, location: ChartLocation, file: InstallFile, bundle_dir: Path) -> str:
    chart = location.oci_ref if location.is_oci else f"{REPO_ALIAS}/{location.name}"
    release = entry.release or entry.name
    return (
        f"helm upgrade --install {release} {chart} --version {location.version} "
        f"-n {entry.namespace} --create-namespace -f {_shown(file.path, bundle_dir)} \\\n"
        f"  {_post_renderer(bundle_dir)}"
    )


def _post_renderer(bundle_dir: Path) -> str:
    """helm's options that pass the rendered manifests through `wsm rewrite` with this bundle's names:
    images a chart hard-codes point inside too, and one the bundle lacks fails the install, naming it."""
    args = ["rewrite", "--bundle", bundle_dir.name]
    return "--post-renderer wsm " + " ".join(f"--post-renderer-args {arg}" for arg in args)


# What an operator runs per runtime after copying its subtree into `/`, and what it is for.
_RUNTIMES = {
    "containerd": ("containerd (kubeadm and most clusters)",
                   'needs `config_path = "/etc/containerd/certs.d"` under the CRI registry plugin in '
                   "/etc/containerd/config.toml (then `systemctl restart containerd`); files there are read at "
                   "each pull"),
    "containers": ("CRI-O, podman, buildah", "CRI-O: `systemctl reload crio`"),
    "docker": ("Docker hosts (single-host installs)", "the CA only: Docker has no mirror with a path prefix"),
    "k3s": ("k3s", "merge into an existing registries.yaml; then `systemctl restart k3s` (k3s-agent on agents)"),
    "rke2": ("RKE2", "merge into an existing registries.yaml; then `systemctl restart rke2-server` "
             "(rke2-agent on agents)"),
}


def _node_files_step(step: int, nodes: NodeFiles, bundle_dir: Path) -> list[str]:
    """Copying the mirror and CA files onto every node, one subtree per container runtime."""
    root = Path(bundle_dir.name) / NODE_FILES_DIR
    what = "mirror rules" + (" and the registry's CA" if nodes.has_ca else "")
    lines = [f"## {step}. Set up the nodes' container runtimes", "",
             f"`{root}/` holds {what} for each container runtime, laid out as the node's root: on every node "
             "(servers too, where they run pods), as root, copy the subtree of its runtime into `/`. The mirrors "
             "send pulls of images hard-coded in charts (by their upstream names) to the internal registry, "
             "under the names push gave them.", "", "```sh"]
    for runtime in nodes.runtimes:
        label, after = _RUNTIMES[runtime]
        lines.append(f"cp -r {root / runtime}/. /    # {label}: {after}")
    lines += ["```", "", "| on the node | file |", "|---|---|"]
    lines += [f"| `{on_node(path)}` | `{root / path}` |" for path in sorted(nodes.files)]
    lines.append("")
    if nodes.exceptions:
        names = ", ".join(f"`{image.source.name}` -> `{image.target.name}`" for image in nodes.exceptions)
        lines += [f"Pushed under names of their own (a mapping): {names}. Only the CRI-O/podman drop-in names "
                  "them; on containerd, k3s and RKE2 nodes deploy them through `wsm rewrite`.", ""]
    return lines


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
    return [f"Note: no values path sets {images}; the chart hard-codes it. It is in the internal registry: the "
            "post-renderer (`wsm rewrite`) points it there, and the node mirror files send its pulls there where "
            "the post-renderer cannot reach (helm 3 does not pass hooks through a post-renderer; an operator "
            "renders its charts itself).", ""]


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
