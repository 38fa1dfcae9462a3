"""The bundle's own tool: `tools/wsm.pyz`, one file holding wsm and its pure-Python dependencies.

The offline side then needs only the bundle and a `python3` (`python3 bundle/tools/wsm.pyz verify bundle`):
nothing to install on a machine that by definition has no package index. The archive is built from the running
installation, so making it contacts no index either: wsm's own package and the installed files of every
distribution it depends on (the `Requires-Dist` closure, extras left out), as Python source. Compiled
extension modules are left out: every dependency wsm uses has a pure-Python fallback (PyYAML without
`_yaml`, charset_normalizer without its mypyc modules, ruamel.yaml without its C loader), so the archive runs
on any CPython the project supports, on any platform. Bytecode is left out too: it belongs to one Python.

The bytes are deterministic (members sorted, fixed timestamps and modes), so a rerun of the same wsm writes
the same file. A wsm that itself runs from such an archive copies it as it is.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import io
import os
import re
import zipfile
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path, PurePosixPath

from . import __version__
from ._exceptions import BundleError
from ._files import write_atomically
from ._layout import hash_file
from ._lock import TOOLS_DIR, BundleTool

TOOL_FILE = f"{TOOLS_DIR}/wsm.pyz"
SHEBANG = b"#!/usr/bin/env python3\n"
# The entry point; it must parse on any python3, so that an older one says what it needs in one line.
_MAIN = """\
import sys

if sys.version_info < {minimum!r}:
    sys.exit("wsm: error: this wsm.pyz needs Python {version} or newer, and %s is %s; run it with a newer python3"
             % (sys.executable, sys.version.split()[0]))

from wsm._cli import main

sys.exit(main())
"""
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry: no build time leaks in
_ROOT_DISTRIBUTION = "wsm"
# Metadata that describes one installation, not the distribution.
_INSTALL_RECORDS = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
_COMPILED = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".pyc", ".pyo")
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_LOWER_BOUND = re.compile(r">=\s*3\.([0-9]+)")  # in Requires-Python: `>=3.10`, `>=3.9, !=3.9.0`
# Dependencies with no pure-Python fallback: left out of the archive. Only signing needs `cryptography`, and
# the archive's `verify --key` checks a signature with `openssl` instead (see _sign).
_NATIVE_ONLY = {"cryptography", "cffi", "pycparser"}


def write_tool(root: Path) -> BundleTool:
    """Write `<root>/tools/wsm.pyz` (atomically; left as it is when it already holds these bytes). A disk error
    is raised as the OSError it is, for the caller to word as it words the bundle's other disk errors."""
    data = tool_archive()
    path = root / TOOL_FILE
    digest = hashlib.sha256(data).hexdigest()
    if not (path.is_file() and path.stat().st_size == len(data) and hash_file(path).sha256 == digest):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    path.chmod(0o755)  # `./wsm.pyz` runs it too, through its #! line
    return BundleTool(file=TOOL_FILE, sha256=digest, size=len(data), wsm_version=__version__)


@cache
def tool_archive() -> bytes:
    """The zipapp's bytes (built once per process: the installation does not change under it)."""
    running = _running_archive()
    if running is not None:
        return running.read_bytes()
    members = dict(_package_members())
    dependencies = _dependencies()
    for distribution in dependencies:
        members.update(_distribution_members(distribution))
    minimum = minimum_python([_distribution(_ROOT_DISTRIBUTION), *dependencies])
    members["__main__.py"] = _MAIN.format(minimum=minimum, version="%d.%d" % minimum).encode()
    return zipapp_bytes(members)


def minimum_python(distributions: list[metadata.Distribution]) -> tuple[int, int]:
    """The oldest Python every one of `distributions` supports, from their `Requires-Python` lower bounds."""
    bounds = [text for distribution in distributions for text in distribution.metadata.get_all("Requires-Python") or []]
    minors = [int(found) for text in bounds for found in _LOWER_BOUND.findall(text)]
    return 3, max(minors, default=0)


def zipapp_bytes(members: dict[str, bytes]) -> bytes:
    """A zip of `members` (archive name -> content) behind a `python3` shebang, the same bytes every time."""
    # Directory entries too: zipimport finds a namespace package (`ruamel/`, no __init__.py) only by its entry.
    directories = {str(parent) + "/" for name in members for parent in PurePosixPath(name).parents if parent.name}
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(directories | set(members)):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.create_system = 3  # unix, whatever builds it: the modes below are then read as such
            if name in directories:
                info.external_attr = (0o40755 << 16) | 0x10  # a directory, for unix and for DOS
                archive.writestr(info, b"")
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, members[name])
    return buffer.getvalue()


def _running_archive() -> Path | None:
    """The zipapp this wsm runs from, if it does (then its dependencies are inside it, not installed)."""
    from . import __spec__ as spec

    loader = spec.loader if spec is not None else None
    archive = getattr(loader, "archive", None)  # zipimport.zipimporter's
    return Path(archive) if isinstance(archive, str) and Path(archive).is_file() else None


def _package_members() -> Iterator[tuple[str, bytes]]:
    """wsm's own files, from the package directory (an editable install records none of them)."""
    package = Path(__file__).resolve().parent
    for directory, _, names in os.walk(package, followlinks=True):  # wsm/manifests is a link in a checkout
        for name in names:
            path = Path(directory, name)
            relative = PurePosixPath(path.relative_to(package.parent).as_posix())
            if path.is_file() and _wanted(relative):
                yield relative.as_posix(), path.read_bytes()


def _dependencies() -> list[metadata.Distribution]:
    """The installed distributions wsm needs, directly or not; extras and what is not installed here (a
    marker for another platform or an older Python) are left out."""
    found: dict[str, metadata.Distribution] = {}
    pending = _requirements(_distribution(_ROOT_DISTRIBUTION))
    while pending:
        name = pending.pop()
        if name in found or name in _NATIVE_ONLY:
            continue
        try:
            distribution = _distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = distribution
        pending += _requirements(distribution)
    return [found[name] for name in sorted(found)]


def _distribution(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        if name == _ROOT_DISTRIBUTION:
            raise BundleError("cannot build tools/wsm.pyz: wsm is not installed as a distribution here") from None
        raise


def _requirements(distribution: metadata.Distribution) -> list[str]:
    names = []
    for requirement in distribution.requires or []:
        _, _, marker = requirement.partition(";")
        match = _REQUIREMENT_NAME.match(requirement)
        if match and "extra" not in marker:
            names.append(_normal_name(match.group(1)))
    return names


def _normal_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution_members(distribution: metadata.Distribution) -> Iterator[tuple[str, bytes]]:
    """The files a distribution installed into site-packages, as Python source (its RECORD's list)."""
    for file in distribution.files or []:
        relative = PurePosixPath(file.as_posix())
        if not _wanted(relative):
            continue
        path = Path(str(distribution.locate_file(file)))
        if path.is_file():
            yield relative.as_posix(), path.read_bytes()


def _wanted(relative: PurePosixPath) -> bool:
    """Source and data files inside site-packages; not bytecode, extension modules, scripts or .pth hooks."""
    if ".." in relative.parts or "__pycache__" in relative.parts or relative.suffix == ".pth":
        return False
    if relative.name.endswith(_COMPILED):
        return False
    in_metadata = relative.parts[0].endswith(".dist-info")
    return not (in_metadata and relative.name in _INSTALL_RECORDS)

