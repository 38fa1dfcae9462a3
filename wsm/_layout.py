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

Writing streams: headers are made by `tarfile`; a downloading blob is written straight into its member
(`add_streamed`: the header needs only the size), a blob already in a file is copied by the kernel
(`copy_file_range`, else `sendfile`, else a buffered copy); either way the bytes are hashed as they pass, so
memory does not grow with blob size and the tar's sha256 comes out of the same pass. A partial tarball left
by a killed run can be continued (`resume`). Reading for verification is one sequential pass too.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import BundleError, StorageError, TarballError
from ._files import partial_path
from ._reference import Reference

OCI_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
BLOBS_DIR = "blobs/sha256/"
CHUNK = 1024 * 1024  # hashing reads; large sequential reads of page-cached data are the cheapest here
_BATCH = 1024 * 1024  # downloaded bytes handed to a tarball's writing thread at a time
_WRITEBACK = 8 * 1024 * 1024  # downloaded bytes after which their writeback to the disk is started
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
    committing (an exception) deletes the partial file, unless it was opened to `resume`.

    With `resume`, the partial file an earlier (killed) run left is continued: everything written is first
    compared with what is already there (headers and manifests are deterministic), and kept while it matches;
    the file is cut at the first difference. Blob bytes from the network are not compared but hashed again
    (`add_streamed`), and a download continues after them.
    """

    def __init__(self, dest: Path, *, reference: Reference, top: dict[str, Any], image_manifest: dict[str, Any],
                 partial: Path | None = None, resume: bool = False):
        self.dest = dest
        self._tar = _TarWriter(partial or partial_path(dest), resume)
        self._resume = resume
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

    def add_streamed(self, digest: str, size: int, fill: Callable[[TarMember], None]) -> None:
        """Add a blob whose bytes `fill` writes (a download): the header needs only the size, so each byte is
        written once, straight into its place; `fill` must write exactly `size` bytes."""
        if digest in self._seen:
            return
        self._seen.add(digest)
        self._tar.add_streamed(blob_member(digest), size, fill)

    def read_member(self, digest: str, limit: int = _MAX_JSON_MEMBER) -> bytes:
        """A blob written so far (a config, to read its platform), at most `limit` bytes of it."""
        return self._tar.read_member(blob_member(digest), limit)

    def commit(self) -> FileDigest:
        result = self._tar.finish()
        os.replace(self._tar.path, self.dest)
        self._committed = True
        return result

    def __enter__(self) -> ImageTarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._committed:
            return
        if self._resume:
            self._tar.close()  # kept for the next run to continue
        else:
            self._tar.abort()


def tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """The header of one member as every tarball wsm writes has it (mode 644, or 755 for a directory; mtime 0).
    PAX: sizes past 8 GiB (large ML layers) get an extended header instead of failing."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


class _TarWriter:
    """A plain (uncompressed) tar written with raw fds so that blob bytes can be copied by the kernel.

    `existing` bytes at the start of the file are from an earlier run (`resume`): what is written over them
    is compared with them first and only hashed while it matches.
    """

    def __init__(self, path: Path, resume: bool = False):
        self.path = path
        flags = os.O_RDWR | os.O_CREAT | (0 if resume else os.O_TRUNC)
        self.fd = os.open(path, flags, 0o644)
        self.existing = os.fstat(self.fd).st_size
        self.hasher = hashlib.sha256()
        self.size = 0
        self.members: dict[str, tuple[int, int]] = {}  # name -> (data offset, size)
        self._written_back = 0  # where the last `_start_writeback` ended
        self._buffer = bytearray(CHUNK)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self.size < self.existing:
            view = self._keep_matching(view)
        while view:
            written = os.pwrite(self.fd, view, self.size)
            self.hasher.update(view[:written])
            self.size += written
            view = view[written:]

    def _keep_matching(self, view: memoryview) -> memoryview:
        """Take the part of `view` the file already holds if it is the same; cut the file where it is not.
        Returns what is still to be written."""
        overlap = min(len(view), self.existing - self.size)
        if os.pread(self.fd, overlap, self.size) != view[:overlap]:
            self.cut(self.size)
            return view
        self.hasher.update(view[:overlap])
        self.size += overlap
        return view[overlap:]

    def append(self, chunks: list[bytes]) -> None:
        """Bytes for the end of the file: hashed, then written in one system call where the kernel takes it."""
        if self.size < self.existing:  # over what an earlier run left: compared first
            for chunk in chunks:
                self._write(chunk)
            return
        for chunk in chunks:
            self.hasher.update(chunk)
        total = sum(len(chunk) for chunk in chunks)
        written = os.pwritev(self.fd, chunks, self.size) if hasattr(os, "pwritev") else 0
        if written < total:
            rest = memoryview(b"".join(chunks))[written:]
            while rest:
                rest = rest[os.pwrite(self.fd, rest, self.size + total - len(rest)) :]
        self.size += total
        self._start_writeback()

    def _start_writeback(self) -> None:
        """Have the kernel start writing what is there to the disk now, not all at the closing fsync: the disk
        works while the network does, and the page cache holds little of a large layer (Linux starts the
        writeback of dirty pages on DONTNEED, without waiting, and drops the pages already written)."""
        if self.size - self._written_back >= _WRITEBACK and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, self._written_back, self.size - self._written_back, os.POSIX_FADV_DONTNEED)
            self._written_back = self.size

    def cut(self, position: int) -> None:
        """Drop everything from `position` on (nothing from there was hashed yet)."""
        os.ftruncate(self.fd, position)
        self.existing = min(self.existing, position)

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> None:
        self._write(tar_header(name, size, kind))

    def _pad(self, size: int) -> None:
        remainder = size % _BLOCK
        if remainder:
            self._write(bytes(_BLOCK - remainder))

    def add_directory(self, name: str) -> None:
        self._header(name, 0, tarfile.DIRTYPE)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self.members[name] = (self.size, len(data))
        self._write(data)
        self._pad(len(data))

    def add_streamed(self, name: str, size: int, fill: Callable[[TarMember], None]) -> None:
        self._header(name, size)
        self.members[name] = (self.size, size)
        member = TarMember(self, name, size)
        try:
            fill(member)
        finally:
            member.close()  # every byte received is written before the size is checked or the run stops
        if self.size != member.start + size:
            raise BundleError(f"blob {name}: {self.size - member.start} bytes written, the manifest says {size}")
        self._pad(size)

    def add_file(self, name: str, source: Path, size: int) -> None:
        self._header(name, size)
        self.members[name] = (self.size, size)
        if self.size < self.existing:
            self.cut(self.size)  # copied by the kernel, so not compared: written again
        with open(source, "rb") as handle:
            actual = os.fstat(handle.fileno()).st_size
            if actual != size:
                raise BundleError(f"blob {source.name}: {actual} bytes on disk, the manifest says {size}")
            self._hash_source(handle, size)
            handle.seek(0)
            os.lseek(self.fd, self.size, os.SEEK_SET)
            _copy_fd(handle.fileno(), self.fd, size)
        self.size += size
        self._pad(size)

    def read_member(self, name: str, limit: int) -> bytes:
        offset, size = self.members[name]
        if size > limit:
            raise BundleError(f"{name}: {size} bytes, more than the {limit} a config may have")
        return os.pread(self.fd, size, offset)

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
        if self.existing > self.size:
            self.cut(self.size)  # an earlier run's file was longer
        # fsync before the rename: a tarball that exists under its final name must be on the disk.
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        return FileDigest(self.size, self.hasher.hexdigest())

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class TarMember:
    """The data of one tar member, written by a download (a `BlobStorage` for `RegistryClient.fetch_blob`).

    What an earlier run left of it is handed back to be hashed again (`read_stored`); starting over cuts the
    file at the member's first byte and takes the tarball's hash back to that point. Arriving bytes are
    handed to a writing thread in 1 MiB batches, which hashes them for the tarball and writes them while the
    download's thread receives the next batch and hashes it for the blob (hashlib and the system calls
    release the GIL): at most two batches wait in memory.
    """

    def __init__(self, tar: _TarWriter, name: str, size: int):
        self.name = f"{tar.path.name} ({name})"
        self._tar = tar
        self._size = size
        self.start = tar.size
        self._hash_at_start = tar.hasher.copy()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._writing: Future[None] | None = None
        self._writer: ThreadPoolExecutor | None = None

    def stored(self) -> int:
        return max(0, min(self._size, self._tar.existing - self.start))

    def read_stored(self) -> Iterator[bytes]:
        tar, end = self._tar, self.start + self.stored()
        while tar.size < end:
            block = os.pread(tar.fd, min(CHUNK, end - tar.size), tar.size)
            if not block:
                raise BundleError(f"{self.name}: shorter than it was a moment ago")
            tar.hasher.update(block)
            tar.size += len(block)
            yield block

    def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= _BATCH:
            self._wait()
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="wsm-tar")
            self._writing = self._writer.submit(self._append, self._take_pending())

    def truncate(self) -> None:
        self._take_pending()
        try:
            self._wait()
        except StorageError:
            pass  # those bytes are being dropped anyway
        self._tar.cut(self.start)
        self._tar.size = self.start
        self._tar.hasher = self._hash_at_start.copy()

    def discard(self) -> None:
        self.truncate()

    def close(self) -> None:
        """Everything received is hashed and written once this returns (a write error is raised here)."""
        try:
            self._wait()
            if self._pending:
                self._append(self._take_pending())
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    def _take_pending(self) -> list[bytes]:
        batch, self._pending, self._pending_size = self._pending, [], 0
        return batch

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _append(self, batch: list[bytes]) -> None:
        try:
            self._tar.append(batch)
        except OSError as error:
            raise StorageError(f"cannot write {self._tar.path}: {error.strerror or error}; free some space",
                               path=self._tar.path, errno=error.errno) from None


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


Opener = Callable[[], io.BufferedReader]  # opens a tarball stored otherwise than as one file (in parts: _parts)


def _open(path: Path, opener: Opener | None) -> io.BufferedReader:
    return opener() if opener is not None else open(path, "rb")


def scan_image_tar(path: Path, on_bytes: Callable[[int], None] | None = None, opener: Opener | None = None) -> TarScan:
    """Hash the whole file and every blob inside it in one sequential read, without extracting anything;
    `opener` reads it when it is not the file `path` (which then only names it)."""
    members = _member_ranges(path, opener)
    scan = TarScan(path=path)
    whole = hashlib.sha256()
    hashers = {name: hashlib.sha256() for name, _, _ in members}
    small: dict[str, bytearray] = {name: bytearray() for name, _, _ in members if name in _SMALL_MEMBERS}
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    position = 0
    cursor = 0  # first member that may still overlap what is read next
    with _open(path, opener) as handle:
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


def _member_ranges(path: Path, opener: Opener | None = None) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every regular member, in file order; headers only are read."""
    try:
        with _open(path, opener) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
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


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None, opener: Opener | None = None) -> FileDigest:
    """sha256 of a whole file, streamed (through `opener` when it is not the file `path`)."""
    hasher = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    with _open(path, opener) as handle:
        while count := handle.readinto(view):
            hasher.update(view[:count])
            size += count
            if on_bytes:
                on_bytes(count)
    return FileDigest(size, hasher.hexdigest())


def tar_members(path: Path, opener: Opener | None = None) -> dict[str, tuple[int, int]]:
    """{member name: (data offset, size)} of a tarball's regular members, reading headers only."""
    return {name: (offset, size) for name, offset, size in _member_ranges(path, opener)}
