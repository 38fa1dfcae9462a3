"""Proof by rendering that the values wsm writes point every image at the internal registry.

Push renders each chart it installs with the values file it wrote (for a chart an operator installs, with the
custom resource's values); download does the same before it fetches anything, with the overrides the
bundle's own mapping would give under a stand-in registry, so that a gap is found on the connected side.
Every rendered image field must be the expected internal reference, or an image known to be hard-coded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ._bind import Proof, prove
from ._exceptions import ProofFailed, RenderError, WsmError
from ._install import InstallFile, chart_overrides
from ._manifest import ChartEntry, ReleaseManifest
from ._model import ResolvedChart, ResolvedImage
from ._reference import Reference
from ._render import Renderings, helm_if_any
from ._target import TargetRegistry, plan_targets
from ._values import Values, get_path, load_values_file, merge
from ._yaml import load_yaml, read_document

# A registry no one runs: the download-side proof only needs names that are unmistakably internal.
STAND_IN_REGISTRY = "internal.wsm-proof.invalid/site"
_SHOWN = 5


def helm_available(helm: str | None) -> bool:
    return helm_if_any(helm) is not None


def installed_values(entry: ChartEntry, written: InstallFile) -> Values:
    """The values helm will install `entry` with, read back from the file wsm wrote (within the YAML budget of
    every file wsm reads: it carries the site's values too)."""
    where = f"values file {written.path}"
    document = load_yaml(read_document(written.path, where, WsmError), where, WsmError) or {}
    if written.kind == "resource" and entry.resource is not None:
        values = get_path(document, entry.resource.values_path)
        return values if isinstance(values, dict) else {}
    return document if isinstance(document, dict) else {}


def prove_install(
    release: ReleaseManifest, written: Sequence[InstallFile], archives: Mapping[str, Path],
    images: Sequence[ResolvedImage], targets: Mapping[Reference, Reference], helm: str | None,
    user_files: Mapping[str, Path] | None = None, renderings: Renderings | None = None,
) -> list[Proof]:
    """Render every chart of the release with the values wsm wrote for it; raise naming what is not internal.
    A chart with one of `user_files` (the user's own values files, which push rewrote) is rendered with that file
    over wsm's values too, as `helm -f <wsm's file> -f <the user's>` would install it. `renderings`: helm's
    outputs shared with the caller's other checks of the same files."""
    renderings = renderings or Renderings(helm)
    by_chart = {item.chart: item for item in written}
    proofs = []
    for entry in release.charts:
        if entry.name in by_chart and entry.name in archives:
            values = installed_values(entry, by_chart[entry.name])
            try:
                proofs.append(_prove_entry(entry, archives[entry.name], values, images, targets, renderings))
                user_file = (user_files or {}).get(entry.name)
                if user_file is not None:
                    proofs.append(_prove_user_file(entry, archives[entry.name], values, user_file, images, targets,
                                                   renderings))
            except ProofFailed:
                raise
            except RenderError as error:  # a site key still CHANGE-ME that a template requires, for instance
                proofs.append(Proof(entry.name, unrendered=f"{entry.name} did not render ({error})"))
    raise_on_problems(proofs)
    return proofs


def prove_mapping(
    release: ReleaseManifest, charts: Sequence[ResolvedChart], images: Sequence[ResolvedImage],
    user_values: Mapping[str, Values], helm: str | None, rendered: Sequence[str],
) -> list[Proof]:
    """Before a download: the overrides for the images the bundle will hold, under a stand-in registry, make
    helm render only those internal references (for the charts in `rendered`: those that rendered at all)."""
    targets = plan_targets([image.reference for image in images], TargetRegistry.parse(STAND_IN_REGISTRY))
    proofs = []
    for entry, chart in zip(release.charts, charts):
        location = chart.archive or entry.source.path
        if location is None or entry.name not in rendered:
            continue
        overrides, _ = chart_overrides(images, targets, entry.name, None)
        values = merge(merge(entry.values, user_values.get(entry.name, {})), overrides)
        proofs.append(_prove_entry(entry, location, values, images, targets, Renderings(helm)))
    raise_on_problems(proofs)
    return proofs


def _prove_user_file(entry: ChartEntry, location: Path, values: Values, user_file: Path,
                     images: Sequence[ResolvedImage], targets: Mapping[Reference, Reference],
                     renderings: Renderings) -> Proof:
    """The proof of `values` with the user's file over them; its problems say that file is why."""
    proof = _prove_entry(entry, location, merge(values, load_values_file(user_file)), images, targets, renderings)
    proof.problems[:] = [f"{problem} (with the values file {user_file})" for problem in proof.problems]
    return proof


def _prove_entry(entry: ChartEntry, location: Path, values: Values, images: Sequence[ResolvedImage],
                 targets: Mapping[Reference, Reference], renderings: Renderings) -> Proof:
    return prove(location, values, chart=entry.name, release=entry.release or entry.name,
                 namespace=entry.namespace, images=images, targets=targets, renderings=renderings)


def raise_on_problems(proofs: Sequence[Proof]) -> None:
    problems = [problem for proof in proofs for problem in proof.problems]
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise ProofFailed("rendered with the values wsm writes, not every image is internal: "
                          + "; ".join(problems[:_SHOWN]) + more)


def proof_summary(proofs: Sequence[Proof]) -> str:
    """One line: how many rendered references were checked, and the hard-coded ones left as they are."""
    done = [proof for proof in proofs if proof.unrendered is None]
    checked = sum(proof.checked for proof in done)
    hardcoded = sorted({image for proof in done for image in proof.hardcoded})
    charts = len({proof.chart for proof in done})
    line = f"rendered {charts} charts with the written values"
    if len(done) > charts:  # a chart rendered a second time with the user's own values file over wsm's
        line += f" ({len(done) - charts} also with the user's values files)"
    line += f": {checked} image references, all internal"
    if hardcoded:
        line += f" except {len(hardcoded)} hard-coded in templates ({', '.join(hardcoded)})"
    skipped = [proof.unrendered for proof in proofs if proof.unrendered is not None]
    if skipped:
        line += "; not proved: " + "; ".join(skipped)
    return line
