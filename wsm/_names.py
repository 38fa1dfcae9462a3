"""Names from upstream, checked before they become file names, URLs or command arguments.

A chart's name comes from its Chart.yaml, a release's names from a manifest that may have come with a bundle:
both are data from outside. Each validator returns the name unchanged or raises the caller's error class with
one line naming where the name came from and the rule it breaks. The rules are those of the tools the names
go to: Helm's for chart names (`helm create`: letters, digits, `.`, `_`, `-`; at most 250) and versions
(SemVer 2), Kubernetes' DNS-1123 rules for release names (at most 53, as Helm requires) and namespaces (a
DNS label, at most 63). Image references are `_reference.Reference.parse`'s business.
"""

from __future__ import annotations

import re
from pathlib import Path

from ._exceptions import WsmError
from ._limits import MAX_CHART_NAME, MAX_NAMESPACE, MAX_RELEASE_NAME
from ._versions import parse_version

_CHART_NAME = re.compile(r"[A-Za-z0-9._-]+")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_NAMESPACE = re.compile(_DNS_LABEL)
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_MAX_FILE_NAME = 200


def chart_name(name: str, where: str, error: type[WsmError]) -> str:
    """A chart name by Helm's rule; `.`/`..` (directories) and a leading `-` (an option to helm) are refused too."""
    if not _CHART_NAME.fullmatch(name) or name in (".", "..") or name.startswith("-"):
        raise error(f"{where}: chart name {_shown(name)} is not valid (letters, digits, '.', '_' and '-', "
                    "not starting with '-'); refusing to use it")
    if len(name) > MAX_CHART_NAME:
        raise error(f"{where}: chart name {_shown(name)} is longer than {MAX_CHART_NAME} characters")
    return name


def chart_version(version: str, where: str, error: type[WsmError]) -> str:
    """A chart version as Helm reads SemVer 2 (a `v` prefix and a missing minor or patch are allowed)."""
    if len(version) > 128 or not re.fullmatch(r"v?[0-9A-Za-z.+-]+", version) or parse_version(version) is None:
        raise error(f"{where}: chart version {_shown(version)} is not a SemVer version (like 1.2.3)")
    return version


def is_dns_subdomain(name: str, max_length: int) -> bool:
    """Kubernetes' DNS-1123 subdomain (release names, secret names), at most `max_length` characters."""
    return len(name) <= max_length and _DNS_SUBDOMAIN.fullmatch(name) is not None


def release_name(name: str, where: str, error: type[WsmError]) -> str:
    """A Helm release name: a DNS-1123 subdomain of at most 53 characters."""
    if not is_dns_subdomain(name, MAX_RELEASE_NAME):
        raise error(f"{where}: release name {_shown(name)} is not valid (lower-case letters, digits, '-' and '.', "
                    f"starting and ending with a letter or digit, at most {MAX_RELEASE_NAME})")
    return name


def namespace(name: str, where: str, error: type[WsmError]) -> str:
    """A Kubernetes namespace: a DNS-1123 label of at most 63 characters."""
    if len(name) > MAX_NAMESPACE or not _NAMESPACE.fullmatch(name):
        raise error(f"{where}: namespace {_shown(name)} is not valid (lower-case letters, digits and '-', "
                    f"starting and ending with a letter or digit, at most {MAX_NAMESPACE})")
    return name


def file_name(name: str, where: str, error: type[WsmError]) -> str:
    """A plain file name (no directory part, not hidden), for files wsm writes into a directory it owns."""
    if len(name) > _MAX_FILE_NAME or not _FILE_NAME.fullmatch(name):
        raise error(f"{where}: {_shown(name)} is not a plain file name (letters, digits, '.', '_' and '-', "
                    "no '/', not starting with '.' or '-')")
    return name


def inside(directory: Path, name: str, where: str, error: type[WsmError]) -> Path:
    """`directory / name`, refusing a path that would leave `directory` (also through a symbolic link on the
    way). The last component itself may be a link: wsm's writers replace it by a rename, never write through it."""
    path = directory / name
    base, parent = directory.resolve(), path.parent.resolve()
    if (parent != base and base not in parent.parents) or path.name in ("", ".", ".."):
        raise error(f"{where}: {_shown(name)} leads outside {directory}; refusing to write there")
    return path


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")
