"""A Helm chart as the resolver needs it: metadata, default values, and its sub-charts (vendored under charts/).

Charts are read from memory (see `_archive`), so a directory, a .tgz on disk, and an archive fetched from a
repository all load the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._archive import Files, read_directory, read_tgz
from ._exceptions import ChartError
from ._yaml import load_mapping


@dataclass(frozen=True)
class Dependency:
    """An entry of Chart.yaml `dependencies` (or v1 requirements.yaml)."""

    name: str
    alias: str | None = None
    version: str | None = None
    repository: str | None = None
    condition: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The key its values live under in the parent, and its name in the release."""
        return self.alias or self.name


@dataclass
class Chart:
    metadata: dict[str, Any]
    values: dict[str, Any]
    subcharts: dict[str, Chart] = field(default_factory=dict)  # by chart name, as vendored in charts/
    origin: str = ""
    archive: bytes | None = None  # the .tgz as served, when it came as one

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", ""))

    @property
    def app_version(self) -> str | None:
        value = self.metadata.get("appVersion")
        return str(value) if value not in (None, "") else None

    @property
    def annotations(self) -> dict[str, str]:
        value = self.metadata.get("annotations")
        # Helm's annotations are strings; anything else in a malformed Chart.yaml is nothing wsm can read.
        if not isinstance(value, dict):
            return {}
        return {str(key): text for key, text in value.items() if isinstance(text, str)}

    @property
    def dependencies(self) -> list[Dependency]:
        return [_dependency(entry, self.origin) for entry in self.metadata.get("dependencies") or []]

    @property
    def digest(self) -> str | None:
        return "sha256:" + hashlib.sha256(self.archive).hexdigest() if self.archive is not None else None


def load_chart(path: Path) -> Chart:
    """Load a chart from a directory or a .tgz file."""
    if not path.exists():
        raise ChartError(f"chart {path} does not exist: give a chart directory or a .tgz file")
    if path.is_dir():
        return chart_from_files(read_directory(path), str(path))
    data = path.read_bytes()
    return chart_from_archive(data, str(path))


def chart_from_archive(data: bytes, origin: str) -> Chart:
    chart = chart_from_files(_strip_top_directory(read_tgz(data, origin), origin), origin)
    chart.archive = data
    return chart


def chart_from_files(files: Files, origin: str) -> Chart:
    metadata = _yaml_mapping(files, "Chart.yaml", origin, required=True)
    if not metadata.get("name") or not metadata.get("version"):
        raise ChartError(f"{origin}: Chart.yaml needs `name` and `version`")
    if metadata.get("apiVersion") == "v1" and "requirements.yaml" in files:
        metadata = {**metadata, "dependencies": _yaml_mapping(files, "requirements.yaml", origin).get("dependencies")}
    values = _yaml_mapping(files, "values.yaml", origin)
    chart = Chart(metadata=metadata, values=values, origin=origin)
    chart.subcharts = _subcharts(files, f"{origin}:{metadata['name']}")
    return chart


def _subcharts(files: Files, origin: str) -> dict[str, Chart]:
    found: dict[str, Chart] = {}
    directories: dict[str, Files] = {}
    for path, data in files.items():
        parts = path.split("/")
        if len(parts) < 2 or parts[0] != "charts":
            continue
        if len(parts) == 2 and parts[1].endswith((".tgz", ".tar.gz")):
            sub = chart_from_archive(data, f"{origin}/charts/{parts[1]}")
            found[sub.name] = sub
        elif len(parts) > 2:
            directories.setdefault(parts[1], {})["/".join(parts[2:])] = data
    for directory, sub_files in directories.items():
        if "Chart.yaml" in sub_files:
            sub = chart_from_files(sub_files, f"{origin}/charts/{directory}")
            found[sub.name] = sub
    return found


def _strip_top_directory(files: Files, origin: str) -> Files:
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) != 1 or not any("/" in path for path in files):
        raise ChartError(f"{origin}: a chart archive holds one top directory with Chart.yaml in it")
    return {path.split("/", 1)[1]: data for path, data in files.items() if "/" in path}


def _yaml_mapping(files: Files, name: str, origin: str, *, required: bool = False) -> dict[str, Any]:
    if name not in files:
        if required:
            raise ChartError(f"{origin}: no {name}; is this a Helm chart?")
        return {}
    return load_mapping(files[name], f"{origin}/{name}", ChartError)


def _dependency(entry: object, origin: str) -> Dependency:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise ChartError(f"{origin}: Chart.yaml dependency {entry!r} has no name")
    tags = entry.get("tags") or ()
    return Dependency(
        name=str(entry["name"]),
        alias=entry.get("alias"),
        version=str(entry["version"]) if entry.get("version") is not None else None,
        repository=entry.get("repository"),
        condition=entry.get("condition"),
        tags=tuple(str(tag) for tag in tags),
    )
