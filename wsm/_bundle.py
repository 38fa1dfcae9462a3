"""A bundle directory: where things go, their portable names, SHA256SUMS, and an opened bundle.

    bundle/
      images/<portable name>.tar   one image tarball each (see _layout)
      charts/<name>-<version>.tgz  chart archives, byte for byte
      wsm.lock.json                what is in the bundle and where it came from (see _lock)
      SHA256SUMS                   every other file, `sha256sum -c` format, written last
      .wsm-partial/                download work area (partial blobs); not part of the bundle

`BundleDir` is the directory a download writes; `Bundle` is a finished one, opened for verify, load and push:
its lock is read and validated once, and every file it names is checked to stay inside the bundle.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ._exceptions import BundleError, Hint
from ._files import PARTIAL_SUFFIX, write_atomically
from ._format import utc_now
from ._layout import FileDigest, hash_file
from ._lock import (
    CHARTS_DIR,
    IMAGES_DIR,
    MAX_LOCK_BYTES,
    BundleChart,
    BundleImage,
    BundleLock,
)
from ._reference import Reference
from ._remote import compute_digest

if TYPE_CHECKING:
    from ._manifest import ReleaseManifest

LOCK_FILE = "wsm.lock.json"
SUMS_FILE = "SHA256SUMS"
SIG_FILE = "SHA256SUMS.sig"  # signs SHA256SUMS, so it is outside it (see _sign)
REPORT_FILE = "REPORT.md"  # names the root digest, so it is written after SHA256SUMS and never listed in it
WORK_DIR = ".wsm-partial"
_SAFE_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")  # what exFAT, NTFS/Windows, ext4 and macOS all accept
_MAX_STEM = 180  # leaves room under the 255-character limit for a hash suffix and the extension


# ----------------------------------------------------------------------------------------------- names


def portable_stem(text: str) -> str:
    """`text` with every character that some filesystem refuses (`/`, `:`, `@`, ...) replaced by `_`."""
    stem = _SAFE_CHARACTER.sub("_", text).strip("._") or "_"
    if len(stem) > _MAX_STEM:
        stem = stem[:_MAX_STEM].rstrip("._") + "-" + short_hash(text)
    return stem


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def image_stem(reference: Reference) -> str:
    """`registry_repo_path_tag`; a digest-only reference ends in `_sha256-<first 12 hex>`."""
    if reference.tag:
        suffix = reference.tag
    else:
        algorithm, _, hex_part = (reference.digest or "").partition(":")
        suffix = f"{algorithm}-{hex_part[:12]}"
    return portable_stem(f"{reference.name}_{suffix}".replace("/", "_").replace(":", "_"))


def chart_stem(name: str, version: str) -> str:
    return portable_stem(f"{name}-{version}")


def assign_names(wanted: Sequence[tuple[str, str]], kept: Mapping[str, str], extension: str) -> dict[str, str]:
    """File names for `wanted` (key, stem) pairs that never collide, also on case-insensitive media.

    Keys that already have a file (`kept`, from the lock) keep it, so reruns resume instead of renaming.
    Of the others, the first (in key order) gets the plain name and any later clash gets a short hash of its
    key appended: readable, and stable from run to run.
    """
    names: dict[str, str] = {}
    taken = {name.lower(): key for key, name in kept.items()}
    for key, _ in wanted:
        if key in kept:
            names[key] = kept[key]
    for key, stem in sorted(wanted):
        if key in names:
            continue
        name = stem + extension
        if taken.get(name.lower(), key) != key:
            name = f"{stem}-{short_hash(key)}{extension}"
        taken[name.lower()] = key
        names[key] = name
    return names


# ---------------------------------------------------------------------------------------- the directory


class BundleDir:
    """Paths inside one bundle directory, and reading and writing its lock."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.images = self.root / IMAGES_DIR
        self.charts = self.root / CHARTS_DIR
        self.work = self.root / WORK_DIR
        self.blobs = self.work / "blobs"
        self.lock_path = self.root / LOCK_FILE
        self.sums_path = self.root / SUMS_FILE
        self.signature_path = self.root / SIG_FILE

    def prepare(self) -> None:
        """Create the directories a download writes into; one clear line if that is not possible."""
        if self.root.exists() and not self.root.is_dir():
            raise BundleError(f"bundle {self.root} is a file, not a directory", path=self.root, hint=Hint.BUNDLE)
        try:
            for directory in (self.images, self.charts, self.blobs):
                directory.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.work, prefix=".probe-")
            probe.close()
        except OSError as error:
            raise BundleError(f"bundle {self.root} is not writable ({error.strerror})", path=self.root,
                              hint=Hint.BUNDLE) from None

    def read_lock(self) -> BundleLock | None:
        """The lock, or None when there is none yet."""
        if not self.lock_path.exists():
            return None
        return BundleLock.from_json(read_regular_file(self.lock_path, MAX_LOCK_BYTES), self.lock_path)

    def write_lock(self, lock: BundleLock) -> None:
        lock.updated = utc_now()
        write_atomically(self.lock_path, lock.to_json())

    def files(self) -> list[str]:
        """Every file of the bundle (relative, sorted), leaving out SHA256SUMS, its signature, REPORT.md, the work
        area and
        partials."""
        found = []
        for directory, subdirectories, names in os.walk(self.root):
            subdirectories[:] = sorted(d for d in subdirectories if d != WORK_DIR)
            for name in names:
                relative = Path(directory, name).relative_to(self.root).as_posix()
                if relative not in (SUMS_FILE, SIG_FILE, REPORT_FILE) and not name.endswith(PARTIAL_SUFFIX):
                    found.append(relative)
        return sorted(found)


def read_regular_file(path: Path, limit: int) -> bytes:
    """A small file of the bundle, refused when it is a link, a FIFO or a device, or larger than `limit`."""
    try:
        with open(path, "rb", opener=_no_follow) as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{path} is not a regular file; copy the bundle again", path=path)
            if info.st_size > limit:
                raise BundleError(f"{path} is {info.st_size} bytes, more than {limit}; it is not wsm's", path=path)
            return handle.read(limit + 1)
    except OSError as error:
        raise BundleError(f"{path}: unreadable ({error.strerror}); copy the bundle again", path=path) from None


def require_regular_file(path: Path) -> None:
    """Refuse a link, a FIFO or a device without opening it (opening a FIFO waits; /dev/zero never ends)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        raise BundleError(f"{path}: unreadable ({error.strerror}); copy the bundle again", path=path) from None
    if not stat.S_ISREG(mode):
        raise BundleError(f"{path} is not a regular file (a link, a FIFO or a device); copy the real file", path=path)


def _no_follow(path: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat above then refuses it.
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


# ------------------------------------------------------------------------------------------- SHA256SUMS


def write_checksums(directory: BundleDir, lock: BundleLock) -> str:
    """(Re)write SHA256SUMS over every file of the bundle; return the root digest (the sha256 of what it wrote).

    Image tarballs and charts take their sha256 from the lock (computed as they were written) when the size
    on disk still matches, so a multi-GB bundle is not read again; a tarball damaged since then keeps its
    original sum, and `verify` reports it. Any other file is hashed now. Call again after adding files.
    """
    known = _known_digests(lock)
    lines = []
    for relative in directory.files():
        path = directory.root / relative
        size = path.stat().st_size
        cached = known.get(relative)
        digest = cached.sha256 if cached and cached.size == size else hash_file(path).sha256
        lines.append(_sums_line(digest, relative))
    data = "".join(lines).encode()
    write_atomically(directory.sums_path, data)
    return root_digest_of(data)


def _known_digests(lock: BundleLock) -> dict[str, FileDigest]:
    known: dict[str, FileDigest] = {}
    for image in lock.images.values():
        known[image.file] = FileDigest(image.file_size, image.file_sha256)
    for chart in lock.charts.values():
        known[chart.file] = FileDigest(chart.size, chart.digest.removeprefix("sha256:"))
    entries: list[BundleImage | BundleChart] = [*lock.images.values(), *lock.charts.values()]
    for entry in entries:
        known.update({part.file: FileDigest(part.size, part.sha256) for part in entry.parts})  # hashed as split
    if lock.tool is not None:
        known[lock.tool.file] = FileDigest(lock.tool.size, lock.tool.sha256)
    return known


def _sums_line(digest: str, relative: str) -> str:
    # GNU sha256sum escapes names holding a backslash or a newline and marks the line with a leading '\'.
    if "\\" in relative or "\n" in relative:
        return "\\" + digest + "  " + relative.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {relative}\n"


def read_checksums(path: Path) -> dict[str, str]:
    """{relative path: hex sha256} from a SHA256SUMS file, in its order."""
    return parse_checksums(read_checksums_file(path), path)


def read_checksums_file(path: Path) -> bytes:
    """SHA256SUMS as bytes (refused when it is not a regular file of sane size)."""
    if not path.exists():
        raise BundleError(f"{path} is missing: not a wsm bundle, or its download never finished; rerun wsm download",
                          path=path)
    return read_regular_file(path, MAX_LOCK_BYTES)


def root_digest_of(sums: bytes) -> str:
    """The bundle's root digest: the sha256 of its SHA256SUMS, which lists every file (the lock among them).
    One value an operator compares with what left the connected side (read out, or from the change ticket)."""
    return compute_digest(sums)


def root_digest(directory: BundleDir) -> str:
    return root_digest_of(read_checksums_file(directory.sums_path))


def parse_checksums(data: bytes, path: Path) -> dict[str, str]:
    """{relative path: hex sha256} of SHA256SUMS's content; `path` names it in errors."""
    text = data.decode("utf-8", errors="replace")
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.fullmatch(r"(\\?)([0-9a-f]{64}) [ *](.+)", line)
        if not match:
            raise BundleError(f"{path}, line {number}: not a `sha256sum` line; the file was edited or damaged",
                              path=path)
        name = match.group(3)
        if match.group(1):
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        sums[name] = match.group(2)
    return sums


# ------------------------------------------------------------------------------------- an opened bundle


@dataclass(frozen=True)
class Bundle:
    """A finished bundle, opened: its lock read and validated once, for verify, load and push."""

    dir: BundleDir
    lock: BundleLock

    @classmethod
    def open(cls, root: Path) -> Bundle:
        directory = BundleDir(root)
        if not directory.root.is_dir():
            raise BundleError(f"bundle {directory.root} does not exist; give the directory wsm download wrote",
                              path=directory.root)
        lock = directory.read_lock()
        if lock is None:
            raise BundleError(f"{directory.lock_path} is missing: not a wsm bundle; copy the whole bundle directory",
                              path=directory.lock_path)
        return cls(directory, lock)

    @property
    def root(self) -> Path:
        return self.dir.root

    def path(self, entry: BundleImage | BundleChart) -> Path:
        """The file of a lock entry (the lock's paths were checked to stay under images/ or charts/)."""
        return self.root / entry.file

    @cached_property
    def release(self) -> ReleaseManifest:
        """The release the bundle was made for (its manifest, or one entry per chart of a --chart bundle)."""
        from ._manifest import ReleaseManifest

        return ReleaseManifest.from_bundle(self.lock)
