"""`download`: fetch a release's images and charts from their registries into a verified, resumable bundle.

This module runs the steps; each step's idea lives in its own module:
1. plan (`_plan`): for every image, resolve its top manifest, pick the platforms, fetch the platform
   manifests, and list every blob it needs (images already complete in the bundle at the same upstream
   digest are skipped);
2. fetch and assemble (`_blobstore`, `_assemble`): each image's tarball is written in
   `.wsm-partial/images/<name>.tar.partial`, its blobs downloaded straight into their place in it (a blob
   several images share is fetched once into `.wsm-partial/blobs/` and copied in), resuming from what an
   interrupted run left (the partial tarball, Range requests); then fsync, rename into `images/`, and the
   lock file is rewritten, so a run killed at any moment leaves only complete, recorded tarballs.

A single image that fails (unknown tag, missing platform, a registry error) does not stop the others; it is
reported. A bundle-level problem (disk full, the bundle not writable) stops the run with one clear line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ._assemble import Fill, bundle_image, write_tarball
from ._blobstore import BlobStore, Stopped
from ._bundle import BundleDir, assign_names, chart_stem, image_stem, write_checksums
from ._delta import DeltaBase, base_blobs_expected, check_same_base, leave_out_base
from ._exceptions import BundleError, Hint, StorageError, WsmError
from ._files import commit_partial, partial_path
from ._format import human_bytes
from ._layout import hash_file
from ._lock import (
    BundleChart,
    BundleImage,
    BundleLock,
    Failure,
    FailureKind,
    FilePart,
    chart_key,
    platform_names,
)
from ._model import ResolvedChart, ResolvedImage, merge_images
from ._parts import remove_parts, size_note, split_file, stored_whole
from ._plan import ImagePlan, plan_image, select_children
from ._progress import NO_PROGRESS, Progress
from ._redact import redact_url
from ._referrers import find_referrers
from ._report import REPORT_FILE, write_report
from ._reference import Reference
from ._remote import Platform, RegistryClient
from ._zipapp import write_tool

_T = TypeVar("_T")
_DISK_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}
_BUNDLE_ERRNOS = {*_DISK_FULL, errno.EFBIG, errno.EROFS}  # the bundle's disk, not one image, is at fault


# --------------------------------------------------------------------------------------------- results


class Status(str, Enum):
    """How one image or chart fared in a run."""

    OK = "ok"  # downloaded (or copied) in this run
    SKIPPED = "skipped"  # already complete in the bundle at the same digest
    FAILED = "failed"


@dataclass
class ImageResult:
    image: str  # the source reference, canonical
    status: Status
    reason: str | None = None  # why it failed: one line
    file: str | None = None  # images/<name>.tar, relative to the bundle (None when it failed)
    digest: str | None = None  # the upstream digest the reference resolved to
    platforms: list[str] = field(default_factory=list)  # platforms kept
    size: int = 0  # bytes of the tarball
    fetched: int = 0  # bytes downloaded for this image in this run (a shared blob counts for each image)
    note: str | None = None  # what was kept when it is not the upstream image as is (a platform subset)
    referrers: int = 0  # with referrers asked for: how many were found and carried
    error: WsmError | None = field(default=None, repr=False)  # the error behind `reason`, for its fields and hint

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def fail(self, error: WsmError) -> None:
        self.status, self.reason, self.error = Status.FAILED, str(error), error

    def to_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in self.__dict__.items() if key != "error"}
        return {**data, "status": self.status.value}


@dataclass
class ChartResult:
    name: str
    version: str
    status: Status
    reason: str | None = None
    file: str | None = None  # charts/<name>-<version>.tgz
    digest: str | None = None  # sha256:<hex>

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


@dataclass
class DownloadReport:
    bundle: Path
    images: list[ImageResult] = field(default_factory=list)
    charts: list[ChartResult] = field(default_factory=list)
    kept_from_earlier: list[str] = field(default_factory=list)  # images in the bundle from earlier runs only
    bytes_fetched: int = 0  # from registries, in this run
    seconds: float = 0.0
    root_digest: str | None = None  # sha256 of SHA256SUMS, once written
    base: str | None = None  # a delta bundle's base (its digest)
    bytes_from_base: int = 0  # a delta's layer bytes left to its base (each layer once)
    notes: list[str] = field(default_factory=list)  # for the operator (a file too large for FAT32)

    @property
    def failures(self) -> list[ImageResult | ChartResult]:
        results: list[ImageResult | ChartResult] = [*self.images, *self.charts]
        return [result for result in results if not result.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "ok": self.ok,
            "images": [result.to_dict() for result in self.images],
            "charts": [result.to_dict() for result in self.charts],
            "kept_from_earlier": self.kept_from_earlier,
            "bytes_fetched": self.bytes_fetched,
            "seconds": round(self.seconds, 3),
            "root_digest": self.root_digest,
            **({"base": self.base, "bytes_from_base": self.bytes_from_base} if self.base else {}),
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------ entry


def download(
    images: Sequence[ResolvedImage],
    charts: Sequence[ResolvedChart],
    bundle_dir: Path,
    *,
    client: RegistryClient,
    platforms: Sequence[Platform] | None,
    concurrency: int = 4,
    progress: Progress = NO_PROGRESS,
    manifest_text: str | None = None,
    on_image_done: Callable[[ImageResult], None] | None = None,
    base: DeltaBase | None = None,
    max_file_size: int | None = None,
    with_referrers: bool = False,
) -> DownloadReport:
    """Download `images` and `charts` into `bundle_dir`; `platforms` None keeps every platform. With `base`,
    a delta bundle: the layers `base` holds are left out of the tarballs and recorded as the base's. Image
    tarballs and charts larger than `max_file_size` are stored in parts (see _parts).

    Never raises for one image or chart (see the report); raises WsmError for bundle-level problems.
    Images already in the bundle from earlier runs stay, and stay in the lock with `in_release: false`.
    `progress` hears the bytes to fetch and fetched (from several threads). `on_image_done` is called from a
    worker thread, one call at a time, as each image finishes; an exception it raises stops the run.
    `with_referrers`: also carry what refers to each image (signatures, SBOMs, attestations; see _referrers).
    """
    started = time.monotonic()
    bundle = BundleDir(bundle_dir)
    bundle.prepare()
    with _exclusive(bundle):
        run = _Run(bundle, client, platforms, max(1, concurrency), progress, on_image_done, base)
        run.max_file_size = max_file_size
        run.with_referrers = with_referrers
        report = run.execute(merge_images(images), list(charts), manifest_text)
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def _exclusive(bundle: BundleDir) -> Iterator[None]:
    """One download per bundle at a time: two would write the same partial files."""
    with open(bundle.work / "run.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(f"another wsm download is writing bundle {bundle.root}; wait for it",
                              path=bundle.root, hint=Hint.BUNDLE) from None
        except OSError as error:  # a filesystem without locks (some network mounts): go on without one
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise BundleError(f"cannot lock bundle {bundle.root}: {error.strerror}", path=bundle.root) from None
        yield


@dataclass(frozen=True)
class _Job:
    """An image to download: what the resolver found, where its tarball goes, and what it will hold."""

    resolved: ResolvedImage
    file: str  # images/<name>.tar, relative to the bundle
    plan: ImagePlan

    @property
    def reference(self) -> Reference:
        return self.resolved.reference

    @property
    def key(self) -> str:
        return self.reference.canonical


# -------------------------------------------------------------------------------------------------- run


class _Run:
    def __init__(
        self,
        bundle: BundleDir,
        client: RegistryClient,
        platforms: Sequence[Platform] | None,
        concurrency: int,
        progress: Progress,
        on_image_done: Callable[[ImageResult], None] | None,
        base: DeltaBase | None = None,
    ) -> None:
        self.bundle = bundle
        self.base = base
        self.client = client
        self.platforms = None if platforms is None else tuple(platforms)
        self.requested = platform_names(self.platforms)
        self.concurrency = concurrency
        self.progress = progress
        self.on_image_done = on_image_done
        self.lock = bundle.read_lock() or BundleLock()
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self._lock_mutex = threading.Lock()
        self._callback_mutex = threading.Lock()
        self.max_file_size: int | None = None
        self.with_referrers = False

    def execute(
        self, images: list[ResolvedImage], charts: list[ResolvedChart], manifest_text: str | None
    ) -> DownloadReport:
        report = DownloadReport(bundle=self.bundle.root)
        check_same_base(self.lock, self.base, self.bundle.root)
        self.lock.base = self.base.record if self.base else None
        # Until this run finishes the bundle is not complete: no SHA256SUMS may say otherwise.
        self._guard_disk(lambda: self.bundle.sums_path.unlink(missing_ok=True))
        self._guard_disk(lambda: self.bundle.signature_path.unlink(missing_ok=True))  # it signed the old sums
        self._guard_disk(lambda: (self.bundle.root / REPORT_FILE).unlink(missing_ok=True))  # names the old digest
        if manifest_text is not None:  # else the lock keeps the release manifest it had
            self.lock.manifest = redact_url(manifest_text)  # a repo URL's password stays out of the bundle
        self.lock.platforms = self.platforms
        report.charts = self._charts(charts)
        report.images, report.bytes_fetched = self._images(images)
        if self.with_referrers:
            self._guard_disk(lambda: self._referrers(report.images))
        report.kept_from_earlier = self._finish(images, charts, report)
        if self.base is not None:
            report.base = self.base.record.digest
            report.bytes_from_base = sum(base_blobs_expected(self.lock).values())
        return report

    # ---------------------------------------------------------------------------------------- charts

    def _charts(self, charts: list[ResolvedChart]) -> list[ChartResult]:
        keys = {chart_key(c.source, c.name, c.version): c for c in charts}
        kept = {key: Path(entry.file).name for key, entry in self.lock.charts.items()}
        names = assign_names([(key, chart_stem(c.name, c.version)) for key, c in keys.items()], kept, ".tgz")
        return [self._guard_disk(partial(self._chart, key, chart, names[key])) for key, chart in keys.items()]

    def _chart(self, key: str, chart: ResolvedChart, name: str) -> ChartResult:
        result = ChartResult(chart.name, chart.version, Status.FAILED)
        if chart.archive is None:
            result.reason = f"chart {chart.name} {chart.version} came from a directory; package it (helm package)"
            return result
        try:
            digest = hash_file(chart.archive)
        except OSError as error:
            result.reason = f"chart archive {chart.archive}: {error.strerror}"
            return result
        result.digest = "sha256:" + digest.sha256
        if chart.digest and chart.digest.removeprefix("sha256:") != digest.sha256:
            result.reason = (
                f"chart archive {chart.archive} hashes to {result.digest}, the resolver recorded {chart.digest}"
            )
            return result
        result.file = f"charts/{name}"
        dest = self.bundle.charts / name
        previous = self.lock.charts.get(key)
        if previous and previous.digest == result.digest and previous.file == result.file and stored_whole(
                self.bundle.root, previous.file, digest.size, previous.parts):
            result.status = Status.SKIPPED
        else:
            shutil.copyfile(chart.archive, partial_path(dest))
            commit_partial(partial_path(dest), dest)
            result.status = Status.OK
        entry = BundleChart(
            name=chart.name, version=chart.version, source=chart.source, group=chart.group, file=result.file,
            digest=result.digest, size=digest.size, release=chart.release,
            parts=previous.parts if previous and result.status is Status.SKIPPED else (),
        )
        with self._lock_mutex:
            self.lock.charts[key] = entry
        return result

    # ---------------------------------------------------------------------------------------- images

    def _images(self, images: list[ResolvedImage]) -> tuple[list[ImageResult], int]:
        """Every image's result, in the order asked, and the bytes fetched from registries."""
        kept = {key: Path(entry.file).name for key, entry in self.lock.images.items()}
        names = assign_names([(image.reference.canonical, image_stem(image.reference)) for image in images], kept,
                             ".tar")
        results: dict[str, ImageResult] = {}
        blob_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="wsm-blob")
        image_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="wsm-image")
        store = BlobStore(self.bundle.blobs, self.client, blob_pool, self.progress, self.stop)
        try:
            files = [f"images/{names[image.reference.canonical]}" for image in images]
            jobs: list[_Job] = []
            for image, outcome in zip(images, list(image_pool.map(self._plan, images, files))):
                if isinstance(outcome, ImageResult):
                    results[image.reference.canonical] = outcome
                    self._done(outcome)
                else:
                    jobs.append(outcome)
            self._check_space(jobs)
            for job in jobs:
                store.need(job.plan.fetch)
            # Each image asks for its blobs when its turn comes: at most `concurrency` images' blobs wait
            # in the work area for their tarball, not the whole release's.
            assemblies = [image_pool.submit(self._assemble, job, store) for job in jobs]
            for job, future in zip(jobs, assemblies):
                results[job.key] = future.result()
        except BaseException:
            self.stop.set()
            raise
        finally:
            blob_pool.shutdown(wait=True, cancel_futures=True)
            image_pool.shutdown(wait=True, cancel_futures=True)
        if self.fatal is not None:
            raise self.fatal
        return [results[image.reference.canonical] for image in images], store.fetched

    def _plan(self, resolved: ResolvedImage, file: str) -> _Job | ImageResult:
        """The image's job, or its result when it is already complete or cannot be downloaded."""
        reference = resolved.reference
        try:
            previous = self.lock.images.get(reference.canonical)
            if previous and self._still_complete(reference, previous):
                return self._skip(resolved, previous)
            upstream = self.client.get_manifest(reference)
            selection = select_children(upstream, self.platforms, reference)
            children = {
                entry.digest: self.client.get_manifest(reference.with_digest(entry.digest))
                for entry in selection.children
            }
            plan = plan_image(reference, upstream, children, self.platforms)
            return _Job(resolved, file, leave_out_base(plan, self.base) if self.base else plan)
        except WsmError as error:
            failed = ImageResult(reference.canonical, Status.FAILED)
            failed.fail(error)
            return failed

    def _still_complete(self, reference: Reference, previous: BundleImage) -> bool:
        """The tarball from an earlier run holds what the reference points at now, for the same platforms."""
        if platform_names(previous.requested_platforms) != self.requested:
            return False
        if not stored_whole(self.bundle.root, previous.file, previous.file_size, previous.parts):
            return False
        current = reference.digest
        if current is None:
            head = self.client.head_manifest(reference)
            current = head.digest if head is not None else self.client.get_manifest(reference).digest
        return current == previous.digest

    def _skip(self, resolved: ResolvedImage, previous: BundleImage) -> ImageResult:
        with self._lock_mutex:
            self.lock.images[previous.key] = replace(previous, resolved=resolved, in_release=True)
        return ImageResult(
            resolved.reference.canonical, Status.SKIPPED, reason="already in the bundle at the same digest",
            file=previous.file, digest=previous.digest, platforms=[str(p) for p in previous.platforms],
            size=previous.file_size, note=previous.note,
        )

    def _check_space(self, jobs: list[_Job]) -> None:
        needed = sum(job.plan.size for job in jobs)
        free = shutil.disk_usage(self.bundle.root).free
        if needed > free:
            raise BundleError(
                f"bundle {self.bundle.root} needs {human_bytes(needed)} for {len(jobs)} image(s) but its disk has "
                f"{human_bytes(free)} free; free some space", path=self.bundle.root, hint=Hint.BUNDLE,
            )

    def _assemble(self, job: _Job, store: BlobStore) -> ImageResult:
        result = ImageResult(job.key, Status.FAILED, digest=job.plan.upstream.digest)
        try:
            if self.stop.is_set():
                raise Stopped()
            # Shared blobs start at once on the blob pool; the others are downloaded as the tarball reaches them.
            blobs = [store.source(job.reference, d) for d in job.plan.fetch]
            result = self._write(job, blobs, store, result)
        except Stopped:
            result.reason = "stopped"
        except StorageError as error:
            if error.errno in _BUNDLE_ERRNOS:  # the bundle's disk, not this image: no other image can go on
                self._stop_run(_disk_error(error.errno, error.path or self.bundle.root))
            else:
                result.fail(error)
        except WsmError as error:
            result.fail(error)
        except OSError as error:
            self._stop_run(_disk_error(error.errno, error.filename or self.bundle.root, error.strerror))
        except BaseException as error:  # anything else stops the run too, and is raised once
            self._stop_run(error)
        result.fetched = store.fetched_for(job.plan.fetch)
        if result.reason is None and result.status is Status.FAILED:
            result.reason = "stopped"
        if self.fatal is None:
            self._done(result)
        return result

    def _stop_run(self, error: BaseException) -> None:
        self.fatal = self.fatal or error
        self.stop.set()

    def _write(self, job: _Job, blobs: list[Future[Path] | Fill], store: BlobStore, result: ImageResult) -> ImageResult:
        def arriving() -> Iterator[Path | Fill]:
            for blob in blobs:
                source = blob.result() if isinstance(blob, Future) else blob
                if self.stop.is_set():
                    raise Stopped()
                yield source

        dest = self.bundle.root / job.file
        partial = self.bundle.work / "images" / partial_path(dest).name
        partial.parent.mkdir(exist_ok=True)
        tarball = write_tarball(dest, job.resolved, job.plan, arriving(), partial=partial)
        entry = bundle_image(job.resolved, job.plan, job.file, tarball, self.platforms)
        self._record(entry)
        store.release(job.plan.fetch)
        result.status, result.file, result.size = Status.OK, job.file, tarball.file.size
        result.platforms = [str(platform) for platform in entry.platforms]
        result.note = job.plan.note
        return result

    def _referrers(self, results: list[ImageResult]) -> None:
        """Find and carry the referrers of every image this run holds; a failure fails that image."""
        for result in results:
            entry = self.lock.images.get(result.image)
            if not result.ok or entry is None:
                continue
            try:
                referrers = find_referrers(self.client, self.bundle.root, entry)
            except WsmError as error:
                result.fail(error)
                continue
            result.referrers = len(referrers)
            self._record(replace(entry, referrers=referrers))

    def _record(self, entry: BundleImage) -> None:
        """Add a finished image to the lock and rewrite it at once: a killed run keeps what it finished."""
        with self._lock_mutex:
            self.lock.images[entry.key] = entry
            self.bundle.write_lock(self.lock)

    def _done(self, result: ImageResult) -> None:
        if self.on_image_done is not None:
            with self._callback_mutex:
                self.on_image_done(result)

    def _guard_disk(self, action: Callable[[], _T]) -> _T:
        """Turn a full disk (or an unwritable bundle) into one clear line that stops the run."""
        try:
            return action()
        except OSError as error:
            raise _disk_error(error.errno, error.filename or self.bundle.root, error.strerror) from None

    # ---------------------------------------------------------------------------------------- finish

    def _finish(self, images: list[ResolvedImage], charts: list[ResolvedChart], report: DownloadReport) -> list[str]:
        """Write the final lock and SHA256SUMS; drop the work area when nothing is left to resume."""
        asked = {image.reference.canonical for image in images}
        self.lock.mark_release(asked, {chart_key(c.source, c.name, c.version) for c in charts})
        self.lock.failures = tuple(
            [Failure(FailureKind.IMAGE, r.image, r.reason or "") for r in report.images if not r.ok]
            + [Failure(FailureKind.CHART, f"{r.name}-{r.version}", r.reason or "") for r in report.charts if not r.ok]
        )
        def write() -> None:
            report.notes += self._fit_media()
            self.lock.tool = write_tool(self.bundle.root)  # the offline side's wsm, in the bundle it reads
            self.bundle.write_lock(self.lock)
            report.root_digest = write_checksums(self.bundle, self.lock)
            # After SHA256SUMS: the report names the root digest, the sha256 of what was just written.
            write_report(self.bundle, self.lock, digest=report.root_digest)

        self._guard_disk(write)
        if report.ok:  # nothing left to resume: the bundle holds only what belongs to it
            shutil.rmtree(self.bundle.work, ignore_errors=True)
        return sorted(key for key in self.lock.images if key not in asked)

    def _fit_media(self) -> list[str]:
        """Store every image tarball and chart above `max_file_size` in parts; without a limit, a note for each
        file FAT32 could not hold. Files already in parts stay so (a rerun without the limit does not rejoin)."""
        notes: list[str] = []
        for key, image in list(self.lock.images.items()):
            def keep_image(parts: tuple[FilePart, ...], key: str = key, image: BundleImage = image) -> None:
                self.lock.images[key] = replace(image, parts=parts)

            self._fit(image.file, image.file_size, image.parts, keep_image, notes)
        for key, chart in list(self.lock.charts.items()):
            def keep_chart(parts: tuple[FilePart, ...], key: str = key, chart: BundleChart = chart) -> None:
                self.lock.charts[key] = replace(chart, parts=parts)

            self._fit(chart.file, chart.size, chart.parts, keep_chart, notes)
        return notes

    def _fit(self, file: str, size: int, parts: tuple[FilePart, ...], record: Callable[[tuple[FilePart, ...]], None],
             notes: list[str]) -> None:
        whole = self.bundle.root / file
        if parts:
            whole.unlink(missing_ok=True)  # left by a kill after the lock listed the parts
        elif self.max_file_size is not None and size > self.max_file_size:
            record(split_file(self.bundle.root, file, self.max_file_size))
            self.bundle.write_lock(self.lock)  # the parts are in place: now the lock may say so, then the whole goes
            whole.unlink()
        else:
            remove_parts(self.bundle.root, file)  # of an earlier split, now replaced by the whole file
            note = size_note(file, size)
            if note is not None:
                notes.append(note)


def _disk_error(number: int | None, where: Path | str, reason: str | None = None) -> BundleError:
    """One line for a bundle that cannot be written (`number` is the errno): what, where, and what to do."""
    if number in _DISK_FULL:
        return BundleError(f"cannot write {where}: {_DISK_FULL[number]}; free some space (a rerun resumes)",
                           path=where, hint=Hint.BUNDLE)
    if number == errno.EFBIG:
        return BundleError(
            f"cannot write {where}: the file is larger than this filesystem or limit allows (FAT32 stops at "
            "4 GiB); use an exFAT, NTFS or ext4 disk", path=where,
        )
    reason = reason or (os.strerror(number) if number is not None else "unknown error")
    return BundleError(f"cannot write {where}: {reason}; check the bundle directory", path=where)
