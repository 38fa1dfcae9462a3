"""Blob bytes on disk and on the wire: a resumable download file, and a re-readable upload source.

Both stream (64 KiB pieces from the network, 1 MiB reads from a file) and hash as they go, so memory stays flat
whatever the blob size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, Union

from .._exceptions import DigestMismatch, StorageError, WsmError
from ._types import Descriptor, hasher_for

CHUNK = 64 * 1024
UPLOAD_READ = 1024 * 1024  # file reads for uploads: fewer, larger pieces for the connection to send
Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


class BlobStorage(Protocol):
    """Where a downloading blob's bytes go: a `.partial` file, or its place inside an image tarball."""

    name: str  # for messages

    def stored(self) -> int:
        """How many bytes of the blob an earlier attempt left."""

    def read_stored(self) -> Iterator[bytes]:
        """Those bytes, from the first, to hash them again before the download continues after them."""

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; raises StorageError when the disk refuses it."""

    def truncate(self) -> None:
        """Drop every byte stored: the blob starts over."""

    def discard(self) -> None:
        """The stored bytes are wrong: remove them (a file is deleted)."""

    def close(self) -> None:
        """The download is over (done or failed): release what writing held."""


class PartialFile:
    """A blob downloading into its own `.partial` file."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.name = self.dest.name
        self._out: IO[bytes] | None = None

    def stored(self) -> int:
        try:
            return self.dest.stat().st_size
        except FileNotFoundError:
            return 0

    def read_stored(self) -> Iterator[bytes]:
        with self._open("rb") as existing:
            while block := existing.read(CHUNK):
                yield block

    def write(self, chunk: bytes) -> None:
        if self._out is None:
            self._out = self._open("ab")
        try:
            self._out.write(chunk)
            self._out.flush()  # what arrived is on its way to the disk even if the process is killed next
        except OSError as error:
            reason = error.strerror or error
            raise StorageError(f"cannot write {self.dest}: {reason}; free space or pick another directory",
                               path=self.dest, errno=error.errno) from None

    def truncate(self) -> None:
        self.close()
        with self._open("wb"):
            pass

    def discard(self) -> None:
        self.close()
        self.dest.unlink(missing_ok=True)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _open(self, mode: str) -> IO[bytes]:
        try:
            return self.dest.open(mode)
        except OSError as error:
            raise StorageError(f"cannot open {self.dest}: {error.strerror}", path=self.dest,
                               errno=error.errno) from None


class PartialDownload:
    """A blob being downloaded into `storage`, with the hash of the bytes it holds so far.

    `progress` hears about bytes as they land, including a resumed prefix; when the download has to start
    over it hears a negative number, so a progress bar never counts a byte twice.
    """

    def __init__(self, storage: BlobStorage, descriptor: Descriptor, progress: Progress | None) -> None:
        self.storage = storage
        self.descriptor = descriptor
        self.progress = progress or _no_progress
        self.hasher = hasher_for(descriptor.digest)
        self.offset = 0

    @property
    def complete(self) -> bool:
        return self.offset >= self.descriptor.size

    def load_prefix(self) -> None:
        """Hash what an earlier run left, so the download resumes after it."""
        size = self.storage.stored()
        if size == 0:
            return
        if size > self.descriptor.size:
            self._truncate()
            return
        for block in self.storage.read_stored():
            self.hasher.update(block)
        self.offset = size
        self.progress(size)

    def restart(self) -> None:
        """Drop what is stored: the server is sending the blob from its first byte."""
        self.progress(-self.offset)
        self._truncate()

    def append(self, chunks: Iterable[bytes], what: str) -> None:
        for chunk in chunks:
            if self.offset + len(chunk) > self.descriptor.size:
                self._discard()
                raise DigestMismatch(
                    f"{what}: the registry sent more than the {self.descriptor.size} bytes the manifest "
                    f"states; deleted {self.storage.name}"
                )
            self.storage.write(chunk)
            self.hasher.update(chunk)
            self.offset += len(chunk)
            self.progress(len(chunk))

    def finish(self, what: str) -> None:
        """Check size and digest of everything stored; on mismatch drop it and raise `DigestMismatch`."""
        actual = f"{self.hasher.name}:{self.hasher.hexdigest()}"
        if self.offset == self.descriptor.size and actual == self.descriptor.digest:
            return
        self._discard()
        raise DigestMismatch(
            f"{what}: downloaded content ({self.offset} bytes, {actual}) does not match the manifest; "
            f"deleted {self.storage.name}, run again to download it afresh"
        )

    def _truncate(self) -> None:
        self.storage.truncate()
        self.hasher = hasher_for(self.descriptor.digest)
        self.offset = 0

    def _discard(self) -> None:
        self.progress(-self.offset)
        self.storage.discard()
        self.hasher = hasher_for(self.descriptor.digest)
        self.offset = 0


@dataclass(frozen=True)
class FileSegment:
    """A blob stored inside a larger file (a member of an image tarball): `size` bytes from `offset`."""

    path: Path
    offset: int
    size: int


@dataclass(frozen=True)
class SegmentChain:
    """A blob stored across several files (a tarball stored in parts): the segments, in order."""

    segments: tuple[FileSegment, ...]

    @property
    def size(self) -> int:
        return sum(segment.size for segment in self.segments)


Source = Union[Path, bytes, FileSegment, SegmentChain]


class UploadSource:
    """What a blob is uploaded from (a file, a segment of one, or bytes); any range can be read again."""

    def __init__(self, source: Source, descriptor: Descriptor, progress: Progress | None) -> None:
        self.source = source
        self.descriptor = descriptor
        self.progress = progress or _no_progress
        self.sent = 0  # bytes handed to the connection in the current upload session
        self._hasher = hasher_for(descriptor.digest)
        self._hashed = 0  # the bytes from the first read so far, in order, are hashed (a re-sent piece is not)
        size = _source_size(source)
        if size != descriptor.size:
            raise DigestMismatch(
                f"{_name(source)}: {size} bytes, but blob {descriptor.digest} has {descriptor.size}; "
                "the file is damaged or not the right one"
            )

    def rewind(self) -> None:
        """A new upload session starts from nothing: take back what the last one reported."""
        self.progress(-self.sent)
        self.sent = 0

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """A fresh iterator over `length` bytes from `start`, reporting progress as the connection takes them."""
        end = self.descriptor.size if length is None else start + length
        position = start
        for chunk in self._chunks(start, end):
            self._hash(position, chunk)
            position += len(chunk)
            self.sent += len(chunk)
            self.progress(len(chunk))
            yield chunk

    def _hash(self, position: int, chunk: bytes) -> None:
        """Hash what is read for the first time; at the last byte, refuse a source that is not the blob."""
        if position == 0:
            self._hasher, self._hashed = hasher_for(self.descriptor.digest), 0
        if position != self._hashed:
            return
        self._hasher.update(chunk)
        self._hashed += len(chunk)
        if self._hashed == self.descriptor.size:
            actual = f"{self._hasher.name}:{self._hasher.hexdigest()}"
            if actual != self.descriptor.digest:
                raise DigestMismatch(
                    f"{_name(self.source)}: hashes to {actual}, not {self.descriptor.digest}; the file is damaged "
                    "(run wsm verify, then copy it again)", expected=self.descriptor.digest, actual=actual,
                )

    def _chunks(self, start: int, end: int) -> Iterator[bytes]:
        if isinstance(self.source, (bytes, bytearray, memoryview)):
            data = memoryview(self.source)
            for position in range(start, end, CHUNK):
                yield bytes(data[position : min(end, position + CHUNK)])
            return
        if isinstance(self.source, SegmentChain):
            yield from self._chain_chunks(self.source, start, end)
            return
        path, base = (self.source.path, self.source.offset) if isinstance(self.source, FileSegment) else (self.source, 0)
        yield from self._file_chunks(path, base + start, end - start)

    def _chain_chunks(self, chain: SegmentChain, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the blob, from the segments that hold them (across part boundaries)."""
        segment_start = 0
        for segment in chain.segments:
            low, high = max(start, segment_start), min(end, segment_start + segment.size)
            if low < high:
                yield from self._file_chunks(segment.path, segment.offset + low - segment_start, high - low)
            segment_start += segment.size

    def _file_chunks(self, path: Path, offset: int, count: int) -> Iterator[bytes]:
        with open(path, "rb") as handle:
            handle.seek(offset)
            remaining = count
            while remaining > 0:
                block = handle.read(min(UPLOAD_READ, remaining))
                if not block:
                    raise WsmError(f"{_name(self.source)} shrank while it was being uploaded; it must not change")
                remaining -= len(block)
                yield block


def _source_size(source: Source) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, (FileSegment, SegmentChain)):
        return source.size
    return _file_size(Path(source))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise WsmError(f"cannot read {path}: {error.strerror}") from None


def _name(source: Source) -> str:
    if isinstance(source, FileSegment):
        return f"{source.path} (at byte {source.offset})"
    if isinstance(source, SegmentChain):
        return " + ".join(_name(segment) for segment in source.segments)
    return str(source) if isinstance(source, (str, os.PathLike)) else "the data to upload"
