"""A delta image's tarball and its base's layers, joined into one tar stream that `docker load` takes.

`docker load` needs every layer its manifest.json lists, and a delta's tarball leaves the base's out. The
stream is made on the fly, nothing is written to disk: every member of the delta's tarball (read in place),
then each left-out layer read from the base tarball that holds it, hashed as it passes (a layer that does not
hash to its digest breaks the stream before the tar ends, so docker loads nothing of it), then the tar's end.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ._bundle import Bundle
from ._delta import DeltaBase, base_tarball_of
from ._exceptions import BundleError, DigestMismatch, Hint
from ._layout import CHUNK, Opener, blob_member, tar_header, tar_members
from ._lock import BundleImage
from ._parts import opener_for

_BLOCK = tarfile.BLOCKSIZE


def joined_stream(bundle: Bundle, entry: BundleImage, base: DeltaBase | None) -> Iterator[bytes]:
    """The full docker-archive stream of a delta image; every base layer is found (or this raises) before the
    stream is returned."""
    return _stream(bundle.path(entry), opener_for(bundle.root, entry.parts), _base_sources(bundle, entry, base))


# Where a layer is: the tarball (its path names it in messages), how to open it when it is stored in parts,
# and the layer's offset and size in it.
_Source = tuple[Path, Opener | None, int, int]


def _stream(path: Path, opener: Opener | None, sources: dict[str, _Source]) -> Iterator[bytes]:
    for name, (offset, size) in sorted(tar_members(path, opener).items(), key=lambda item: item[1][0]):
        yield from _member(name, (path, opener, offset, size), None)
    for digest, source in sources.items():
        yield from _member(blob_member(digest), source, digest)
    yield b"\0" * (2 * _BLOCK)


def _base_sources(bundle: Bundle, entry: BundleImage, base: DeltaBase | None) -> dict[str, _Source]:
    """Where each layer the delta leaves out is, in the base's tarballs (whole or in parts)."""
    if base is None or base.bundle is None:
        raise BundleError(f"{entry.file} is part of a delta bundle: {len(entry.from_base)} of its layers are in "
                          f"base {bundle.lock.base.digest if bundle.lock.base else '?'}", path=bundle.root,
                          hint=Hint.BASE)
    if bundle.lock.base is None or not base.matches(bundle.lock.base):
        raise BundleError(f"base {base.bundle.root} has digest {base.record.digest}, bundle {bundle.root} was made "
                          f"against {bundle.lock.base.digest if bundle.lock.base else 'no base'}", path=base.bundle.root,
                          hint=Hint.BASE)
    sources: dict[str, _Source] = {}
    members: dict[Path, dict[str, tuple[int, int]]] = {}
    for blob in entry.from_base:
        holder = base_tarball_of(base.bundle, blob.digest)
        if holder is None:
            raise BundleError(f"base {base.bundle.root} holds no layer {blob.digest}, which {entry.file} needs",
                              path=base.bundle.root)
        tarball, opener = base.bundle.path(holder), opener_for(base.bundle.root, holder.parts)
        found = members.setdefault(tarball, tar_members(tarball, opener)).get(blob_member(blob.digest))
        if found is None or found[1] != blob.size:
            raise BundleError(f"{tarball}: layer {blob.digest} is missing or of another size; run wsm verify on the "
                              "base", path=tarball)
        sources[blob.digest] = (tarball, opener, found[0], found[1])
    return sources


def _member(name: str, source: _Source, digest: str | None) -> Iterator[bytes]:
    """One tar member: its header, its bytes read from `source` (hashed against `digest`), padding."""
    path, opener, offset, size = source
    yield tar_header(name, size)
    hasher = hashlib.sha256()
    with opener() if opener is not None else open(path, "rb") as handle:
        handle.seek(offset)
        left = size
        while left:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                raise BundleError(f"{path}: ended inside {name}; run wsm verify", path=path)
            hasher.update(chunk)
            left -= len(chunk)
            if left == 0 and digest is not None and "sha256:" + hasher.hexdigest() != digest:
                raise DigestMismatch(f"{path}: layer {digest} hashes to sha256:{hasher.hexdigest()}; run wsm verify "
                                     "on the base", expected=digest, actual="sha256:" + hasher.hexdigest())
            yield chunk
    if size % _BLOCK:
        yield b"\0" * (_BLOCK - size % _BLOCK)
