"""The offline half: a verified bundle into the site's registry and Helm repository.

Images go up byte for byte (manifests too, so digests in the internal registry equal the upstream ones),
children of an index before the index. A blob the target already has is not sent again; one that another
repository of the same registry has is mounted. A tag that exists with another digest is a policy decision
(`fail`, `skip`, `overwrite`), never a silent overwrite. A rerun sends only what is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ._bundle import Bundle
from ._chart import Chart, chart_from_archive
from ._chartrepo import ChartRepository, RepoAuth, open_repository
from ._exceptions import BundleError, Hint, TagConflict, WsmError
from ._files import write_atomically
from ._http import TransportOptions
from ._install import ChartLocation, chart_overrides, write_install_files
from ._layout import blob_member, tar_members
from ._lock import BundleImage
from ._manifest import ReleaseManifest
from ._model import ResolvedImage
from ._overrides import rewrite_values_file
from ._progress import NO_PROGRESS, Progress
from ._reference import Reference
from ._remote import Descriptor, FileSegment, Manifest, RegistryClient
from ._runbook import MovedChart, MovedImage, runbook
from ._target import TargetRegistry, load_mapping, plan_targets
from ._values import Values
from ._verify import check_before_push

RUNBOOK_FILE = "RUNBOOK.md"
Describe = Callable[[WsmError], str]


class OnExisting(str, Enum):
    """What to do with a tag the target already has at another digest."""

    FAIL = "fail"
    SKIP = "skip"
    OVERWRITE = "overwrite"


class PushResult(str, Enum):
    """What happened to one image; the values are what reports and the runbook print."""

    SENT = "sent"
    PRESENT = "present"  # the target already had this digest under the tag
    SKIPPED = "skipped (tag exists)"  # another digest is there and the policy said skip
    WOULD_SEND = "would send"  # a dry run
    FAILED = "failed"


@dataclass
class ImagePush:
    source: Reference
    target: Reference
    digest: str  # of what goes under the tag: the bundle's top manifest or index
    result: PushResult = PushResult.FAILED
    bytes_sent: int = 0
    blobs_sent: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    error: WsmError | None = None  # why it failed or was skipped

    def moved(self) -> MovedImage:
        return MovedImage(self.source.canonical, self.digest, self.target.canonical, self.result.value, self.bytes_sent)

    def to_dict(self, describe: Describe = str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source.canonical, "target": self.target.canonical, "digest": self.digest,
            "result": self.result.value, "bytes_sent": self.bytes_sent, "blobs_sent": self.blobs_sent,
            "blobs_present": self.blobs_present, "blobs_mounted": self.blobs_mounted,
        }
        if self.error is not None:
            data["error"] = describe(self.error)
        return data


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
    targets: Mapping[Reference, Reference],
    client: RegistryClient,
    *,
    on_existing: OnExisting = OnExisting.FAIL,
    concurrency: int = 4,
    dry_run: bool = False,
    progress: Progress = NO_PROGRESS,
) -> list[ImagePush]:
    """Push the images of the bundle's release; one failing does not stop the others (its error is recorded)."""
    pusher = _ImagePusher(client, on_existing, dry_run, progress)

    def one(entry: BundleImage) -> ImagePush:
        job = ImagePush(entry.reference, targets[entry.reference], entry.top.digest)
        try:
            pusher.push(bundle.path(entry), entry, job)
        except WsmError as error:
            job.result, job.error = PushResult.FAILED, error
        return job

    entries = bundle.lock.release_images()
    progress.expect(sum(blob.size for entry in entries for blob in entry.blobs))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, entries))


class _Tarball:
    """An image tarball of the bundle, read in place: blobs are segments of the file, never extracted."""

    def __init__(self, path: Path):
        self.path = path
        self.members = tar_members(path)

    def segment(self, descriptor: Descriptor) -> FileSegment:
        name = blob_member(descriptor.digest)
        if name not in self.members:
            raise BundleError(f"{self.path.name}: blob {descriptor.digest} is missing; run wsm verify, then download "
                              "again", path=self.path)
        offset, size = self.members[name]
        if size != descriptor.size:
            raise BundleError(f"{self.path.name}: blob {descriptor.digest} holds {size} bytes, not {descriptor.size}",
                              path=self.path)
        return FileSegment(self.path, offset, size)

    def manifest(self, descriptor: Descriptor) -> Manifest:
        """A manifest or index of the tarball, checked against its digest (push reads no blob twice, and
        these are read before any blob is sent)."""
        segment = self.segment(descriptor)
        with open(self.path, "rb") as handle:
            handle.seek(segment.offset)
            manifest = Manifest.from_bytes(handle.read(segment.size), descriptor.media_type)
        if manifest.digest != descriptor.digest:
            raise BundleError(f"{self.path.name}: manifest {descriptor.digest} hashes to {manifest.digest}; run wsm "
                              "verify, then copy the file again", path=self.path)
        return manifest


@dataclass
class _ImagePusher:
    client: RegistryClient
    on_existing: OnExisting
    dry_run: bool
    progress: Progress
    mounts: _Mounts = field(default_factory=_Mounts)

    def push(self, path: Path, entry: BundleImage, job: ImagePush) -> None:
        target = job.target
        # The tag first: an image already there at the same digest costs one HEAD, and its tarball is not opened.
        if not self._tag_allows(target, entry.top, job):
            self.progress.advance(sum(blob.size for blob in entry.blobs))
            return
        tarball = _Tarball(path)
        top_manifest = tarball.manifest(entry.top)
        children = [tarball.manifest(child) for child in top_manifest.children()]
        for manifest in children + [top_manifest]:  # an index only after every manifest it names
            for blob in [] if manifest.is_index else [manifest.config(), *manifest.layers()]:
                self._blob(tarball, blob, target, job)
            if not self.dry_run:
                # Children go by digest; the top under the tag (or by digest when the source named none).
                by_digest = target.with_tag(None).with_digest(manifest.digest)
                where = target.with_digest(None) if manifest is top_manifest and target.tag else by_digest
                self.client.put_manifest(where, manifest.raw, manifest.media_type)
        job.result = PushResult.WOULD_SEND if self.dry_run else PushResult.SENT

    def _tag_allows(self, target: Reference, top: Descriptor, job: ImagePush) -> bool:
        """False when there is nothing to do: the same digest is there, or the tag policy says skip."""
        existing = self.client.head_manifest(target)
        if existing is None or (self.on_existing is OnExisting.OVERWRITE and existing.digest != top.digest):
            return True
        if existing.digest == top.digest:
            job.result = PushResult.PRESENT
            return False
        conflict = TagConflict(
            f"{target.canonical} already exists with digest {existing.digest}, the bundle has {top.digest}",
            hint=Hint.ON_EXISTING,
        )
        if self.on_existing is OnExisting.SKIP:
            job.result, job.error = PushResult.SKIPPED, conflict
            return False
        raise conflict

    def _blob(self, tarball: _Tarball, blob: Descriptor, target: Reference, job: ImagePush) -> None:
        if self.client.has_blob(target, blob.digest):
            job.blobs_present += 1
            self.progress.advance(blob.size)
        elif self.dry_run:
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        elif self._mounted(blob, target):
            job.blobs_mounted += 1
            self.progress.advance(blob.size)
        else:
            self.client.push_blob(target, blob, tarball.segment(blob), self.progress.advance, known_missing=True)
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        self.mounts.record(blob.digest, target.repository)

    def _mounted(self, blob: Descriptor, target: Reference) -> bool:
        other = self.mounts.source_for(blob.digest, target.repository)
        return other is not None and self.client.mount_blob(target, blob.digest, other)


def image_totals(jobs: Sequence[ImagePush]) -> dict[str, int]:
    return {
        "images": len(jobs),
        "sent": sum(1 for j in jobs if j.result is PushResult.SENT),
        "failed": sum(1 for j in jobs if j.result is PushResult.FAILED),
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
    on_existing: OnExisting = OnExisting.FAIL
    concurrency: int = 4
    dry_run: bool = False
    site_values: Mapping[str, Values] = field(default_factory=dict)  # by chart name
    user_values_files: Mapping[str, Path] = field(default_factory=dict)  # by chart name: rewritten in place
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
        return [job for job in self.images if job.result is PushResult.FAILED]

    def to_dict(self, describe: Describe = str) -> dict[str, Any]:
        """As data; `describe` words the errors (the CLI words their remedies with its options)."""
        return {
            "registry": self.registry,
            "helm_repo": self.helm_repo,
            "dry_run": self.dry_run,
            "totals": image_totals(self.images),
            "images": [job.to_dict(describe) for job in self.images],
            "charts": [chart.to_dict() for chart in self.charts],
            "files": self.files,
        }


def push_release(
    bundle: Bundle, options: PushOptions, client: RegistryClient, *,
    progress: Progress = NO_PROGRESS, transport: TransportOptions | None = None,
) -> PushReport:
    """Check the bundle, push its images and charts, write values, custom resources and the runbook.

    The check up front covers the lock, SHA256SUMS and every file but the image tarballs (their sizes only);
    a tarball's blobs are hashed as they are read for upload, its manifests when read (`wsm verify` is the
    full pass)."""
    check_before_push(bundle)
    release = bundle.release
    registry = TargetRegistry.parse(options.registry)
    mapping = load_mapping(options.mapping) if options.mapping else None
    entries = bundle.lock.release_images()
    images = [entry.resolved for entry in entries]
    targets = plan_targets([entry.reference for entry in entries], registry, mapping)
    jobs = push_images(bundle, targets, client, on_existing=options.on_existing, concurrency=options.concurrency,
                       dry_run=options.dry_run, progress=progress)
    charts, moved, locations = _push_charts(bundle, release, options, client, transport or TransportOptions())
    report = PushReport(options.registry, options.helm_repo, jobs, moved, [], None, options.dry_run)
    if options.dry_run or not options.helm_repo or not release.charts:
        return report
    files = write_install_files(bundle.root, release, images, targets, charts, locations, options.site_values)
    rewritten = [_rewrite_user_values(path, name, images, targets, charts) for name, path in
                 options.user_values_files.items()]
    report.runbook = runbook(release, bundle.root, registry.base, locations, files, [job.moved() for job in jobs],
                             moved)
    write_atomically(bundle.root / RUNBOOK_FILE, report.runbook.encode())
    report.files = [str(f.path) for f in files] + [str(bundle.root / RUNBOOK_FILE)] + rewritten
    return report


def _rewrite_user_values(path: Path, chart: str, images: Sequence[ResolvedImage],
                         targets: Mapping[Reference, Reference], charts: Mapping[str, Chart]) -> str:
    overrides, _ = chart_overrides(images, targets, chart, charts.get(chart))
    backup = rewrite_values_file(path, overrides)
    return f"{path} (backup {backup.name})"


def _push_charts(
    bundle: Bundle, manifest: ReleaseManifest, options: PushOptions, client: RegistryClient,
    transport: TransportOptions,
) -> tuple[dict[str, Chart], list[MovedChart], dict[str, ChartLocation]]:
    charts: dict[str, Chart] = {}
    moved: list[MovedChart] = []
    locations: dict[str, ChartLocation] = {}
    by_name = {c.name: c for c in bundle.lock.release_charts()}
    repository: ChartRepository | None = None  # opened once, at the first chart to publish
    try:
        for entry in manifest.charts:
            locked = by_name.get(entry.source.chart)
            if locked is None:
                raise BundleError(f"the bundle has no chart {entry.source.chart} for {entry.name}; download again",
                                  path=bundle.root)
            archive = bundle.path(locked).read_bytes()
            chart = chart_from_archive(archive, locked.file)
            charts[entry.name] = chart
            if not options.helm_repo:
                continue
            locations[entry.name] = ChartLocation(options.helm_repo, chart.name, chart.version)
            if options.dry_run:
                moved.append(MovedChart(chart.name, chart.version, options.helm_repo, "would publish"))
                continue
            if repository is None:  # an OCI repository reuses the registry client of the images
                repository = open_repository(options.helm_repo, transport=transport, auth=options.repo_auth,
                                             registry_client=client, repo_type=options.helm_repo_type)
            published = repository.publish(archive, chart.metadata)
            moved.append(MovedChart(chart.name, chart.version, published.url, "sent" if published.sent else "present"))
    finally:
        if repository is not None:
            repository.close()
    return charts, moved, locations
