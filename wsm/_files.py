"""Files that are either complete or absent: every file wsm writes for keeps goes through here.

A file is written as `<name>.partial` beside its final place, flushed to the disk, and renamed over the final
name, so that a run killed at any moment leaves the old file or the complete new one, never half of one; a
file whose name ends in `.partial` is never taken for a finished one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path, tag: str = "") -> Path:
    """Where `path` is written until it is complete (`tag` keeps concurrent writers of one file apart)."""
    return path.with_name(f"{path.name}{'.' + tag if tag else ''}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_file(path: Path, tag: str = "") -> Iterator[BinaryIO]:
    """A handle to write `path` through: it takes the final name only if the block ends without an error."""
    partial = partial_path(path, tag)
    try:
        with open(partial, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes, tag: str = "") -> None:
    """Write `path` so that it is either the old file or the complete new one."""
    with atomic_file(path, tag) as handle:
        handle.write(data)


def commit_partial(partial: Path, path: Path) -> None:
    """Give a `.partial` file written elsewhere (by a copy, a download) its final name, after an fsync."""
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
