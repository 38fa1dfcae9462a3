"""A chart directory packaged the way `helm package` lays it out, with bytes that depend on the files only.

Members are the chart's files under one top directory named after the chart (`<name>/Chart.yaml` and
`values.yaml` first), minus what `.helmignore` excludes, as helm does; files go in byte for byte (helm writes
Chart.yaml again from its parsed form); unlike helm, which stamps the current time, every member has the
same fixed time, owner and mode, members are in sorted order and the gzip header carries no time or name, so
the same directory always gives the same archive (and the same digest in the bundle's lock).
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import tarfile
from pathlib import Path

from ._archive import Files, read_directory

IGNORE_FILE = ".helmignore"
# 1980-01-01, as reproducible-build tools use: a time every tar and zip reader takes.
FIXED_MTIME = 315532800


def package_directory(root: Path, name: str) -> bytes:
    """The .tgz of the chart directory `root` whose Chart.yaml names it `name`."""
    files = read_directory(root)
    rules = _ignore_rules(files.get(IGNORE_FILE, b"").decode(errors="replace"))
    kept = {path: data for path, data in files.items() if not _ignored(path, rules)}
    return _tgz(kept, name)


def _tgz(files: Files, top: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files, key=_helm_order):
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size, info.mtime, info.mode = len(files[path]), FIXED_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[path]))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as stream:
        stream.write(raw.getvalue())
    return compressed.getvalue()


def _helm_order(path: str) -> tuple[int, str]:
    """Chart.yaml and values.yaml first, as `helm package` writes them, then every other file in sorted order."""
    first = ("Chart.yaml", "values.yaml", "values.schema.json")
    return (first.index(path), "") if path in first else (len(first), path)


def _ignore_rules(text: str) -> list[tuple[bool, str]]:
    """(negated, pattern) per line of a .helmignore: `#` comments, `!` negates, a trailing `/` means a directory."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, line[1:] if negated else line))
    return rules


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Helm's reading, in order, the last matching rule deciding: a pattern with a `/` inside matches the
    path from the chart's root, one without matches any file or directory name on the way."""
    ignored = False
    parts = path.split("/")
    for negated, pattern in rules:
        directory_only = pattern.endswith("/")
        pattern = pattern.strip("/") if "/" in pattern.strip("/") or directory_only else pattern
        if "/" in pattern:
            prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + (0 if directory_only else 1))]
            matched = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        else:
            names = parts[:-1] if directory_only else parts
            matched = any(fnmatch.fnmatchcase(name, pattern) for name in names)
        if matched:
            ignored = not negated
    return ignored
