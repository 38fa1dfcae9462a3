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

from ._bundle import Bundle, Lock, LockedImage
from ._exceptions import BundleError, WsmError
from ._layout import blob_member, tar_members
from ._reference import Reference
from ._remote import Descriptor, FileSegment, Manifest, RegistryClient
from ._runbook import MovedImage

ON_EXISTING = ("fail", "skip", "overwrite")


class TagConflict(WsmError):
    """A tag that already points at another digest in the target registry."""


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
    entries = [entry for entry in lock.images.values() if entry.in_release]
    mounts = _Mounts()

    def one(entry: LockedImage) -> ImagePush:
        source = Reference.parse(entry.image)
        job = ImagePush(entry.image, targets[source].canonical, entry.top["digest"])
        try:
            _push_image(bundle, entry, targets[source], client, job, mounts, on_existing, dry_run, progress)
        except WsmError as error:
            job.result, job.error = "failed", str(error)
        return job

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, entries))


def _push_image(
    bundle: Bundle, entry: LockedImage, target: Reference, client: RegistryClient, job: ImagePush,
    mounts: _Mounts, on_existing: str, dry_run: bool, progress: Callable[[int], None] | None,
) -> None:
    tar = bundle.root / entry.file
    ranges = tar_members(tar)
    top = Descriptor.from_dict(entry.top, f"{entry.file} index.json")
    existing = client.head_manifest(target)
    if existing is not None and existing.digest == top.digest:
        job.result = "present"  # same digest under the same tag: nothing to send, nothing to check
        return
    if existing is not None and on_existing != "overwrite":
        message = (f"{target.canonical} already exists with digest {existing.digest}, the bundle has {top.digest}; "
                   "use --on-existing skip or overwrite if that is intended")
        if on_existing == "skip":
            job.result, job.error = "skipped (tag exists)", message
            return
        raise TagConflict(message)
    top_manifest = Manifest.from_bytes(_read_member(tar, ranges, top.digest), top.media_type)
    children = [Manifest.from_bytes(_read_member(tar, ranges, c.digest), c.media_type)
                for c in top_manifest.children()] if top_manifest.is_index else []
    for manifest in children + [top_manifest]:
        if not manifest.is_index:
            _push_blobs(tar, ranges, manifest, target, client, job, mounts, dry_run, progress)
        if not dry_run:
            where = target if manifest is top_manifest else target.with_tag(None).with_digest(manifest.digest)
            client.put_manifest(where.with_digest(None) if manifest is top_manifest else where, manifest.raw,
                                manifest.media_type)
    job.result = "would send" if dry_run else "sent"


def _push_blobs(
    tar: Path, ranges: dict[str, tuple[int, int]], manifest: Manifest, target: Reference, client: RegistryClient,
    job: ImagePush, mounts: _Mounts, dry_run: bool, progress: Callable[[int], None] | None,
) -> None:
    for blob in [manifest.config()] + manifest.layers():
        if client.has_blob(target, blob.digest):
            job.blobs_present += 1
            mounts.record(blob.digest, target.repository)
            if progress:
                progress(blob.size)
            continue
        other = mounts.source_for(blob.digest, target.repository)
        if not dry_run and other and client.mount_blob(target, blob.digest, other):
            job.blobs_mounted += 1
        elif not dry_run:
            offset, size = _member(ranges, blob.digest, tar)
            if size != blob.size:
                raise BundleError(f"{tar.name}: blob {blob.digest} holds {size} bytes, the manifest says {blob.size}")
            client.push_blob(target, blob, FileSegment(tar, offset, size), progress)
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        else:
            job.blobs_sent += 1
            job.bytes_sent += blob.size
        mounts.record(blob.digest, target.repository)


def _member(ranges: dict[str, tuple[int, int]], digest: str, tar: Path) -> tuple[int, int]:
    name = blob_member(digest)
    if name not in ranges:
        raise BundleError(f"{tar.name}: blob {digest} is missing; run wsm verify, then download again")
    return ranges[name]


def _read_member(tar: Path, ranges: dict[str, tuple[int, int]], digest: str) -> bytes:
    offset, size = _member(ranges, digest, tar)
    with open(tar, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


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

