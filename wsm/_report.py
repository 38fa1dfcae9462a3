"""The change-ticket report: what a bundle holds, where each piece came from, and how it differs from a base.

Everything here is read from the bundle lock (and the root digest from SHA256SUMS): a report is the lock said
for people, so `wsm report` gives the same text as the `REPORT.md` the download wrote, and two locks are
compared without opening a tarball. `BundleReport` is the data (`-o json`); `render_markdown` words it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._bundle import REPORT_FILE, Bundle, BundleDir, read_regular_file, root_digest
from ._exceptions import BundleError
from ._files import write_atomically
from ._format import human_bytes
from ._lock import MAX_LOCK_BYTES, BaseKind, BaseRelease, BundleChart, BundleImage, BundleLock

__all__ = ["REPORT_FILE", "BundleReport", "bundle_report", "compare", "compare_with_base", "render_markdown", "report_of", "write_report"]


@dataclass(frozen=True)
class Totals:
    images: int
    charts: int
    bytes: int  # of the image tarballs and chart archives
    blobs: int  # distinct blob digests across the images
    blob_bytes: int  # their sizes, each blob counted once

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Change:
    """One image or chart that both bundles hold under one name, with another digest."""

    name: str
    old: str  # digest (a chart: version and digest)
    new: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Comparison:
    """A bundle against a base bundle (OLD): by image reference and chart name, and by blob."""

    base_root_digest: str | None
    added_images: list[str] = field(default_factory=list)
    removed_images: list[str] = field(default_factory=list)
    changed_images: list[Change] = field(default_factory=list)
    added_charts: list[str] = field(default_factory=list)
    removed_charts: list[str] = field(default_factory=list)
    changed_charts: list[Change] = field(default_factory=list)
    new_blobs: int = 0  # blobs of the bundle that the base does not hold
    new_blob_bytes: int = 0
    bytes_saved: int = 0  # bytes of the bundle's blobs the base already holds (what a delta need not carry)
    by_blobs_only: bool = False  # the base (an inventory) names no release: no images or charts compared

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_root_digest": self.base_root_digest,
            "images": {"added": self.added_images, "removed": self.removed_images,
                       "changed": [c.to_dict() for c in self.changed_images]},
            "charts": {"added": self.added_charts, "removed": self.removed_charts,
                       "changed": [c.to_dict() for c in self.changed_charts]},
            "new_blobs": self.new_blobs, "new_blob_bytes": self.new_blob_bytes, "bytes_saved": self.bytes_saved,
            "by_blobs_only": self.by_blobs_only,
        }


@dataclass(frozen=True)
class BundleReport:
    root_digest: str | None  # None while the bundle has no SHA256SUMS (its download did not finish)
    totals: Totals
    images: list[BundleImage]
    charts: list[BundleChart]
    since: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root_digest": self.root_digest,
            "totals": self.totals.to_dict(),
            "images": [_image_dict(image) for image in self.images],
            "charts": [_chart_dict(chart) for chart in self.charts],
            "since": self.since.to_dict() if self.since else None,
        }


# ------------------------------------------------------------------------------------------------ making


def bundle_report(lock: BundleLock, digest: str | None, base: tuple[BundleLock, str | None] | None = None) -> BundleReport:
    """The report of the images and charts the lock's last release holds; against `base` (lock, root digest),
    else, for a delta bundle, against the base its lock records."""
    images, charts = lock.release_images(), lock.release_charts()
    blobs = _blob_sizes(images)
    totals = Totals(images=len(images), charts=len(charts),
                    bytes=sum(i.file_size for i in images) + sum(c.size for c in charts),
                    blobs=len(blobs), blob_bytes=sum(blobs.values()))
    since = compare(lock, *base) if base is not None else compare_with_base(lock)
    return BundleReport(digest, totals, images, charts, since)


def report_of(bundle: Bundle, base: Path | None = None) -> BundleReport:
    """The report of an opened bundle; `base` is another bundle directory or its wsm.lock.json."""
    return bundle_report(bundle.lock, _root_digest_or_none(bundle.dir), read_base(base) if base else None)


def read_base(path: Path) -> tuple[BundleLock, str | None]:
    """(lock, root digest) of a base: a bundle directory or a wsm.lock.json (then no root digest is known)."""
    if path.is_dir():
        directory = BundleDir(path)
        lock = directory.read_lock()
        if lock is None:
            raise BundleError(f"{directory.lock_path} is missing: {path} is not a wsm bundle", path=path)
        return lock, _root_digest_or_none(directory)
    if not path.is_file():
        raise BundleError(f"{path} does not exist; give a bundle directory or its wsm.lock.json", path=path)
    return BundleLock.from_json(read_regular_file(path, MAX_LOCK_BYTES), path), _sums_beside(path)


def compare(new: BundleLock, old: BundleLock, old_root_digest: str | None) -> Comparison:
    """Added, removed and changed images (by reference) and charts (by source and name), and blob bytes."""
    new_blobs = _blob_sizes(new.release_images())
    old_blobs = _blob_sizes(old.release_images())
    fresh = {digest: size for digest, size in new_blobs.items() if digest not in old_blobs}
    return _compared(new, BaseRelease.of(old), old_root_digest, new_blobs=len(fresh),
                     new_blob_bytes=sum(fresh.values()), bytes_saved=sum(new_blobs.values()) - sum(fresh.values()))


def compare_with_base(lock: BundleLock) -> Comparison | None:
    """A delta bundle against the base its lock records (None for a full bundle, or a delta whose lock is from
    before the base's release was recorded). Bytes saved: the layers left to the base, each once; new blobs:
    what the delta holds (its configs and manifests too)."""
    base = lock.base
    if base is None or base.release is None:
        return None
    images = lock.release_images()
    left_out = {blob.digest: blob.size for image in images for blob in image.from_base}
    fresh = {digest: size for digest, size in _blob_sizes(images).items() if digest not in left_out}
    return _compared(lock, base.release, base.digest if base.kind is BaseKind.BUNDLE else None,
                     new_blobs=len(fresh), new_blob_bytes=sum(fresh.values()), bytes_saved=sum(left_out.values()))


def _compared(new: BundleLock, old: BaseRelease, old_root_digest: str | None, *, new_blobs: int, new_blob_bytes: int,
              bytes_saved: int) -> Comparison:
    """The comparison by name of `new`'s release with `old` (none when `old` names no images and charts)."""
    mine = BaseRelease.of(new)
    new_images, old_images = mine.images or {}, old.images or {}
    new_charts, old_charts = mine.charts or {}, old.charts or {}
    by_blobs_only = old.images is None and old.charts is None
    if by_blobs_only:
        new_images, new_charts = {}, {}
    return Comparison(
        base_root_digest=old_root_digest,
        added_images=sorted(new_images.keys() - old_images.keys()),
        removed_images=sorted(old_images.keys() - new_images.keys()),
        changed_images=[Change(key, old_images[key], new_images[key]) for key in sorted(new_images)
                        if key in old_images and old_images[key] != new_images[key]],
        added_charts=sorted(new_charts.keys() - old_charts.keys()),
        removed_charts=sorted(old_charts.keys() - new_charts.keys()),
        changed_charts=[Change(key, " ".join(old_charts[key]), " ".join(new_charts[key])) for key in sorted(new_charts)
                        if key in old_charts and old_charts[key] != new_charts[key]],
        new_blobs=new_blobs, new_blob_bytes=new_blob_bytes, bytes_saved=bytes_saved, by_blobs_only=by_blobs_only,
    )


def write_report(directory: BundleDir, lock: BundleLock, base: tuple[BundleLock, str | None] | None = None, *,
                 digest: str | None = None) -> Path:
    """bundle/REPORT.md, after SHA256SUMS (it names the root digest, so it cannot be listed in it); `base`
    (lock, root digest) adds the "Since the base" section (a delta bundle's base); `digest`: the root digest
    when the caller has it (the writer of SHA256SUMS), else it is read from SHA256SUMS."""
    path = directory.root / REPORT_FILE
    digest = digest or _root_digest_or_none(directory)
    write_atomically(path, render_markdown(bundle_report(lock, digest, base)).encode())
    return path


def _root_digest_or_none(directory: BundleDir) -> str | None:
    return root_digest(directory) if directory.sums_path.exists() else None


def _sums_beside(lock_path: Path) -> str | None:
    directory = BundleDir(lock_path.parent)
    return _root_digest_or_none(directory) if lock_path.name == directory.lock_path.name else None


def _blob_sizes(images: list[BundleImage]) -> dict[str, int]:
    return {blob.digest: blob.size for image in images for blob in image.blobs}


def _image_dict(image: BundleImage) -> dict[str, Any]:
    return {
        "image": image.key, "digest": image.digest, "top": image.top.digest, "kept": image.kept.value,
        "size": image.file_size, "platforms": [str(p) for p in image.platforms], "group": image.resolved.group,
        "sources": [source.to_dict() for source in image.resolved.sources],
        "referrers": [{"digest": r.manifest.digest, "scheme": r.scheme.value, "tag": r.tag,
                       "artifactType": r.artifact_type, "subject": r.subject} for r in image.referrers],
    }


def _chart_dict(chart: BundleChart) -> dict[str, Any]:
    return {"name": chart.name, "version": chart.version, "source": chart.source, "digest": chart.digest,
            "size": chart.size, "release": chart.release}


# ------------------------------------------------------------------------------------------------ wording


def render_markdown(report: BundleReport) -> str:
    """REPORT.md: the root digest, totals, one table row per image and chart, and the comparison if any."""
    totals = report.totals
    lines = [
        "# Bundle report", "",
        f"Root digest: `{report.root_digest or 'none (the download did not finish)'}`", "",
        f"{totals.images} images, {totals.charts} charts, {totals.bytes} bytes ({human_bytes(totals.bytes)}) in "
        f"tarballs and archives; {totals.blobs} distinct blobs, {totals.blob_bytes} bytes", "",
        "## Images", "",
        "| image | digest | size | platforms | found in |", "|---|---|---|---|---|",
        *(_image_row(image) for image in report.images), "",
        "## Charts", "",
        "| chart | version | digest | size | source |", "|---|---|---|---|---|",
        *(f"| {c.name} | {c.version} | `{c.digest}` | {c.size} | {c.source} |" for c in report.charts), "",
    ]
    lines += _referrer_lines(report.images)
    if report.since is not None:
        lines += _comparison_lines(report.since)
    return "\n".join(lines)


def _image_row(image: BundleImage) -> str:
    places = ", ".join(f"{s.chart}: {s.path or s.template or s.method.value}" for s in image.resolved.sources)
    platforms = ", ".join(str(p) for p in image.platforms)
    return f"| {image.key} | `{image.digest}` | {image.file_size} | {platforms} | {places or 'extra image'} |"


def _referrer_lines(images: list[BundleImage]) -> list[str]:
    rows = [f"| {image.key} | `{r.manifest.digest}` | {r.scheme.value} | {r.tag or ''} | {r.artifact_type or ''} |"
            for image in images for r in image.referrers]
    if not rows:
        return []
    return ["## Referrers", "", "| image | referrer | found by | tag | artifact type |", "|---|---|---|---|---|",
            *rows, ""]


def _comparison_lines(since: Comparison) -> list[str]:
    lines = ["## Since the base", ""]
    if since.by_blobs_only:
        lines += ["The base is an inventory of a registry, which names no release: compared by blobs only", ""]
    else:
        lines += [f"Base root digest: `{since.base_root_digest or 'unknown (a lock file)'}`", ""]
    for kind, added, removed, changed in () if since.by_blobs_only else (
        ("Images", since.added_images, since.removed_images, since.changed_images),
        ("Charts", since.added_charts, since.removed_charts, since.changed_charts),
    ):
        lines += [f"{kind}: {len(added)} added, {len(removed)} removed, {len(changed)} changed", ""]
        lines += [f"- added {name}" for name in added] + [f"- removed {name}" for name in removed]
        lines += [f"- changed {c.name}: {c.old} -> {c.new}" for c in changed]
        lines += [""] if added or removed or changed else []
    lines += [f"{since.new_blobs} blobs ({since.new_blob_bytes} bytes) are new; {since.bytes_saved} bytes of blobs "
              "the base already holds (what a delta bundle need not carry)", ""]
    return lines
