"""From a plan and its blobs to an image tarball in the bundle, and the lock entry that records it.

The tarball is written while its blobs are still arriving: manifests first (they are in memory), then each
config and layer as soon as the blob store has it, so copying overlaps fetching. `wsm._layout` writes the
file (`.partial`, fsync, rename); only a tarball complete under its final name gets a lock entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ._format import utc_now
from ._layout import FileDigest, TarBlob, write_image_tar
from ._lock import BundleImage
from ._model import ResolvedImage
from ._plan import ImagePlan
from ._remote import Platform


@dataclass(frozen=True)
class Tarball:
    """A written image tarball."""

    file: FileDigest  # its size and sha256
    platforms: dict[str, Platform]  # the platform of each kept image manifest, by digest, where known


def write_tarball(dest: Path, resolved: ResolvedImage, plan: ImagePlan, blobs: Iterable[Path]) -> Tarball:
    """Write `plan`'s tarball to `dest`; `blobs` yields the file of each of `plan.fetch`, in order, as it
    arrives (it may block). The configs are read for the platforms while they are still there."""
    paths: dict[str, Path] = {}

    def arriving() -> Iterator[TarBlob]:
        for document in plan.documents:
            yield TarBlob(document.digest, len(document.raw), data=document.raw)
        for descriptor, path in zip(plan.fetch, blobs):
            paths[descriptor.digest] = path
            yield TarBlob(descriptor.digest, descriptor.size, path)

    written = write_image_tar(
        dest,
        reference=resolved.reference,
        top=plan.top.to_dict(),
        image_manifest=plan.docker_manifest().document,
        blobs=arriving(),
    )
    return Tarball(written, _platforms(plan, paths))


def _platforms(plan: ImagePlan, paths: dict[str, Path]) -> dict[str, Platform]:
    """Platform of each kept image manifest: from its index entry, else from the image's config."""
    found: dict[str, Platform] = {}
    for manifest in plan.image_manifests():
        platform = plan.entry_platforms.get(manifest.digest)
        if platform is None:
            try:
                config = json.loads(paths[manifest.config().digest].read_bytes())
                platform = Platform.from_dict(config)
            except (ValueError, OSError, KeyError, AttributeError):
                platform = None
        if platform is not None:
            found[manifest.digest] = platform
    return found


def bundle_image(
    resolved: ResolvedImage,
    plan: ImagePlan,
    file: str,
    tarball: Tarball,
    requested: Sequence[Platform] | None,
) -> BundleImage:
    """The lock entry for a tarball just written at `file` (relative to the bundle)."""
    platforms = tarball.platforms
    return BundleImage(
        reference=resolved.reference,
        digest=plan.upstream.digest,
        media_type=plan.upstream.media_type,
        file=file,
        file_size=tarball.file.size,
        file_sha256=tarball.file.sha256,
        top=plan.top,
        kept=plan.kept,
        manifests=tuple(replace(m.descriptor(), platform=platforms.get(m.digest)) for m in plan.manifests),
        platforms=tuple(platforms[m.digest] for m in plan.image_manifests() if m.digest in platforms),
        requested_platforms=None if requested is None else tuple(requested),
        blobs=plan.blobs,
        resolved=resolved,
        downloaded=utc_now(),
        note=plan.note,
    )
