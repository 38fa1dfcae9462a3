"""Files stored in parts, to fit a medium's file-size limit (FAT32 refuses a file of 4 GiB or more).

An image tarball or chart larger than `--max-file-size` is stored as `NAME.part-000`, `NAME.part-001`, ...
beside where `NAME` would be; `cat NAME.part-* > NAME` gives the file back byte for byte. The lock keeps the
whole file's size and sha256 and lists the parts (`FilePart`); SHA256SUMS lists the parts. Readers never
rejoin them on disk: `PartedFile` presents the parts as one read-only seekable file (for tarfile, hashing and
`docker load`), and `segments` maps a byte range of the whole file to the pieces of the parts that hold it
(for push's in-place uploads).

Splitting is done on a finished file: every part is written, fsynced and renamed into place, the lock is
rewritten to list the parts, and only then is the whole file removed; a kill at any point leaves either the
whole file (the lock not yet saying otherwise; a rerun splits again) or the parts the lock lists.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ._bundle import require_regular_file
from ._exceptions import BundleError, WsmError
from ._files import atomic_file
from ._lock import FilePart
from ._remote import FileSegment, SegmentChain

GiB = 1024**3
FAT32_MAX = 4 * GiB - 1  # the largest file FAT32 holds
WARN_SIZE = 4 * GiB  # above this, a file does not fit FAT32: worth a note when no limit was given
MEDIA = {"fat32": FAT32_MAX}
MIN_PART = 4096  # a smaller limit would make thousands of parts of every tarball: surely a typo
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": GiB, "tib": 1024**4}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_COPY_CHUNK = 8 * 1024 * 1024


def parse_size(text: str) -> int:
    """`4GiB`, `700MB`, `300KB`, `1000000` (bytes); KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise WsmError(f"size {text!r} is not a size: give bytes or a number with KB, MB, GB, KiB, MiB or GiB")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < MIN_PART:
        raise WsmError(f"size {text!r} is smaller than {MIN_PART} bytes; give the medium's largest file size")
    return size


def size_note(file: str, size: int) -> str | None:
    """A note for a file that no FAT32 medium holds, when no limit was asked for."""
    if size < WARN_SIZE:
        return None
    return (f"{file} is {size / GiB:.1f} GiB: larger than a FAT32 medium holds (4 GiB - 1 bytes); store it in parts "
            "if the bundle goes on one")


def part_file(file: str, index: int) -> str:
    return f"{file}.part-{index:03d}"


def split_file(root: Path, file: str, max_size: int) -> tuple[FilePart, ...]:
    """Write `root/file` as parts of at most `max_size` bytes (each fsynced and renamed into place); the whole
    file is left for the caller to remove once the lock lists the parts."""
    source = root / file
    total = source.stat().st_size
    parts = []
    with open(source, "rb") as handle:
        for index, start in enumerate(range(0, total, max_size)):
            name = part_file(file, index)
            parts.append(_write_part(handle.fileno(), start, min(max_size, total - start), root / name, name))
    return tuple(parts)


def _write_part(source: int, start: int, size: int, dest: Path, name: str) -> FilePart:
    hasher = hashlib.sha256()
    with atomic_file(dest) as out:  # fsynced, then renamed; a failed split leaves no partial part behind
        position = start
        while position < start + size:
            block = os.pread(source, min(_COPY_CHUNK, start + size - position), position)
            if not block:
                raise BundleError(f"{dest.parent}: a file shrank while it was split into parts", path=dest)
            hasher.update(block)
            out.write(block)
            position += len(block)
    return FilePart(name, size, hasher.hexdigest())


def remove_parts(root: Path, file: str, keep: Sequence[FilePart] = ()) -> None:
    """Remove `file`'s part files on disk but those in `keep` (stale parts of an earlier split)."""
    kept = {part.file for part in keep}
    base = Path(file)
    for path in (root / base.parent).glob(base.name + ".part-*"):
        relative = path.relative_to(root).as_posix()
        if relative not in kept and re.fullmatch(r".*\.part-[0-9]{3,}", relative):
            path.unlink(missing_ok=True)


def stored_whole(root: Path, file: str, size: int, parts: Sequence[FilePart]) -> bool:
    """The file is on disk with `size` bytes: whole, or (with `parts`) as every part at its size."""
    if not parts:
        path = root / file
        return path.is_file() and path.stat().st_size == size
    return sum(part.size for part in parts) == size and all(
        (root / part.file).is_file() and (root / part.file).stat().st_size == part.size for part in parts)


def open_stored(root: Path, file: str, parts: Sequence[FilePart]) -> io.BufferedReader:
    """The file for reading: itself, or its parts presented as one file."""
    return PartsOpener(root, parts)() if parts else open(root / file, "rb")


class PartsOpener:
    """Opens a file's parts as one file (an `Opener` for _layout), keeping the last `PartedFile` it made, whose
    part digests a sequential pass (verify's) computes at no extra read."""

    def __init__(self, root: Path, parts: Sequence[FilePart]):
        self.parts = [(root / part.file, part.size) for part in parts]
        self.last: PartedFile | None = None

    def __call__(self) -> io.BufferedReader:
        self.last = PartedFile(self.parts)
        return io.BufferedReader(self.last, _COPY_CHUNK)


def opener_for(root: Path, parts: Sequence[FilePart]) -> PartsOpener | None:
    """How to read a lock entry's file: None for a whole file (open it), else its parts."""
    return PartsOpener(root, parts) if parts else None


def segments(root: Path, parts: Sequence[FilePart], offset: int, size: int) -> SegmentChain:
    """The pieces of the parts that hold bytes [offset, offset + size) of the whole file, in order."""
    pieces = []
    start = 0
    for part in parts:
        low, high = max(offset, start), min(offset + size, start + part.size)
        if low < high:
            pieces.append(FileSegment(root / part.file, low - start, high - low))
        start += part.size
    if sum(piece.size for piece in pieces) != size:
        raise BundleError(f"{root}: bytes {offset}-{offset + size} are beyond the parts of the file; run wsm verify")
    return SegmentChain(tuple(pieces))


class PartedFile(io.RawIOBase):
    """Parts of a file read as the one file they make (read-only, seekable); each part is opened when read,
    and refused when it is not a regular file or not the size the lock records."""

    def __init__(self, parts: Sequence[tuple[Path, int]]):
        super().__init__()
        self._parts = list(parts)
        self._starts = []
        start = 0
        for _, size in self._parts:
            self._starts.append(start)
            start += size
        self._size = start
        self._position = 0
        self._open: tuple[int, io.BufferedReader] | None = None  # (index, handle) of the part read last
        # Each part's sha256, from what was read of it in order from its start (a sequential pass hashes all).
        self._hashers = [hashlib.sha256() for _ in self._parts]
        self._hashed = [0 for _ in self._parts]

    def part_sha256s(self) -> list[str | None]:
        """Each part's hex sha256, when a read went through all of it in order; else None."""
        return [hasher.hexdigest() if hashed == size else None
                for hasher, hashed, (_, size) in zip(self._hashers, self._hashed, self._parts)]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self._size:
            index = self._part_at(self._position)
            path, size = self._parts[index]
            handle = self._handle(index)
            within = self._position - self._starts[index]
            handle.seek(within)
            count = handle.readinto(view[done : done + min(len(view) - done, size - within)])
            if not count:
                raise BundleError(f"{path} is shorter than the lock says ({size} bytes); run wsm verify", path=path)
            if within == self._hashed[index]:
                self._hashers[index].update(view[done : done + count])
                self._hashed[index] += count
            done += count
            self._position += count
        return done

    def _part_at(self, position: int) -> int:
        index = 0
        while index + 1 < len(self._starts) and self._starts[index + 1] <= position:
            index += 1
        return index

    def _handle(self, index: int) -> io.BufferedReader:
        if self._open is not None and self._open[0] == index:
            return self._open[1]
        self._close_part()
        path, size = self._parts[index]
        require_regular_file(path)
        handle = open(path, "rb")
        if os.fstat(handle.fileno()).st_size != size:
            handle.close()
            raise BundleError(f"{path} is not {size} bytes as the lock says; run wsm verify", path=path)
        self._open = (index, handle)
        return handle

    def _close_part(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_part()
        super().close()
