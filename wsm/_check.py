"""Before anyone runs helm: is every image and chart the install will pull in the site's servers, as the bundle
carried it?

- An image: the internal registry has the tag (or the digest, for a digest-only reference) at the digest of
  the bundle's top manifest or index, and, for an index, every platform manifest the bundle kept (by digest).
- A chart: the internal Helm repository serves that version with the bundle's bytes (its sha256 equals the
  bundle's digest; a classic repository's index and download, an OCI repository's chart layer).

What to check comes from the bundle's push record (`pushed.json`) and the values files and custom resources the
push wrote, or from values files given (every image reference in them, in the shapes discovery knows). Anything
missing or different is named; nothing is changed anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ._bundle import Bundle
from ._chart import Chart
from ._chartrepo import ChartRepository, RepoAuth, open_repository
from ._discover import images_in_values
from ._exceptions import BundleError, ChartError, DigestMismatch, NotFound, WsmError
from ._http import TransportOptions
from ._lock import BundleImage
from ._push import release_targets
from ._pushed import PushedChart, PushedImage, PushRecord
from ._redact import strip_userinfo
from ._reference import Reference
from ._remote import INDEX_TYPES, RegistryClient, compute_digest
from ._target import TargetRegistry
from ._values import load_values_file


class Status(str, Enum):
    OK = "ok"
    MISSING = "missing"
    DIFFERENT = "different"
    FOREIGN = "not from the bundle"  # a values file names an image this bundle's push did not put there


@dataclass(frozen=True)
class Finding:
    kind: str  # "image" or "chart"
    name: str  # the internal reference, or "chart version"
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "status": self.status.value, "detail": self.detail}


@dataclass
class CheckReport:
    registry: str
    helm_repo: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "helm_repo": self.helm_repo, "ok": not self.problems,
                "images": [f.to_dict() for f in self.findings if f.kind == "image"],
                "charts": [f.to_dict() for f in self.findings if f.kind == "chart"]}


@dataclass(frozen=True)
class CheckOptions:
    registry: str | None = None  # default: where the bundle was pushed
    helm_repo: str | None = None
    values_files: Sequence[Path] = ()  # check the images these name instead of the written ones
    transport: TransportOptions = TransportOptions()
    repo_auth: RepoAuth = RepoAuth()


def check(bundle: Bundle, options: CheckOptions, client: RegistryClient) -> CheckReport:
    """Every image and chart of the bundle's push (or of the values files given), checked in the servers."""
    record = _record(bundle, options)
    report = CheckReport(record.registry, record.helm_repo)
    entries = {entry.reference: entry for entry in bundle.lock.release_images()}
    by_target = {image.target: image for image in record.images}
    by_source = {image.source: image for image in record.images}
    files = options.values_files or [bundle.root / name for name in record.files]
    wanted = list(by_target) if not options.values_files else []
    wanted += [ref for ref in _references(files) if ref not in wanted]
    for reference in wanted:
        pushed = by_target.get(reference)
        if pushed is None:
            report.findings.append(_foreign(reference, by_source.get(reference)))
        else:
            report.findings.append(_check_image(client, pushed, entries.get(pushed.source)))
    report.findings += _check_charts(record.charts, options, client)
    return report


def _record(bundle: Bundle, options: CheckOptions) -> PushRecord:
    """The push record, or (given the registry) what pushing the bundle there would have recorded."""
    record = PushRecord.read(bundle.root)
    if record is None:
        if options.registry is None:
            raise BundleError(f"{bundle.root} was never pushed (no push record): push it first, or name the "
                              "registry (and Helm repository) to check", path=bundle.root)
        targets = release_targets(bundle.lock.release_images(), TargetRegistry.parse(options.registry))
        return PushRecord.planned(bundle, options.registry, targets, options.helm_repo)
    if options.registry is not None and \
            TargetRegistry.parse(options.registry).base != TargetRegistry.parse(record.registry).base:
        raise _pushed_elsewhere(bundle, "registry", record.registry, options.registry)
    if options.helm_repo is not None and \
            strip_userinfo(options.helm_repo).rstrip("/") != (record.helm_repo or "").rstrip("/"):
        raise _pushed_elsewhere(bundle, "Helm repository", record.helm_repo, options.helm_repo)
    return record


def _pushed_elsewhere(bundle: Bundle, what: str, recorded: str | None, given: str) -> WsmError:
    return WsmError(f"{bundle.root} was pushed to {what} {recorded or '(none)'}, not {given}; check against the "
                    "servers it was pushed to, or push it there first")


def _references(files: Iterable[Path]) -> list[Reference]:
    """Every image reference in the values files (custom resources too), in the shapes discovery knows."""
    found: list[Reference] = []
    for path in files:
        stand_in = Chart(metadata={"name": path.name, "version": "0"}, values={})
        images = images_in_values(load_values_file(path), stand_in, path.name, "", set()).found
        found += [item.reference for item in images if item.reference not in found]
    return found


def _check_image(client: RegistryClient, pushed: PushedImage, entry: BundleImage | None) -> Finding:
    name = pushed.target.canonical
    try:
        there = client.head_manifest(pushed.target)
    except DigestMismatch as error:  # a digest reference answered with another digest
        return Finding("image", name, Status.DIFFERENT, f"the registry serves {error.actual}, the bundle has "
                       f"{pushed.digest}")
    if there is None:
        return Finding("image", name, Status.MISSING, "not in the registry")
    if there.digest != pushed.digest:
        return Finding("image", name, Status.DIFFERENT, f"the tag names {there.digest}, the bundle has {pushed.digest}")
    kept = entry.manifests if entry and entry.top.media_type in INDEX_TYPES else ()
    for manifest in kept:  # the index names them; the registry must hold each of them too
        if client.head_manifest(pushed.target.with_tag(None).with_digest(manifest.digest)) is None:
            platform = manifest.platform or "no platform"
            return Finding("image", name, Status.MISSING,
                           f"the manifest for {platform}, {manifest.digest}, is not in the registry")
    platforms = ", ".join(str(p) for p in entry.platforms) if entry else ""
    return Finding("image", name, Status.OK, pushed.digest + (f" ({platforms})" if platforms else ""))


def _foreign(reference: Reference, pushed_from: PushedImage | None) -> Finding:
    if pushed_from is not None:
        return Finding("image", reference.canonical, Status.FOREIGN,
                       f"the source image; the bundle pushed it as {pushed_from.target.canonical}")
    return Finding("image", reference.canonical, Status.FOREIGN, "no image of the bundle was pushed as this")


def _check_charts(charts: Sequence[PushedChart], options: CheckOptions, client: RegistryClient) -> list[Finding]:
    findings: list[Finding] = []
    repositories: dict[str, ChartRepository] = {}
    try:
        for chart in charts:
            if chart.repo not in repositories:  # an OCI repository reuses the registry client of the images
                repositories[chart.repo] = open_repository(chart.repo, transport=options.transport,
                                                           auth=options.repo_auth, registry_client=client)
            findings.append(_check_chart(repositories[chart.repo], chart))
    finally:
        for repository in repositories.values():
            repository.close()
    return findings


def _check_chart(repository: ChartRepository, chart: PushedChart) -> Finding:
    name = f"{chart.name} {chart.version}"
    try:
        fetched = repository.fetch(chart.name, chart.version)
    except NotFound:
        return Finding("chart", name, Status.MISSING, f"not in {chart.repo}")
    except DigestMismatch as error:
        return Finding("chart", name, Status.DIFFERENT, f"{chart.repo} serves other bytes ({error.actual}), the "
                       f"bundle has {chart.digest}")
    except ChartError as error:
        return Finding("chart", name, Status.DIFFERENT, f"{chart.repo} serves what is not this chart ({error})")
    digest = compute_digest(fetched.archive or b"")
    if digest != chart.digest:
        return Finding("chart", name, Status.DIFFERENT, f"{chart.repo} serves {digest}, the bundle has {chart.digest}")
    return Finding("chart", name, Status.OK, f"{chart.repo} {digest}")
