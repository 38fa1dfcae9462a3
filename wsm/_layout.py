"""The image tarball: one tar per image that `docker load`, `podman load` and skopeo (`oci-archive:` and
`docker-archive:`) all read, holding the registry's blobs byte for byte.

Members (order is free for every reader; this is the order we write):

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 an OCI index with ONE entry: the image's top manifest or index, annotated with
                               its fully qualified name (podman and containerd name the image from it)
    manifest.json              Docker's list: [{"Config", "RepoTags", "Layers"}] for one platform (docker
                               loads only what this lists; without it `docker load` refuses the tar)
    blobs/sha256/<hex>         every manifest, index, config and layer, exactly as the registry served it

Several platforms are nested (index.json -> one index blob -> platform manifests): a flat index.json with
two images makes skopeo refuse the archive ("more than one image").

Writing streams: headers are made by `tarfile`, blob bytes are copied by the kernel (`copy_file_range`, else
`sendfile`, else a buffered copy) and hashed as they pass, so memory does not grow with blob size and the
tar's sha256 comes out of the same pass. Reading for verification is one sequential pass too.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import BundleError, TarballError
from ._files import partial_path
from ._reference import Reference

OCI_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
BLOBS_DIR = "blobs/sha256/"
CHUNK = 1024 * 1024  # hashing reads; large sequential reads of page-cached data are the cheapest here
_BLOCK = tarfile.BLOCKSIZE
_MAX_JSON_MEMBER = 16 * 1024 * 1024  # index.json / manifest.json larger than this are not ours


def blob_member(digest: str) -> str:
    """The tar member holding `digest` ("sha256:<hex>")."""
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or not hex_part:
        raise BundleError(f"blob {digest!r}: only sha256 digests can be stored in an image tarball")
    return BLOBS_DIR + hex_part


@dataclass(frozen=True)
class TarBlob:
    """A verified blob to put into a tarball: a file on disk (layers, configs) or bytes (manifests)."""

    digest: str
    size: int
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str  # hex, as SHA256SUMS writes it


def index_json(top: dict[str, Any], reference: Reference) -> bytes:
    """index.json: one entry pointing at `top` (an OCI descriptor), named for podman and containerd."""
    annotations = dict(top.get("annotations") or {})
    annotations[NAME_ANNOTATION] = image_name(reference)
    if reference.tag:
        annotations[REF_NAME_ANNOTATION] = reference.tag
    entry = {key: value for key, value in top.items() if key != "annotations"}
    entry["annotations"] = annotations
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": [entry]})


def image_name(reference: Reference) -> str:
    """The fully qualified name an engine should give the loaded image: with the tag, else with the digest."""
    if reference.tag:
        return f"{reference.name}:{reference.tag}"
    return f"{reference.name}@{reference.digest}"


def docker_manifest_json(image_manifest: dict[str, Any], reference: Reference) -> bytes:
    """Docker's manifest.json for one image manifest; an untagged reference loads as an untagged image."""
    repo_tags = [reference.with_digest(None).familiar] if reference.tag else []
    entry = {
        "Config": blob_member(image_manifest["config"]["digest"]),
        "RepoTags": repo_tags,
        "Layers": [blob_member(layer["digest"]) for layer in image_manifest.get("layers", [])],
    }
    return _json([entry])


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False).encode() + b"\n"


def write_image_tar(
    dest: Path,
    *,
    reference: Reference,
    top: dict[str, Any],
    image_manifest: dict[str, Any],
    blobs: Iterable[TarBlob],
) -> FileDigest:
    """Write the tarball for `reference` to `dest`, atomically: `dest.partial`, fsync, then rename.

    `top` is the descriptor index.json points at; `image_manifest` is the parsed platform manifest that
    manifest.json lists for docker; `blobs` are all the blobs the tarball holds. `blobs` may be a generator
    that waits for each blob to arrive: each is copied in as soon as it is there, in the order given.
    """
    with ImageTarWriter(dest, reference=reference, top=top, image_manifest=image_manifest) as writer:
        for blob in blobs:
            writer.add(blob)
        return writer.commit()


class ImageTarWriter:
    """One image tarball being written: `add` blobs, then `commit`; leaving the `with` block without
    committing (an exception) deletes the partial file."""

    def __init__(self, dest: Path, *, reference: Reference, top: dict[str, Any], image_manifest: dict[str, Any]):
        self.dest = dest
        self._tar = _TarWriter(partial_path(dest))
        self._seen: set[str] = set()
        self._committed = False
        try:
            self._tar.add_bytes("oci-layout", OCI_LAYOUT)
            self._tar.add_bytes("index.json", index_json(top, reference))
            self._tar.add_bytes("manifest.json", docker_manifest_json(image_manifest, reference))
            self._tar.add_directory("blobs/")
            self._tar.add_directory(BLOBS_DIR)
        except BaseException:
            self._tar.abort()
            raise

    def add(self, blob: TarBlob) -> None:
        if blob.digest in self._seen:
            return
        self._seen.add(blob.digest)
        if blob.data is not None:
            self._tar.add_bytes(blob_member(blob.digest), blob.data)
        elif blob.path is not None:
            self._tar.add_file(blob_member(blob.digest), blob.path, blob.size)
        else:
            raise ValueError(f"TarBlob {blob.digest} has neither a path nor data")  # a bug of the caller

    def commit(self) -> FileDigest:
        result = self._tar.finish()
        os.replace(self._tar.path, self.dest)
        self._committed = True
        return result

    def __enter__(self) -> ImageTarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            self._tar.abort()


class _TarWriter:
    """A plain (uncompressed) tar written with raw fds so that blob bytes can be copied by the kernel."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.hasher = hashlib.sha256()
        self.size = 0
        self._buffer = bytearray(CHUNK)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.hasher.update(data)
        self.size += len(data)

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        # PAX: sizes past 8 GiB (large ML layers) get an extended header instead of failing.
        self._write(info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict"))

    def _pad(self, size: int) -> None:
        remainder = size % _BLOCK
        if remainder:
            self._write(bytes(_BLOCK - remainder))

    def add_directory(self, name: str) -> None:
        self._header(name, 0, tarfile.DIRTYPE)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._write(data)
        self._pad(len(data))

    def add_file(self, name: str, source: Path, size: int) -> None:
        self._header(name, size)
        with open(source, "rb") as handle:
            actual = os.fstat(handle.fileno()).st_size
            if actual != size:
                raise BundleError(f"blob {source.name}: {actual} bytes on disk, the manifest says {size}")
            self._hash_source(handle, size)
            handle.seek(0)
            _copy_fd(handle.fileno(), self.fd, size)
        self.size += size
        self._pad(size)

    def _hash_source(self, handle: io.BufferedReader, size: int) -> None:
        # The kernel copies the bytes; we read them once more (from the page cache) to hash the tar.
        view = memoryview(self._buffer)
        remaining = size
        while remaining:
            count = handle.readinto(view[: min(CHUNK, remaining)])
            if not count:
                raise BundleError(f"blob {handle.name}: shorter than its {size} bytes")
            self.hasher.update(view[:count])
            remaining -= count

    def finish(self) -> FileDigest:
        self._write(bytes(2 * _BLOCK))  # end-of-archive marker
        # fsync before the rename: a tarball that exists under its final name must be on the disk.
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        return FileDigest(self.size, self.hasher.hexdigest())

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)


def _copy_fd(source: int, dest: int, size: int) -> None:
    """Copy `size` bytes from the start of `source` to the current position of `dest`, in the kernel if it can.

    copy_file_range is refused across some filesystems and by older kernels, sendfile by a few more: each
    refusal carries on from where the last way stopped.
    """
    done = 0
    for step in COPY_STEPS:
        try:
            while done < size:
                count = step(source, dest, done, size - done)
                if count == 0:
                    raise BundleError(f"a blob ended after {done} of {size} bytes while copying it into the tarball")
                done += count
            return
        except OSError as error:
            if error.errno not in _FALLBACK_ERRNOS or step is COPY_STEPS[-1]:
                raise


_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}


def _copy_file_range(source: int, dest: int, offset: int, count: int) -> int:
    if not hasattr(os, "copy_file_range"):
        raise OSError(errno.ENOSYS, "copy_file_range is not available")
    return os.copy_file_range(source, dest, count, offset)  # dest: at (and advancing) its own position


def _sendfile(source: int, dest: int, offset: int, count: int) -> int:
    return os.sendfile(dest, source, offset, count)


def _read_write(source: int, dest: int, offset: int, count: int) -> int:
    data = os.pread(source, min(CHUNK, count), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(dest, view) :]
    return len(data)


COPY_STEPS = [_copy_file_range, _sendfile, _read_write]


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class TarScan:
    """What one sequential pass over a tarball found."""

    path: Path
    size: int = 0
    sha256: str = ""  # of the whole file, hex
    blobs: dict[str, tuple[int, str]] = field(default_factory=dict)  # "sha256:<hex>" -> (size, actual digest)
    json_members: dict[str, bytes] = field(default_factory=dict)  # index.json, manifest.json, oci-layout

    def json(self, name: str) -> Any:
        if name not in self.json_members:
            raise TarballError(self.path, f"no {name} inside; the tarball is not a wsm image tarball")
        try:
            return json.loads(self.json_members[name])
        except ValueError:
            raise TarballError(self.path, f"{name} inside is not valid JSON") from None


_SMALL_MEMBERS = ("oci-layout", "index.json", "manifest.json")


def scan_image_tar(path: Path, on_bytes: Callable[[int], None] | None = None) -> TarScan:
    """Hash the whole file and every blob inside it in one sequential read, without extracting anything."""
    members = _member_ranges(path)
    scan = TarScan(path=path)
    whole = hashlib.sha256()
    hashers = {name: hashlib.sha256() for name, _, _ in members}
    small: dict[str, bytearray] = {name: bytearray() for name, _, _ in members if name in _SMALL_MEMBERS}
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    position = 0
    cursor = 0  # first member that may still overlap what is read next
    with open(path, "rb") as handle:
        while count := handle.readinto(view):
            chunk = view[:count]
            whole.update(chunk)
            end = position + count
            while cursor < len(members) and members[cursor][1] + members[cursor][2] <= position:
                cursor += 1
            index = cursor
            while index < len(members) and members[index][1] < end:
                name, start, length = members[index]
                low, high = max(start, position), min(start + length, end)
                if low < high:
                    piece = chunk[low - position : high - position]
                    hashers[name].update(piece)
                    if name in small:
                        small[name] += piece
                index += 1
            position = end
            if on_bytes:
                on_bytes(count)
    scan.size = position
    scan.sha256 = whole.hexdigest()
    for name, _, length in members:
        if name.startswith(BLOBS_DIR):
            scan.blobs["sha256:" + name[len(BLOBS_DIR) :]] = (length, "sha256:" + hashers[name].hexdigest())
    scan.json_members = {name: bytes(data) for name, data in small.items()}
    return scan


def _member_ranges(path: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every regular member, in file order; headers only are read."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            ranges = [(m.name, m.offset_data, m.size) for m in _regular_members(tar, path)]
    except (tarfile.TarError, EOFError) as error:
        raise TarballError(path, f"not a readable tar ({error}); download it again") from None
    for name, _, size in ranges:
        if name in _SMALL_MEMBERS and size > _MAX_JSON_MEMBER:
            raise TarballError(path, f"{name} inside is {size} bytes; the tarball is not a wsm image tarball")
    return sorted(ranges, key=lambda item: item[1])


def _regular_members(tar: tarfile.TarFile, path: Path) -> Iterable[tarfile.TarInfo]:
    for member in tar:
        if member.isfile():
            yield member
        elif not member.isdir():
            raise TarballError(path, f"member {member.name!r} is neither a file nor a directory")


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> FileDigest:
    """sha256 of a whole file, streamed."""
    hasher = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    with open(path, "rb") as handle:
        while count := handle.readinto(view):
            hasher.update(view[:count])
            size += count
            if on_bytes:
                on_bytes(count)
    return FileDigest(size, hasher.hexdigest())


def tar_members(path: Path) -> dict[str, tuple[int, int]]:
    """{member name: (data offset, size)} of a tarball's regular members, reading headers only."""
    return {name: (offset, size) for name, offset, size in _member_ranges(path)}
