"""The offline half: a verified bundle into the site's registry and Helm repository.

Images go up byte for byte (manifests too, so digests in the internal registry equal the upstream ones),
children of an index before the index. A blob the target already has is not sent again; one that another
repository of the same registry has is mounted. A tag that exists with another digest is a policy decision
(`fail`, `skip`, `overwrite`), never a silent overwrite. A rerun sends only what is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._bundle import Bundle, Lock, LockedImage, verify, write_atomically
from ._chart import Chart, chart_from_archive
from ._exceptions import BundleError, TagConflict, WsmError
from ._fetch import ChartSource
from ._helmoci import push_chart
from ._helmrepo import RepoAuth, publish_chart
from ._http import TransportOptions
from ._install import ChartLocation, write_install_files
from ._layout import blob_member, tar_members
from ._manifest import ChartEntry, ReleaseManifest, parse_manifest
from ._model import ResolvedImage
from ._overrides import image_overrides, rewrite_values_file
from ._reference import Reference
from ._remote import Descriptor, FileSegment, Manifest, RegistryClient
from ._runbook import MovedChart, MovedImage, runbook
from ._target import TargetRegistry, load_mapping, plan_targets
from ._values import Values

ON_EXISTING = ("fail", "skip", "overwrite")


@dataclass
class ImagePush:
    source: str
    target: str
    digest: str
    result: str = ""
    bytes_sent: int = 0
    blobs_sent: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    error: str | None = None

    def moved(self) -> MovedImage:
        return MovedImage(self.source, self.digest, self.target, self.result, self.bytes_sent)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class _Mounts:
    """Which repository of the target registry already holds a blob (pushed or found in this run)."""

    where: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def source_for(self, digest: str, repository: str) -> str | None:
        with self.lock:
            other = self.where.get(digest)
        return other if other and other != repository else None

    def record(self, digest: str, repository: str) -> None:
        with self.lock:
            self.where.setdefault(digest, repository)


def push_images(
    bundle: Bundle,
    lock: Lock,
    targets: dict[Reference, Reference],
    client: RegistryClient,
    *,
    on_existing: str = "fail",
    concurrency: int = 4,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[ImagePush]:
    """Push every image of the bundle; one image failing does not stop the others (its error is recorded)."""
    pusher = _ImagePusher(client, on_existing, dry_run, progress or _ignore)

    def one(entry: LockedImage) -> ImagePush:
        target = targets[Reference.parse(entry.image)]
        job = ImagePush(entry.image, target.canonical, entry.top["digest"])
        try:
            pusher.push(_Tarball(bundle.root / entry.file), entry, target, job)
        except WsmError as error:
            job.result, job.error = "failed", str(error)
        return job

    entries = [entry for entry in lock.images.values() if entry.in_release]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, entries))


def _ignore(_: int) -> None:
    pass


class _Tarball:
    """An image tarball of the bundle, read in place: blobs are segments of the file, never extracted."""

    def __init__(self, path: Path):
        self.path = path
        self.members = tar_members(path)

    def segment(self, descriptor: Descriptor) -> FileSegment:
        name = blob_member(descriptor.digest)
        if name not in self.members:
            raise BundleError(f"{self.path.name}: blob {descriptor.digest} is missing; run wsm verify, then download again")
        offset, size = self.members[name]
        if size != descriptor.size:
            raise BundleError(f"{self.path.name}: blob {descriptor.digest} holds {size} bytes, not {descriptor.size}")
        return FileSegment(self.path, offset, size)

    def manifest(self, descriptor: Descriptor) -> Manifest:
        segment = self.segment(descriptor)
        with open(self.path, "rb") as handle:
            handle.seek(segment.offset)
            return Manifest.from_bytes(handle.read(segment.size), descriptor.media_type)


@dataclass
class _ImagePusher:
    client: RegistryClient
    on_existing: str
    dry_run: bool
    progress: Callable[[int], None]
    mounts: _Mounts = field(default_factory=_Mounts)

    def push(self, tarball: _Tarball, entry: LockedImage, target: Reference, job: ImagePush) -> None:
        top = Descriptor.from_dict(entry.top, f"{entry.file} index.json")
        if not self._tag_allows(target, top, job):
            return
        top_manifest = tarball.manifest(top)
        children = [tarball.manifest(child) for child in top_manifest.children()]
        for manifest in children + [top_manifest]:  # an index only after every manifest it names
            for blob in [] if manifest.is_index else [manifest.config(), *manifest.layers()]:
                self._blob(tarball, blob, target, job)
            if not self.dry_run:
                # Children go by digest; the top under the tag (or by digest when the source named none).
                by_digest = target.with_tag(None).with_digest(manifest.digest)
                where = target.with_digest(None) if manifest is top_manifest and target.tag else by_digest
                self.client.put_manifest(where, manifest.raw, manifest.media_type)
        job.result = "would send" if self.dry_run else "sent"

    def _tag_allows(self, target: Reference, top: Descriptor, job: ImagePush) -> bool:
        """False when there is nothing to do: the same digest is there, or the tag policy says skip."""
        existing = self.client.head_manifest(target)
        if existing is None or (self.on_existing == "overwrite" and existing.digest != top.digest):
            return True
        if existing.digest == top.digest:
            job.result = "present"
            return False
        message = (f"{target.canonical} already exists with digest {existing.digest}, the bundle has {top.digest}; "
                   "use --on-existing skip or overwrite if that is intended")
        if self.on_existing == "skip":
            job.result, job.error = "skipped (tag exists)", message
            return False
        raise TagConflict(message)

    def _blob(self, tarball: _Tarball, blob: Descriptor, target: Reference, job: ImagePush) -> None:
        if self.client.has_blob(target, blob.digest):
            job.blobs_present += 1
            self.progress(blob.size)
        elif self.dry_run:
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        elif self._mounted(blob, target):
            job.blobs_mounted += 1
            self.progress(blob.size)
        else:
            self.client.push_blob(target, blob, tarball.segment(blob), self.progress)
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        self.mounts.record(blob.digest, target.repository)

    def _mounted(self, blob: Descriptor, target: Reference) -> bool:
        other = self.mounts.source_for(blob.digest, target.repository)
        return bool(other) and self.client.mount_blob(target, blob.digest, other)


def image_totals(jobs: Sequence[ImagePush]) -> dict[str, int]:
    return {
        "images": len(jobs),
        "sent": sum(1 for j in jobs if j.result == "sent"),
        "failed": sum(1 for j in jobs if j.result == "failed"),
        "bytes_sent": sum(j.bytes_sent for j in jobs),
        "blobs_sent": sum(j.blobs_sent for j in jobs),
        "blobs_present": sum(j.blobs_present for j in jobs),
        "blobs_mounted": sum(j.blobs_mounted for j in jobs),
    }



# --- the whole push: verify, images, charts, install files, runbook ------------------------------------------------


@dataclass(frozen=True)
class PushOptions:
    registry: str  # registry.corp[/prefix]
    helm_repo: str | None = None  # oci://... or https://...
    helm_repo_type: str = "auto"
    mapping: Path | None = None
    on_existing: str = "fail"
    concurrency: int = 4
    dry_run: bool = False
    site_values: dict[str, Values] = field(default_factory=dict)  # by chart name
    user_values_files: dict[str, Path] = field(default_factory=dict)  # by chart name: rewritten in place
    repo_auth: RepoAuth = field(default_factory=RepoAuth)


@dataclass
class PushReport:
    registry: str
    helm_repo: str | None
    images: list[ImagePush]
    charts: list[MovedChart]
    files: list[str]
    runbook: str | None
    dry_run: bool

    @property
    def failures(self) -> list[ImagePush]:
        return [job for job in self.images if job.result == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "helm_repo": self.helm_repo,
            "dry_run": self.dry_run,
            "totals": image_totals(self.images),
            "images": [job.to_dict() for job in self.images],
            "charts": [chart.__dict__ for chart in self.charts],
            "files": self.files,
        }


def push_release(
    bundle_dir: Path, options: PushOptions, client: RegistryClient, *,
    progress: Callable[[int], None] | None = None, transport: TransportOptions | None = None,
) -> PushReport:
    """Verify the bundle, push its images and charts, write values, custom resources and the runbook."""
    verify(bundle_dir)
    bundle = Bundle(bundle_dir)
    lock = bundle.read_lock()
    manifest = release_of(lock)
    registry = TargetRegistry.parse(options.registry)
    mapping = load_mapping(options.mapping) if options.mapping else None
    images = [ResolvedImage.from_dict(e.resolved) for e in lock.images.values() if e.in_release]
    targets = plan_targets([Reference.parse(e.image) for e in lock.images.values() if e.in_release], registry, mapping)
    jobs = push_images(bundle, lock, targets, client, on_existing=options.on_existing,
                       concurrency=options.concurrency, dry_run=options.dry_run, progress=progress)
    charts, moved, locations = _push_charts(bundle, lock, manifest, options, client, transport or TransportOptions())
    report = PushReport(options.registry, options.helm_repo, jobs, moved, [], None, options.dry_run)
    if options.dry_run or not options.helm_repo or not manifest.charts:
        return report
    files = write_install_files(bundle.root, manifest, images, targets, charts, locations, options.site_values)
    for name, path in options.user_values_files.items():
        overrides, _ = image_overrides(images, targets, name)
        if name in charts and "airgapped" in charts[name].values:
            overrides["airgapped"] = True
        backup = rewrite_values_file(path, overrides)
        report.files.append(f"{path} (backup {backup.name})")
    report.runbook = runbook(manifest, bundle.root, registry.base, locations, files,
                             [job.moved() for job in jobs], moved)
    write_atomically(bundle.root / RUNBOOK_FILE, report.runbook.encode())
    report.files = [str(f.path) for f in files] + [str(bundle.root / RUNBOOK_FILE)] + report.files
    return report


RUNBOOK_FILE = "RUNBOOK.md"


def release_of(lock: Lock) -> ReleaseManifest:
    """The release the bundle was made for: its manifest, or (a --chart bundle) one entry per chart."""
    if lock.manifest:
        return parse_manifest(lock.manifest, "the bundle's release manifest", base=None)
    entries = tuple(
        ChartEntry(name=c.name, group=c.group, source=ChartSource(chart=c.name, version=c.version, repo=c.source),
                   release=c.release)
        for c in lock.charts.values() if c.in_release
    )
    return ReleaseManifest("", "", entries, (), None, "bundle", "")  # no chart: an images-only bundle


def _push_charts(
    bundle: Bundle, lock: Lock, manifest: ReleaseManifest, options: PushOptions, client: RegistryClient,
    transport: TransportOptions,
) -> tuple[dict[str, Chart], list[MovedChart], dict[str, ChartLocation]]:
    charts: dict[str, Chart] = {}
    moved: list[MovedChart] = []
    locations: dict[str, ChartLocation] = {}
    by_name = {c.name: c for c in lock.charts.values() if c.in_release}
    for entry in manifest.charts:
        locked = by_name.get(entry.source.chart)
        if locked is None:
            raise BundleError(f"the bundle has no chart {entry.source.chart} for {entry.name}; download again")
        archive = (bundle.root / locked.file).read_bytes()
        chart = chart_from_archive(archive, locked.file)
        charts[entry.name] = chart
        if not options.helm_repo:
            continue
        locations[entry.name] = ChartLocation(options.helm_repo, chart.name, chart.version)
        if options.dry_run:
            moved.append(MovedChart(chart.name, chart.version, options.helm_repo, "would publish"))
            continue
        if options.helm_repo.startswith("oci://"):
            published = push_chart(client, options.helm_repo, archive, chart.metadata)
        else:
            published = publish_chart(options.helm_repo, archive, chart.metadata, transport, options.repo_auth,
                                      options.helm_repo_type)
        moved.append(MovedChart(chart.name, chart.version, published.url, "sent" if published.sent else "present"))
    return charts, moved, locations
