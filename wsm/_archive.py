"""Reading chart archives (and directories) into memory, refusing anything unsafe.

A chart archive comes from a server we do not control. wsm never needs a chart's files on disk (helm reads the
archive itself), so members are read into memory; every member is still checked as if it were to be extracted:
no absolute paths, no `..`, no links that leave the archive, no device files, and a hard limit on how much an
archive may inflate to, counted while reading so that a compression bomb stops early. A chart tree (a chart
with its nested sub-chart archives) shares one `InflationBudget`, and only the members the caller keeps are held
in memory (the others are skipped, still counted).
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ._exceptions import UnsafeArchive
from ._format import human_bytes
from ._limits import MAX_ARCHIVE_INFLATED_BYTES, MAX_ARCHIVE_MEMBERS, MAX_TREE_INFLATED_BYTES

MAX_INFLATED_BYTES = MAX_ARCHIVE_INFLATED_BYTES
MAX_MEMBERS = MAX_ARCHIVE_MEMBERS

Files = dict[str, bytes]
# For a member's path: the most bytes of it to hold in memory, or None to skip it (counted, not kept).
Keep = Callable[[str], "int | None"]


class InflationBudget:
    """What a whole chart tree may inflate to, spent by the archive and each nested sub-chart archive in turn."""

    def __init__(self, limit: int = MAX_TREE_INFLATED_BYTES) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, size: int, origin: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise UnsafeArchive(
                f"{origin}: the chart with its sub-charts inflates past {self.limit // 2**20} MiB; refusing to read it"
            )


def read_tgz(
    data: bytes, origin: str, *, limit: int = MAX_INFLATED_BYTES, budget: InflationBudget | None = None,
    keep: Keep | None = None,
) -> Files:
    """Members of a gzip'd tar as {relative path: bytes}; raise UnsafeArchive naming `origin` and the member.

    `keep` chooses the members held in memory (default: all); `budget` is shared across a chart tree.
    """
    files: Files = {}
    total = 0
    budget = budget or InflationBudget()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for count, member in enumerate(_members(tar), start=1):
                if count > MAX_MEMBERS:
                    raise UnsafeArchive(f"{origin}: more than {MAX_MEMBERS} members; refusing to read it")
                name = safe_member_path(member.name, origin)
                _check_kind(member, name, origin)
                if not member.isfile():
                    continue
                total += member.size
                if total > limit:
                    raise UnsafeArchive(f"{origin}: inflates past {limit // 2**20} MiB; refusing to read it")
                budget.spend(member.size, origin)
                most = keep(name) if keep else member.size
                if most is None:
                    continue
                if member.size > most:
                    raise UnsafeArchive(f"{origin}: {name} is larger than {human_bytes(most)}; refusing to read it")
                handle = tar.extractfile(member)
                files[name] = handle.read() if handle else b""
    except (tarfile.TarError, EOFError, OSError) as error:
        detail = " ".join(str(error).split())[:200]  # tarfile's "r:*" lists every method it tried, one a line
        raise UnsafeArchive(f"{origin}: not a readable .tgz archive ({detail})") from None
    return files


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    # Iterate lazily so that a member count or size past the limit stops reading at once.
    while (member := tar.next()) is not None:
        yield member


def safe_member_path(name: str, origin: str) -> str:
    """`name` normalised; raise if it is absolute or climbs out with `..`."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise UnsafeArchive(f"{origin}: member {name!r} has an absolute path; refusing to read it")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        raise UnsafeArchive(f"{origin}: member {name!r} points outside the archive; refusing to read it")
    return normal


def _check_kind(member: tarfile.TarInfo, name: str, origin: str) -> None:
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname(name) if member.issym() else ""
        joined = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            raise UnsafeArchive(f"{origin}: link {name!r} -> {target!r} leaves the archive; refusing to read it")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"{origin}: member {name!r} is a device or special file; refusing to read it")


def read_directory(root: Path, *, limit: int = MAX_INFLATED_BYTES, keep: Keep | None = None) -> Files:
    """Files under `root` as {relative path: bytes}, with the same size limit; links may not leave `root`."""
    root = root.resolve()
    files: Files = {}
    total = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        real = path.resolve()
        if root not in real.parents:
            raise UnsafeArchive(f"{path}: link leaves the chart directory {root}; refusing to read it")
        size = real.stat().st_size
        total += size
        if total > limit:
            raise UnsafeArchive(f"{root}: larger than {limit // 2**20} MiB; is this really a chart directory?")
        relative = path.relative_to(root).as_posix()
        most = keep(relative) if keep else size
        if most is None:
            continue
        if size > most:
            raise UnsafeArchive(f"{path}: larger than {human_bytes(most)}; refusing to read it")
        files[relative] = real.read_bytes()
    return files

