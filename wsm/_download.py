"""`download`: fetch a release's images and charts from their registries into a verified, resumable bundle.

A run has three steps:
1. plan: for every image, resolve its top manifest, pick the platforms, fetch the platform manifests, and
   list every blob it needs (images already complete in the bundle at the same upstream digest are skipped);
2. fetch: blobs stream into `.wsm-partial/blobs/<hex>.partial` on a bounded pool, each fetched once per run
   however many images share it, resuming from what an interrupted run left (Range requests);
3. assemble: as soon as an image's blobs are all there, its tarball is written (`.partial`, fsync, rename)
   and the lock file is rewritten, so a run killed at any moment leaves only complete, recorded tarballs.

A single image that fails (unknown tag, missing platform, a registry error) does not stop the others; it is
reported. A bundle-level problem (disk full, the bundle not writable) stops the run with one clear line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ._bundle import (
    KEPT_AS_IS,
    KEPT_PLATFORM,
    KEPT_SUBSET_INDEX,
    Bundle,
    Lock,
    LockedChart,
    LockedImage,
    assign_names,
    chart_key,
    chart_stem,
    image_stem,
    utc_now,
    write_checksums,
)
from ._exceptions import BundleError, NotFound, WsmError
from ._layout import TarBlob, hash_file, partial_path, write_image_tar
from ._model import ResolvedChart, ResolvedImage
from ._reference import Reference
from ._remote import Descriptor, Manifest, Platform, RegistryClient
from ._remote import compute_digest

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
_DISK_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}
_ATTESTATION = "attestation-manifest"
AMD64 = Platform("linux", "amd64")


# --------------------------------------------------------------------------------------------- results


@dataclass
class ImageResult:
    image: str  # the source reference, canonical
    status: str  # "ok" | "skipped" (already complete in the bundle at the same digest) | "failed"
    reason: str | None = None  # why it failed: one line
    file: str | None = None  # images/<name>.tar, relative to the bundle (None when it failed)
    digest: str | None = None  # the upstream digest the reference resolved to
    platforms: list[str] = field(default_factory=list)  # platforms kept
    size: int = 0  # bytes of the tarball
    fetched: int = 0  # bytes downloaded for this image in this run (a shared blob counts for each image)
    note: str | None = None  # what was kept when it is not the upstream image as is (a platform subset)

    @property
    def ok(self) -> bool:
        return self.status != FAILED


@dataclass
class ChartResult:
    name: str
    version: str
    status: str  # "ok" | "skipped" | "failed"
    reason: str | None = None
    file: str | None = None  # charts/<name>-<version>.tgz
    digest: str | None = None  # sha256:<hex>

    @property
    def ok(self) -> bool:
        return self.status != FAILED


@dataclass
class DownloadReport:
    bundle: Path
    images: list[ImageResult] = field(default_factory=list)
    charts: list[ChartResult] = field(default_factory=list)
    kept_from_earlier: list[str] = field(default_factory=list)  # images in the bundle from earlier runs only
    bytes_fetched: int = 0  # from registries, in this run
    seconds: float = 0.0

    @property
    def failures(self) -> list[ImageResult | ChartResult]:
        return [result for result in [*self.images, *self.charts] if not result.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "ok": self.ok,
            "images": [asdict(result) for result in self.images],
            "charts": [asdict(result) for result in self.charts],
            "kept_from_earlier": self.kept_from_earlier,
            "bytes_fetched": self.bytes_fetched,
            "seconds": round(self.seconds, 3),
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
    progress: bool = True,
    manifest_text: str | None = None,
    on_image_done: Callable[[ImageResult], None] | None = None,
) -> DownloadReport:
    """Download `images` and `charts` into `bundle_dir`; `platforms` None keeps every platform.

    Never raises for one image or chart (see the report); raises WsmError for bundle-level problems.
    Images already in the bundle from earlier runs stay, and stay in the lock with `in_release: false`.
    `on_image_done` is called (from a worker thread, one call at a time) as each image finishes; print
    with `tqdm.write` there so the progress bar stays intact.
    """
    started = time.monotonic()
    bundle = Bundle(bundle_dir)
    bundle.prepare()
    with _exclusive(bundle):
        run = _Run(bundle, client, platforms, max(1, concurrency), progress, on_image_done)
        report = run.execute(_unique(images), list(charts), manifest_text)
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def _exclusive(bundle: Bundle) -> Iterator[None]:
    """One download per bundle at a time: two would write the same partial files."""
    with open(bundle.work / "run.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(
                f"another wsm download is writing bundle {bundle.root}; wait for it or pick another --bundle"
            ) from None
        except OSError as error:  # a filesystem without locks (some network mounts): go on without one
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise BundleError(f"cannot lock bundle {bundle.root}: {error.strerror}") from None
        yield


def _unique(images: Sequence[ResolvedImage]) -> list[ResolvedImage]:
    """One entry per canonical reference; the places an image was found are merged."""
    merged: dict[str, ResolvedImage] = {}
    for image in images:
        key = image.reference.canonical
        if key in merged:
            first = merged[key]
            sources = first.sources + tuple(s for s in image.sources if s not in first.sources)
            merged[key] = ResolvedImage(first.reference, first.group, sources)
        else:
            merged[key] = image
    return list(merged.values())


def platform_names(platforms: Sequence[Platform] | None) -> list[str] | None:
    return None if platforms is None else sorted({str(platform) for platform in platforms})


# ------------------------------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    """Everything one image's tarball will hold, decided before any layer is fetched."""

    resolved: ResolvedImage
    file: str
    upstream: Manifest  # what the reference resolved to
    top: Descriptor  # what index.json points at
    kept: str
    manifests: list[Manifest]  # platform manifests kept (image manifests and attestations)
    made_index: bytes | None = None  # the wsm-made index over a subset of platforms
    documents: dict[str, bytes] = field(default_factory=dict)  # every manifest/index blob: digest -> bytes
    fetch: list[Descriptor] = field(default_factory=list)  # configs and layers, each once
    note: str | None = None

    @property
    def reference(self) -> Reference:
        return self.resolved.reference

    @property
    def key(self) -> str:
        return self.reference.canonical

    def image_manifests(self) -> list[Manifest]:
        return [m for m in self.manifests if not _is_attestation_manifest(m)]

    def blob_entries(self) -> list[dict[str, Any]]:
        entries = [
            {"digest": digest, "size": len(raw), "mediaType": _media_type_of(raw)}
            for digest, raw in self.documents.items()
        ]
        entries += [{"digest": d.digest, "size": d.size, "mediaType": d.media_type} for d in self.fetch]
        return entries

    def size(self) -> int:
        return sum(len(raw) for raw in self.documents.values()) + sum(d.size for d in self.fetch)


def _media_type_of(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("mediaType") or "")
    except (ValueError, AttributeError):
        return ""


def _is_attestation(descriptor: Descriptor) -> bool:
    annotations = descriptor.annotations or {}
    platform = descriptor.platform
    return annotations.get("vnd.docker.reference.type") == _ATTESTATION or (
        platform is not None and platform.os == "unknown" and platform.architecture == "unknown"
    )


def _is_attestation_manifest(manifest: Manifest) -> bool:
    return any((layer.media_type or "").startswith("application/vnd.in-toto") for layer in manifest.layers())


class _Planner:
    def __init__(self, client: RegistryClient, platforms: Sequence[Platform] | None):
        self.client = client
        self.platforms = list(platforms) if platforms is not None else None

    def plan(self, resolved: ResolvedImage, file: str, upstream: Manifest) -> _Plan:
        reference = resolved.reference
        if not upstream.is_index:
            plan = _Plan(resolved, file, upstream, upstream.descriptor(), KEPT_AS_IS, [upstream])
        else:
            plan = self._plan_index(resolved, file, upstream)
        self._collect(plan, reference)
        return plan

    def _plan_index(self, resolved: ResolvedImage, file: str, upstream: Manifest) -> _Plan:
        reference = resolved.reference
        children = upstream.children()
        chosen = self._choose(reference, children)
        if len(chosen) == len(children):
            manifests = [self._child(reference, child) for child in chosen]
            return _Plan(resolved, file, upstream, upstream.descriptor(), KEPT_AS_IS, manifests)
        images = [child for child in chosen if not _is_attestation(child)]
        if len(images) == 1:
            top = images[0]
            note = f"platform {top.platform} of upstream index {upstream.digest}"
            return _Plan(resolved, file, upstream, top, KEPT_PLATFORM, [self._child(reference, top)], note=note)
        manifests = [self._child(reference, child) for child in chosen]
        document = json.loads(upstream.raw)
        keep = {child.digest for child in chosen}
        document["manifests"] = [entry for entry in document.get("manifests", []) if entry.get("digest") in keep]
        raw = (json.dumps(document, indent=2) + "\n").encode()
        top = Descriptor(upstream.media_type, compute_digest(raw), len(raw))
        names = ", ".join(str(child.platform) for child in images)
        note = f"index written by wsm over {names} of upstream index {upstream.digest} (not an upstream digest)"
        return _Plan(resolved, file, upstream, top, KEPT_SUBSET_INDEX, manifests, made_index=raw, note=note)

    def _choose(self, reference: Reference, children: list[Descriptor]) -> list[Descriptor]:
        if self.platforms is None:
            return children
        images = [child for child in children if child.platform is not None and not _is_attestation(child)]
        chosen: list[Descriptor] = []
        missing = []
        for wanted in self.platforms:
            match = next((child for child in images if wanted.matches(child.platform)), None)
            if match is None:
                missing.append(str(wanted))
            elif match not in chosen:
                chosen.append(match)
        if missing:
            has = ", ".join(str(child.platform) for child in images) or "no platform at all"
            raise NotFound(f"{reference.familiar} has no {' or '.join(missing)} image; it has {has}")
        digests = {child.digest for child in chosen}
        # Keep the attestations (SBOM, provenance) of the platforms kept; they refer to them by digest.
        chosen += [
            child
            for child in children
            if _is_attestation(child) and (child.annotations or {}).get("vnd.docker.reference.digest") in digests
        ]
        return [child for child in children if child in chosen]  # in upstream order

    def _child(self, reference: Reference, child: Descriptor) -> Manifest:
        manifest = self.client.get_manifest(reference.with_digest(child.digest))
        if manifest.is_index:
            raise NotFound(f"{reference.familiar}: index {child.digest} nests another index; wsm keeps one level")
        return manifest

    def _collect(self, plan: _Plan, reference: Reference) -> None:
        if plan.kept != KEPT_PLATFORM:
            plan.documents[plan.top.digest] = plan.made_index or plan.upstream.raw
        seen: set[str] = set()
        for manifest in plan.manifests:
            plan.documents[manifest.digest] = manifest.raw
            for descriptor in [manifest.config(), *manifest.layers()]:
                if descriptor.digest not in seen:
                    seen.add(descriptor.digest)
                    plan.fetch.append(descriptor)
        if not plan.image_manifests():
            raise NotFound(f"{reference.familiar}: no image manifest to load (only attestations)")


# ------------------------------------------------------------------------------------------------ blobs


class _Stopped(Exception):
    """Raised inside a transfer to abort it when the run stops (interrupt or a bundle-level error)."""


class _Progress:
    """Counts bytes fetched (for the report) and drives the tqdm bar; thread-safe."""

    def __init__(self, enabled: bool, stop: threading.Event):
        self.stop = stop
        self.bar = tqdm(
            total=0, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=not enabled,
            desc="download", dynamic_ncols=True,
        )
        self.fetched = 0
        self.by_digest: Counter[str] = Counter()
        self._lock = threading.Lock()

    def expect(self, count: int) -> None:
        with self._lock:
            self.bar.total += count
            self.bar.refresh()

    def callback(self, digest: str, resumed: int) -> Callable[[int], None]:
        """The client reports bytes as they land, a resumed prefix included, and takes back (negative
        counts) what a restart drops; the bar follows it all, the fetched count only the network's bytes."""
        with self._lock:
            self.fetched -= resumed
            self.by_digest[digest] -= resumed

        def advance(count: int) -> None:
            if self.stop.is_set():
                raise _Stopped()
            with self._lock:
                if count > 0:
                    self.fetched += count
                    self.by_digest[digest] += count
                self.bar.update(count)

        return advance

    def close(self) -> None:
        self.bar.close()


class _BlobStore:
    """Blobs under `.wsm-partial/blobs`, each fetched at most once per run, deleted when no image needs it."""

    def __init__(self, bundle: Bundle, client: RegistryClient, pool: ThreadPoolExecutor, progress: _Progress):
        self.bundle = bundle
        self.client = client
        self.pool = pool
        self.progress = progress
        self.futures: dict[str, Future[Path]] = {}
        self.users: Counter[str] = Counter()
        self._lock = threading.Lock()

    def path(self, digest: str) -> Path:
        return self.bundle.blobs / digest.partition(":")[2]

    def need(self, plan: _Plan) -> None:
        """Count `plan` as a user of its blobs and tell the progress bar how much is left to fetch."""
        for descriptor in plan.fetch:
            with self._lock:
                self.users[descriptor.digest] += 1
                first = self.users[descriptor.digest] == 1
            if first and not self.path(descriptor.digest).exists():
                self.progress.expect(descriptor.size)

    def get(self, reference: Reference, descriptor: Descriptor) -> Future[Path]:
        with self._lock:
            future = self.futures.get(descriptor.digest)
            if future is None:
                future = self.pool.submit(self._fetch, reference, descriptor)
                self.futures[descriptor.digest] = future
            return future

    def _fetch(self, reference: Reference, descriptor: Descriptor) -> Path:
        final = self.path(descriptor.digest)
        if final.exists():
            if _still_intact(final, descriptor):
                return final
            self.progress.expect(descriptor.size)
        partial = partial_path(final)
        resumed = partial.stat().st_size if partial.exists() else 0
        resumed = resumed if resumed <= descriptor.size else 0  # the client starts a longer file afresh
        progress = self.progress.callback(descriptor.digest, resumed)
        self.client.fetch_blob(reference, descriptor, partial, progress=progress)
        os.replace(partial, final)
        return final

    def release(self, plan: _Plan) -> None:
        """`plan`'s tarball is written: delete the blobs no other image of this run still needs."""
        for descriptor in plan.fetch:
            with self._lock:
                self.users[descriptor.digest] -= 1
                unused = self.users[descriptor.digest] <= 0
            if unused:
                self.path(descriptor.digest).unlink(missing_ok=True)


def _still_intact(path: Path, descriptor: Descriptor) -> bool:
    """A blob left complete by an earlier run: trust it only after hashing it again."""
    digest = hash_file(path)
    if digest.size == descriptor.size and "sha256:" + digest.sha256 == descriptor.digest:
        return True
    path.unlink(missing_ok=True)
    return False


# -------------------------------------------------------------------------------------------------- run


class _Run:
    def __init__(
        self,
        bundle: Bundle,
        client: RegistryClient,
        platforms: Sequence[Platform] | None,
        concurrency: int,
        progress: bool,
        on_image_done: Callable[[ImageResult], None] | None,
    ):
        self.bundle = bundle
        self.client = client
        self.requested = platform_names(platforms)
        self.concurrency = concurrency
        self.on_image_done = on_image_done
        self.lock: Lock = bundle.read_lock() or Lock()
        self.stop = threading.Event()
        self.progress = _Progress(progress, self.stop)
        self.planner = _Planner(client, platforms)
        self.fatal: BaseException | None = None
        self._lock_mutex = threading.Lock()
        self._callback_mutex = threading.Lock()

    def execute(
        self, images: list[ResolvedImage], charts: list[ResolvedChart], manifest_text: str | None
    ) -> DownloadReport:
        report = DownloadReport(bundle=self.bundle.root)
        # Until this run finishes the bundle is not complete: no SHA256SUMS may say otherwise.
        self._guard_disk(lambda: self.bundle.sums_path.unlink(missing_ok=True))
        if manifest_text is not None:  # else the lock keeps the release manifest it had
            self.lock.manifest = manifest_text
        self.lock.platforms = self.requested
        try:
            report.charts = self._charts(charts)
            report.images = self._images(images)
        finally:
            self.progress.close()
        report.bytes_fetched = self.progress.fetched
        report.kept_from_earlier = self._finish(images, charts, report)
        return report

    # ---------------------------------------------------------------------------------------- charts

    def _charts(self, charts: list[ResolvedChart]) -> list[ChartResult]:
        keys = {chart_key(c.source, c.name, c.version): c for c in charts}
        kept = {key: Path(entry.file).name for key, entry in self.lock.charts.items()}
        names = assign_names([(key, chart_stem(c.name, c.version)) for key, c in keys.items()], kept, ".tgz")
        results = []
        for key, chart in keys.items():
            results.append(self._guard_disk(lambda k=key, c=chart: self._chart(k, c, names[k])))
        return results

    def _chart(self, key: str, chart: ResolvedChart, name: str) -> ChartResult:
        result = ChartResult(chart.name, chart.version, FAILED)
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
        if previous and previous.digest == result.digest and dest.exists() and dest.stat().st_size == digest.size:
            result.status = SKIPPED
        else:
            shutil.copyfile(chart.archive, partial_path(dest))
            os.replace(partial_path(dest), dest)
            result.status = OK
        entry = LockedChart(
            chart.name, chart.version, chart.source, chart.group, result.file, result.digest, digest.size,
            chart.release,
        )
        with self._lock_mutex:
            self.lock.charts[key] = entry
        return result

    # ---------------------------------------------------------------------------------------- images

    def _images(self, images: list[ResolvedImage]) -> list[ImageResult]:
        kept = {key: Path(entry.file).name for key, entry in self.lock.images.items()}
        wanted = [(image.reference.canonical, image_stem(image.reference)) for image in images]
        names = assign_names(wanted, kept, ".tar")
        results: dict[str, ImageResult] = {}
        blob_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="wsm-blob")
        image_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="wsm-image")
        store = _BlobStore(self.bundle, self.client, blob_pool, self.progress)
        try:
            files = [f"images/{names[image.reference.canonical]}" for image in images]
            planned = list(image_pool.map(self._plan, images, files))
            plans = []
            for image, outcome in zip(images, planned):
                if isinstance(outcome, ImageResult):
                    results[image.reference.canonical] = outcome
                    self._done(outcome)
                else:
                    plans.append(outcome)
            self._check_space(plans)
            for plan in plans:
                store.need(plan)
            # Each image asks for its blobs when its turn comes: at most `concurrency` images' blobs wait
            # in the work area for their tarball, not the whole release's.
            assemblies = [image_pool.submit(self._assemble, plan, store) for plan in plans]
            for plan, future in zip(plans, assemblies):
                results[plan.key] = future.result()
        except BaseException:
            self.stop.set()
            raise
        finally:
            blob_pool.shutdown(wait=True, cancel_futures=True)
            image_pool.shutdown(wait=True, cancel_futures=True)
        if self.fatal is not None:
            raise self.fatal
        return [results[image.reference.canonical] for image in images]

    def _plan(self, resolved: ResolvedImage, file: str) -> _Plan | ImageResult:
        """The image's plan, or its result when it is already complete or cannot be downloaded."""
        reference = resolved.reference
        try:
            previous = self.lock.images.get(reference.canonical)
            if previous and self._still_complete(reference, previous):
                return self._skip(resolved, previous)
            upstream = self.client.get_manifest(reference)
            return self.planner.plan(resolved, file, upstream)
        except WsmError as error:
            return ImageResult(reference.canonical, FAILED, reason=str(error))

    def _still_complete(self, reference: Reference, previous: LockedImage) -> bool:
        """The tarball from an earlier run holds what the reference points at now, for the same platforms."""
        path = self.bundle.root / previous.file
        if previous.requested_platforms != self.requested or not path.exists():
            return False
        if path.stat().st_size != previous.file_size:
            return False
        current = reference.digest
        if current is None:
            head = self.client.head_manifest(reference)
            current = head.digest if head is not None else self.client.get_manifest(reference).digest
        return current == previous.digest

    def _skip(self, resolved: ResolvedImage, previous: LockedImage) -> ImageResult:
        with self._lock_mutex:
            previous.resolved = resolved.to_dict()
            previous.in_release = True
        return ImageResult(
            resolved.reference.canonical, SKIPPED, reason="already in the bundle at the same digest",
            file=previous.file, digest=previous.digest, platforms=list(previous.platforms), size=previous.file_size,
            note=previous.note,
        )

    def _check_space(self, plans: list[_Plan]) -> None:
        needed = sum(plan.size() for plan in plans)
        free = shutil.disk_usage(self.bundle.root).free
        if needed > free:
            raise BundleError(
                f"bundle {self.bundle.root} needs {_human(needed)} for {len(plans)} image(s) but its disk has "
                f"{_human(free)} free; free some space or pick another --bundle"
            )

    def _assemble(self, plan: _Plan, store: _BlobStore) -> ImageResult:
        result = ImageResult(plan.key, FAILED, digest=plan.upstream.digest)
        try:
            if self.stop.is_set():
                raise _Stopped()
            blobs = [store.get(plan.reference, descriptor) for descriptor in plan.fetch]
            result = self._write(plan, blobs, store, result)
        except _Stopped:
            result.reason = "stopped"
        except WsmError as error:
            if _disk_cause(error) is None:
                result.reason = str(error)
            else:
                self._stop_run(_disk_error(_disk_cause(error), self.bundle))
        except OSError as error:
            self._stop_run(_disk_error(error, self.bundle))
        except BaseException as error:  # anything else stops the run too, and is raised once
            self._stop_run(error)
        result.fetched = sum(self.progress.by_digest[d.digest] for d in plan.fetch)
        if result.reason is None and result.status == FAILED:
            result.reason = "stopped"
        if self.fatal is None:
            self._done(result)
        return result

    def _stop_run(self, error: BaseException) -> None:
        self.fatal = self.fatal or error
        self.stop.set()

    def _write(self, plan: _Plan, blobs: list[Future[Path]], store: _BlobStore, result: ImageResult) -> ImageResult:
        paths: dict[str, Path] = {}

        def arriving() -> Iterator[TarBlob]:
            """Manifests first, then each blob as soon as it is fetched: copying overlaps fetching."""
            for digest, raw in plan.documents.items():
                yield TarBlob(digest, len(raw), data=raw)
            for descriptor, future in zip(plan.fetch, blobs):
                paths[descriptor.digest] = future.result()
                if self.stop.is_set():
                    raise _Stopped()
                yield TarBlob(descriptor.digest, descriptor.size, paths[descriptor.digest])

        written = write_image_tar(
            self.bundle.root / plan.file,
            reference=plan.reference,
            top=plan.top.to_dict(),
            image_manifest=json.loads(self._docker_manifest(plan).raw),
            blobs=arriving(),
        )
        platforms = self._platforms_of(plan, paths)
        entry = LockedImage(
            image=plan.key,
            digest=plan.upstream.digest,
            media_type=plan.upstream.media_type,
            file=plan.file,
            file_size=written.size,
            file_sha256=written.sha256,
            top=plan.top.to_dict(),
            kept=plan.kept,
            manifests=[
                {**m.descriptor().to_dict(), "platform": platforms.get(m.digest)} for m in plan.manifests
            ],
            platforms=[platforms[m.digest] for m in plan.image_manifests() if platforms.get(m.digest)],
            requested_platforms=self.requested,
            blobs=plan.blob_entries(),
            resolved=plan.resolved.to_dict(),
            downloaded=utc_now(),
            note=plan.note,
        )
        self._record(entry)
        store.release(plan)
        result.status, result.file, result.size, result.platforms = OK, plan.file, written.size, entry.platforms
        result.note = plan.note
        return result

    def _platforms_of(self, plan: _Plan, paths: dict[str, Path]) -> dict[str, str]:
        """Platform of each kept manifest: from the index entry, else from the image's config."""
        found: dict[str, str] = {}
        entries = {child.digest: child for child in plan.upstream.children()}
        for manifest in plan.image_manifests():
            entry = entries.get(manifest.digest)
            if entry is not None and entry.platform is not None:
                found[manifest.digest] = str(entry.platform)
                continue
            try:
                config = json.loads(paths[manifest.config().digest].read_bytes())
                platform = Platform.from_dict(config)
            except (ValueError, OSError, AttributeError):
                platform = None
            if platform is not None:
                found[manifest.digest] = str(platform)
        return found

    def _docker_manifest(self, plan: _Plan) -> Manifest:
        """The one platform `docker load` gets: linux/amd64 when kept, else the first kept."""
        images = plan.image_manifests()
        entries = {child.digest: child for child in plan.upstream.children()}
        for manifest in images:
            entry = entries.get(manifest.digest)
            if entry is not None and entry.platform is not None and AMD64.matches(entry.platform):
                return manifest
        return images[0]

    def _record(self, entry: LockedImage) -> None:
        """Add a finished image to the lock and rewrite it at once: a killed run keeps what it finished."""
        with self._lock_mutex:
            self.lock.images[entry.image] = entry
            self.bundle.write_lock(self.lock)

    def _done(self, result: ImageResult) -> None:
        if self.on_image_done is not None:
            with self._callback_mutex:
                self.on_image_done(result)

    def _guard_disk(self, action: Callable[[], Any]) -> Any:
        """Turn a full disk (or an unwritable bundle) into one clear line that stops the run."""
        try:
            return action()
        except OSError as error:
            raise _disk_error(error, self.bundle) from None

    # ---------------------------------------------------------------------------------------- finish

    def _finish(self, images: list[ResolvedImage], charts: list[ResolvedChart], report: DownloadReport) -> list[str]:
        """Write the final lock and SHA256SUMS; drop the work area when nothing is left to resume."""
        asked = {image.reference.canonical for image in images}
        asked_charts = {chart_key(c.source, c.name, c.version) for c in charts}
        for key, entry in self.lock.images.items():
            entry.in_release = key in asked
        for key, chart in self.lock.charts.items():
            chart.in_release = key in asked_charts
        self.lock.failures = [
            {"kind": "image", "name": result.image, "reason": result.reason or ""}
            for result in report.images
            if not result.ok
        ] + [
            {"kind": "chart", "name": f"{result.name}-{result.version}", "reason": result.reason or ""}
            for result in report.charts
            if not result.ok
        ]
        self._guard_disk(lambda: (self.bundle.write_lock(self.lock), write_checksums(self.bundle.root)))
        if report.ok:  # nothing left to resume: the bundle holds only what belongs to it
            shutil.rmtree(self.bundle.work, ignore_errors=True)
        return sorted(key for key in self.lock.images if key not in asked)


_BUNDLE_ERRNOS = {*_DISK_FULL, errno.EFBIG, errno.EROFS}


def _disk_cause(error: BaseException) -> OSError | None:
    """The full-disk OSError behind `error` (the registry client reports write failures as a WsmError)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _BUNDLE_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _disk_error(error: OSError, bundle: Bundle) -> WsmError:
    where = error.filename or bundle.root
    if error.errno in _DISK_FULL:
        return BundleError(
            f"cannot write {where}: {_DISK_FULL[error.errno]}; free some space (a rerun resumes) or pick another "
            "--bundle"
        )
    if error.errno == errno.EFBIG:
        return BundleError(
            f"cannot write {where}: the file is larger than this filesystem or limit allows (FAT32 stops at "
            "4 GiB); use an exFAT, NTFS or ext4 disk"
        )
    return BundleError(f"cannot write {where}: {error.strerror or error}; check the bundle directory")


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"
