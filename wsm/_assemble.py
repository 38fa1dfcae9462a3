"""From a plan and its blobs to an image tarball in the bundle, and the lock entry that records it.

The tarball is written while its blobs are still arriving: manifests first (they are in memory), then each
config and layer, downloaded straight into its place (each byte written once), or copied in from the blob
store for a blob that several images of the run share. `wsm._layout` writes the
file (`.partial`, fsync, rename); only a tarball complete under its final name gets a lock entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ._format import utc_now
from ._exceptions import BundleError
from ._layout import FileDigest, ImageTarWriter, TarBlob, TarMember
from ._lock import BundleImage
from ._model import ResolvedImage
from ._plan import ImagePlan
from ._remote import Platform


@dataclass(frozen=True)
class Tarball:
    """A written image tarball."""

    file: FileDigest  # its size and sha256
    platforms: dict[str, Platform]  # the platform of each kept image manifest, by digest, where known


Fill = Callable[[TarMember], None]  # writes one blob's bytes into its place in the tarball (a download)


def write_tarball(
    dest: Path, resolved: ResolvedImage, plan: ImagePlan, blobs: Iterable[Path | Fill], partial: Path | None = None
) -> Tarball:
    """Write `plan`'s tarball to `dest`; `blobs` yields, for each of `plan.fetch` in order, either its verified
    file (copied in) or a `Fill` that downloads it straight into its place (it may block).

    With `partial`, the tarball is written there and continued from what an earlier run left in it; it stays
    when writing fails, for the next run. The configs are read back from the tarball for the platforms."""
    with ImageTarWriter(dest, reference=resolved.reference, top=plan.top.to_dict(),
                        image_manifest=plan.docker_manifest().document, partial=partial,
                        resume=partial is not None) as writer:
        for document in plan.documents:
            writer.add(TarBlob(document.digest, len(document.raw), data=document.raw))
        for descriptor, source in zip(plan.fetch, blobs):
            if isinstance(source, Path):
                writer.add(TarBlob(descriptor.digest, descriptor.size, source))
            else:
                writer.add_streamed(descriptor.digest, descriptor.size, source)
        platforms = _platforms(plan, writer.read_member)
        return Tarball(writer.commit(), platforms)


def _platforms(plan: ImagePlan, read_blob: Callable[[str], bytes]) -> dict[str, Platform]:
    """Platform of each kept image manifest: from its index entry, else from the image's config."""
    found: dict[str, Platform] = {}
    for manifest in plan.image_manifests():
        platform = plan.entry_platforms.get(manifest.digest)
        if platform is None:
            try:
                config = json.loads(read_blob(manifest.config().digest))
                platform = Platform.from_dict(config)
            except (ValueError, OSError, KeyError, AttributeError, BundleError):
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
        from_base=plan.from_base,
    )
