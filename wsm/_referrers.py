"""Referrers carried along: the signatures, SBOMs and attestations that refer to an image, found upstream by
the scheme the source uses and written to the internal registry by the same scheme.

Three schemes (`ReferrerScheme`): the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`), its
fallback for registries without it (tag `sha256-<hex>` holding an index of the referrers), and cosign's tags
`sha256-<hex>.sig`, `.att`, `.sbom`. Subjects are the digests the image tarball holds (its top and every kept
manifest): a referrer of an upstream index that was cut to some platforms has no subject inside the gap.
The manifests and blobs go to `referrers/<hex>` in the bundle, one file per digest (SHA256SUMS covers them),
and each referrer is recorded in the lock beside its image (`BundleImage.referrers`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._bundle import Bundle, read_regular_file
from ._exceptions import BundleError, DigestMismatch, WsmError
from ._files import commit_partial, partial_path, write_atomically
from ._lock import REFERRERS_DIR, BundleImage, BundleReferrer, ReferrerScheme, referrer_file
from ._reference import Reference
from ._remote import OCI_INDEX, Descriptor, Manifest, RegistryClient, compute_digest, is_sha256_digest
from ._remote._client import MAX_MANIFEST_BYTES

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
_MAX_DEPTH = 2  # a tag index names manifests; a referrer that is an index names manifests: no deeper


def subjects(image: BundleImage) -> list[str]:
    """The digests a referrer may name that the internal registry will hold: the top and the kept manifests."""
    return list(dict.fromkeys([image.top.digest, *(manifest.digest for manifest in image.manifests)]))


def fallback_tag(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}"


# ------------------------------------------------------------------------------------------------ download


@dataclass
class _Finder:
    """Finds and stores the referrers of one image, from its source repository."""

    client: RegistryClient
    root: Path  # the bundle
    source: Reference
    _tags: set[str] | None = None

    def tags(self) -> set[str]:
        if self._tags is None:  # one tag listing per image, asked only when a tag scheme needs it
            self._tags = set(self.client.list_tags(self.source))
        return self._tags

    def find(self, subject: str) -> list[BundleReferrer]:
        found: list[BundleReferrer] = []
        index = self.client.referrers(self.source, subject)
        if index is not None:
            for entry in index.document.get("manifests") or []:
                descriptor = Descriptor.from_dict(entry, f"referrers of {subject}")
                self.check(descriptor.digest)
                found.append(self.carry(subject, ReferrerScheme.API, None, descriptor.digest,
                                        _text(entry.get("artifactType"))))
        elif fallback_tag(subject) in self.tags():
            found.append(self.carry(subject, ReferrerScheme.TAG_INDEX, fallback_tag(subject), None, None))
        for suffix in COSIGN_SUFFIXES:
            tag = fallback_tag(subject) + suffix
            if tag in self.tags():
                found.append(self.carry(subject, ReferrerScheme.COSIGN, tag, None, None))
        return found

    def carry(self, subject: str, scheme: ReferrerScheme, tag: str | None, digest: str | None,
              artifact_type: str | None) -> BundleReferrer:
        """Fetch the manifest (by tag or digest), everything it names, into referrers/; its lock record."""
        manifest = self.client.get_manifest(self.source.with_digest(None).with_tag(tag) if tag
                                            else self.source.with_tag(None).with_digest(digest))
        blobs = self.store(manifest, 0)
        if scheme is ReferrerScheme.TAG_INDEX and not manifest.is_index:
            raise BundleError(f"{self.source.name}:{tag} is not an index of referrers ({manifest.media_type})")
        artifact_type = artifact_type or _text(manifest.document.get("artifactType"))
        return BundleReferrer(subject, scheme, manifest.descriptor(), artifact_type, tag, tuple(blobs))

    def store(self, manifest: Manifest, depth: int) -> list[Descriptor]:
        """Write `manifest` and what it names; returns the descriptors of what it names (not itself)."""
        write_atomically(self.root / referrer_file(manifest.digest), manifest.raw)
        named: list[Descriptor] = []
        if manifest.is_index:
            if depth >= _MAX_DEPTH:
                raise BundleError(f"referrer {manifest.digest} of {self.source.name}: indexes nested too deep")
            for child in manifest.children():
                self.check(child.digest)
                child_manifest = self.client.get_manifest(self.source.with_tag(None).with_digest(child.digest))
                named += [child_manifest.descriptor(), *self.store(child_manifest, depth + 1)]
            return named
        for blob in [manifest.config(), *manifest.layers()]:
            self.fetch_blob(blob)
            named.append(blob)
        return named

    def check(self, digest: str) -> None:
        check_digest(digest, f"a referrer of {self.source.name}")

    def fetch_blob(self, blob: Descriptor) -> None:
        self.check(blob.digest)
        path = self.root / referrer_file(blob.digest)
        if path.is_file() and path.stat().st_size == blob.size:
            return  # content-addressed, and verify re-hashes it
        partial = partial_path(path)
        self.client.fetch_blob(self.source.with_tag(None).with_digest(blob.digest), blob, partial)
        commit_partial(partial, path)


def find_referrers(client: RegistryClient, root: Path, image: BundleImage) -> tuple[BundleReferrer, ...]:
    """Every referrer of the image's subjects upstream, stored under root/referrers/."""
    (root / REFERRERS_DIR).mkdir(exist_ok=True)
    finder = _Finder(client, root, image.reference)
    return tuple(referrer for subject in subjects(image) for referrer in finder.find(subject))


def check_digest(digest: str, what: str) -> None:
    """A digest read from upstream or a manifest, before it becomes a URL or a file name (`referrers/<hex>`)."""
    if not is_sha256_digest(digest):
        raise BundleError(f"{what} names {digest[:80]!r}: only sha256 digests are carried")


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


# ------------------------------------------------------------------------------------------------ push


@dataclass
class ReferrerPush:
    source: str  # the image's source reference
    target: str  # where the referrer went: a tag, or the repository by digest
    digest: str
    scheme: str
    error: WsmError | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "digest": self.digest, "scheme": self.scheme,
                **({"error": str(self.error)} if self.error else {})}


def push_referrers(bundle: Bundle, entries: Sequence[BundleImage], targets: Mapping[Reference, Reference],
                   client: RegistryClient, *, dry_run: bool = False) -> list[ReferrerPush]:
    """Write each image's referrers into its target repository by the scheme they were found by."""
    results: list[ReferrerPush] = []
    for entry in entries:
        target = targets[entry.reference]
        for referrer in entry.referrers:
            where = _where(target, referrer)
            result = ReferrerPush(entry.key, where.canonical, referrer.manifest.digest, referrer.scheme.value)
            if not dry_run:
                try:
                    _push_one(bundle.root, client, target, referrer)
                except WsmError as error:
                    result.error = error
            results.append(result)
    return results


def _where(target: Reference, referrer: BundleReferrer) -> Reference:
    if referrer.tag is not None:
        return target.with_digest(None).with_tag(referrer.tag)
    return target.with_tag(None).with_digest(referrer.manifest.digest)


def _push_one(root: Path, client: RegistryClient, target: Reference, referrer: BundleReferrer) -> None:
    by_digest = target.with_tag(None)
    manifest = _read_manifest(root, referrer.manifest)
    _push_manifest_tree(root, client, by_digest, manifest, 0)
    client.put_manifest(_where(target, referrer), manifest.raw, manifest.media_type)
    if referrer.scheme is ReferrerScheme.API and client.referrers(by_digest, referrer.subject) is None:
        _add_to_fallback_index(client, by_digest, referrer)  # what a 1.1 client does on a registry without the API


def _push_manifest_tree(root: Path, client: RegistryClient, target: Reference, manifest: Manifest, depth: int) -> None:
    """Blobs first, then the manifests an index names (by digest); the manifest itself is left to the caller."""
    if manifest.is_index:
        if depth >= _MAX_DEPTH:
            raise BundleError(f"referrer {manifest.digest}: indexes nested too deep")
        for child in manifest.children():
            child_manifest = _read_manifest(root, child)
            _push_manifest_tree(root, client, target, child_manifest, depth + 1)
            client.put_manifest(target.with_digest(child.digest), child_manifest.raw, child_manifest.media_type)
        return
    for blob in [manifest.config(), *manifest.layers()]:
        check_digest(blob.digest, f"referrer {manifest.digest}")
        path = root / referrer_file(blob.digest)
        if not path.is_file():
            raise BundleError(f"{path} is missing; run wsm verify, then download again", path=path)
        client.push_blob(target, blob, path)


def _read_manifest(root: Path, descriptor: Descriptor) -> Manifest:
    check_digest(descriptor.digest, "a referrer")
    path = root / referrer_file(descriptor.digest)
    raw = read_regular_file(path, MAX_MANIFEST_BYTES)
    if compute_digest(raw) != descriptor.digest:
        raise DigestMismatch(f"{path} does not hash to {descriptor.digest}; run wsm verify",
                             expected=descriptor.digest, actual=compute_digest(raw))
    return Manifest.from_bytes(raw, descriptor.media_type)


def _add_to_fallback_index(client: RegistryClient, target: Reference, referrer: BundleReferrer) -> None:
    """Add the referrer to the `sha256-<hex>` tag index of its subject (made when there is none)."""
    tag = target.with_digest(None).with_tag(fallback_tag(referrer.subject))
    entries: list[dict[str, Any]] = []
    if client.head_manifest(tag) is not None:
        existing = client.get_manifest(tag)
        entries = list(existing.document.get("manifests") or []) if existing.is_index else []
    if any(isinstance(e, dict) and e.get("digest") == referrer.manifest.digest for e in entries):
        return
    entry = {**referrer.manifest.to_dict(), **({"artifactType": referrer.artifact_type} if referrer.artifact_type else {})}
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, entry]}
    client.put_manifest(tag, json.dumps(document, indent=2).encode(), OCI_INDEX)
