"""What one image's tarball will hold, decided from its manifests alone, before any layer is fetched.

Pure: no registry, no files. The caller fetches the upstream manifest, asks `select_children` which of its
index entries the tarball keeps, fetches those manifests, and hands them to `plan_image`. The rules are the
ones README.md documents under "Platforms":

- an image manifest is kept as it is, whatever platforms were asked for;
- an index with every entry kept is kept byte for byte (`Kept.AS_IS`), attestations included;
- one platform kept: that platform's manifest becomes the top (`Kept.PLATFORM`);
- several but not all: a new index over the kept entries (`Kept.SUBSET_INDEX`, `Manifest.subset`), with the
  attestations that refer to the kept platforms, in upstream order; its digest is wsm's, and the note says so;
- a platform the image lacks fails the image in one line naming what it has; an index nesting another index
  is refused (wsm keeps one level).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._exceptions import NotFound
from ._lock import Kept
from ._reference import Reference
from ._remote import Descriptor, Manifest, Platform

AMD64 = Platform("linux", "amd64")  # what `docker load` gets when the tarball holds it
_ATTESTATION = "attestation-manifest"  # buildx's `vnd.docker.reference.type` for SBOM/provenance entries
_REFERS_TO = "vnd.docker.reference.digest"  # the platform manifest an attestation entry is about
_IN_TOTO = "application/vnd.in-toto"


def is_attestation(entry: Descriptor) -> bool:
    """An index entry that is an attestation (buildx marks them, and gives them platform unknown/unknown)."""
    annotations = entry.annotations or {}
    platform = entry.platform
    return annotations.get("vnd.docker.reference.type") == _ATTESTATION or (
        platform is not None and platform.os == "unknown" and platform.architecture == "unknown"
    )


def is_attestation_manifest(manifest: Manifest) -> bool:
    """A manifest whose layers are in-toto statements: nothing an engine can run."""
    return any((layer.media_type or "").startswith(_IN_TOTO) for layer in manifest.layers())


# ------------------------------------------------------------------------------------------ which children


@dataclass(frozen=True)
class Selection:
    """The index entries whose manifests the tarball holds, in upstream order, and how the image is kept."""

    kept: Kept
    children: tuple[Descriptor, ...] = ()


def select_children(upstream: Manifest, platforms: Sequence[Platform] | None, reference: Reference) -> Selection:
    """Which entries of `upstream` to keep for `platforms` (None: all); an image manifest has none to choose.

    Raises `NotFound` naming the platforms the image has when one asked for is not among them.
    """
    if not upstream.is_index:
        return Selection(Kept.AS_IS)
    children = upstream.children()
    chosen = _choose(children, platforms, reference)
    if len(chosen) == len(children):
        return Selection(Kept.AS_IS, tuple(children))
    images = [child for child in chosen if not is_attestation(child)]
    if len(images) == 1:  # the platform manifest alone: its attestations would have no index to hang from
        return Selection(Kept.PLATFORM, (images[0],))
    return Selection(Kept.SUBSET_INDEX, tuple(chosen))


def _choose(children: list[Descriptor], platforms: Sequence[Platform] | None, reference: Reference) -> list[Descriptor]:
    if platforms is None:
        return children
    images = [child for child in children if child.platform is not None and not is_attestation(child)]
    chosen: list[Descriptor] = []
    missing: list[str] = []
    for wanted in platforms:
        match = next((child for child in images if child.platform is not None and wanted.matches(child.platform)), None)
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
        child for child in children if is_attestation(child) and (child.annotations or {}).get(_REFERS_TO) in digests
    ]
    return [child for child in children if child in chosen]  # in upstream order


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class ImagePlan:
    """Everything one image's tarball will hold."""

    upstream: Manifest  # what the reference resolved to
    kept: Kept
    top: Descriptor  # what the tarball's index.json points at
    manifests: tuple[Manifest, ...]  # the manifests kept (images and attestations), in upstream order
    fetch: tuple[Descriptor, ...]  # configs and layers, each once, in manifest order
    index: Manifest | None = None  # the index wsm wrote over a subset of platforms
    note: str | None = None  # set when the top is not the upstream image as is
    # The platform of each kept manifest as its index entry states it (an image manifest states none).
    entry_platforms: dict[str, Platform] = field(default_factory=dict, hash=False)
    # A delta's layers left out of `fetch` because its base holds them (`wsm._delta.leave_out_base`).
    from_base: tuple[Descriptor, ...] = ()

    @property
    def documents(self) -> tuple[Manifest, ...]:
        """Every manifest and index blob of the tarball, each once: the top index first, then the manifests."""
        top: list[Manifest] = []
        if self.kept is Kept.SUBSET_INDEX and self.index is not None:
            top = [self.index]
        elif self.kept is Kept.AS_IS and self.upstream.is_index:
            top = [self.upstream]
        unique: dict[str, Manifest] = {}
        for document in [*top, *self.manifests]:
            unique.setdefault(document.digest, document)
        return tuple(unique.values())

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Every blob of the tarball, as the lock lists them."""
        return tuple(document.descriptor() for document in self.documents) + self.fetch

    @property
    def size(self) -> int:
        """Bytes of blobs the tarball holds (about its size: tar headers are not counted)."""
        return sum(blob.size for blob in self.blobs)

    def image_manifests(self) -> list[Manifest]:
        """The kept manifests an engine can run (attestations left out)."""
        return [manifest for manifest in self.manifests if not is_attestation_manifest(manifest)]

    def docker_manifest(self) -> Manifest:
        """The one platform `docker load` gets: linux/amd64 when kept, else the first kept."""
        images = self.image_manifests()
        for manifest in images:
            platform = self.entry_platforms.get(manifest.digest)
            if platform is not None and AMD64.matches(platform):
                return manifest
        return images[0]


def plan_image(
    reference: Reference,
    upstream: Manifest,
    children: Mapping[str, Manifest],
    platforms: Sequence[Platform] | None,
) -> ImagePlan:
    """The plan for `upstream`; `children` holds (at least) the manifests `select_children` named, by digest.

    Raises `NotFound` for a platform the image lacks, an index nesting another index, or an image that has
    nothing but attestations.
    """
    selection = select_children(upstream, platforms, reference)
    if not upstream.is_index:
        return _plan(reference, upstream, Kept.AS_IS, upstream.descriptor(), (upstream,), {})
    kept = tuple(_child(reference, children, entry) for entry in selection.children)
    stated = {entry.digest: entry.platform for entry in selection.children if entry.platform is not None}
    if selection.kept is Kept.AS_IS:
        return _plan(reference, upstream, Kept.AS_IS, upstream.descriptor(), kept, stated)
    if selection.kept is Kept.PLATFORM:
        (entry,) = selection.children
        note = f"platform {entry.platform} of upstream index {upstream.digest}"
        return _plan(reference, upstream, Kept.PLATFORM, entry, kept, stated, note=note)
    index = upstream.subset({entry.digest for entry in selection.children})
    names = ", ".join(str(entry.platform) for entry in selection.children if not is_attestation(entry))
    note = f"index written by wsm over {names} of upstream index {upstream.digest} (not an upstream digest)"
    return _plan(reference, upstream, Kept.SUBSET_INDEX, index.descriptor(), kept, stated, index=index, note=note)


def _child(reference: Reference, children: Mapping[str, Manifest], entry: Descriptor) -> Manifest:
    manifest = children.get(entry.digest)
    if manifest is None:
        raise ValueError(f"{reference.familiar}: the manifest of index entry {entry.digest} was not given")
    if manifest.is_index:
        raise NotFound(f"{reference.familiar}: index {entry.digest} nests another index; wsm keeps one level")
    return manifest


def _plan(
    reference: Reference,
    upstream: Manifest,
    kept: Kept,
    top: Descriptor,
    manifests: tuple[Manifest, ...],
    stated: dict[str, Platform],
    *,
    index: Manifest | None = None,
    note: str | None = None,
) -> ImagePlan:
    fetch: dict[str, Descriptor] = {}
    for manifest in manifests:
        for descriptor in [manifest.config(), *manifest.layers()]:
            fetch.setdefault(descriptor.digest, descriptor)
    plan = ImagePlan(upstream, kept, top, manifests, tuple(fetch.values()), index, note, stated)
    if not plan.image_manifests():
        raise NotFound(f"{reference.familiar}: no image manifest to load (only attestations)")
    return plan
