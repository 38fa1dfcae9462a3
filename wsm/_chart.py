"""A Helm chart as the resolver needs it: metadata, default values, and its sub-charts (vendored under charts/).

Charts are read from memory (see `_archive`), so a directory, a .tgz on disk, and an archive fetched from a
repository all load the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _names as names
from ._archive import Files, InflationBudget, read_directory, read_tgz
from ._exceptions import ChartError
from ._limits import MAX_SUBCHART_DEPTH, MAX_TREE_INFLATED_BYTES, MAX_YAML_BYTES
from ._yaml import load_mapping

# What wsm reads of a chart: its metadata and default values, and its sub-charts (helm reads the templates from
# the archive itself when rendering). Everything else is skipped, so a chart's size costs no memory.
_METADATA_FILES = ("Chart.yaml", "values.yaml", "requirements.yaml")
_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz")


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

    def vendored(self) -> Iterator[tuple[str, Dependency | None, Chart]]:
        """Each vendored sub-chart under the key its values live at: the declared ones in order (by alias or
        name; a declared one not vendored is left out), then those vendored but not declared (Helm always
        includes them), under their name."""
        declared = set()
        for dependency in self.dependencies:
            declared.add(dependency.name)
            sub = self.subcharts.get(dependency.name)
            if sub is not None:
                yield dependency.key, dependency, sub
        for name, sub in self.subcharts.items():
            if name not in declared:
                yield name, None, sub

    @property
    def digest(self) -> str | None:
        return "sha256:" + hashlib.sha256(self.archive).hexdigest() if self.archive is not None else None


def load_chart(path: Path) -> Chart:
    """Load a chart from a directory or a .tgz file."""
    if not path.exists():
        raise ChartError(f"chart {path} does not exist: give a chart directory or a .tgz file")
    if path.is_dir():
        return chart_from_files(read_directory(path, keep=_needed), str(path))
    data = path.read_bytes()
    return chart_from_archive(data, str(path))


def chart_from_archive(data: bytes, origin: str, *, depth: int = 0, budget: InflationBudget | None = None) -> Chart:
    """The chart in a .tgz; `depth` and `budget` are the sub-chart nesting and the inflation budget of its tree."""
    budget = budget or InflationBudget()  # the archive and all its sub-chart archives spend the same budget
    files = read_tgz(data, origin, budget=budget, keep=_needed_in_archive)
    chart = chart_from_files(_strip_top_directory(files, origin), origin, depth=depth, budget=budget)
    chart.archive = data
    return chart


def chart_from_files(files: Files, origin: str, *, depth: int = 0, budget: InflationBudget | None = None) -> Chart:
    metadata = _yaml_mapping(files, "Chart.yaml", origin, required=True)
    if not metadata.get("name") or not metadata.get("version"):
        raise ChartError(f"{origin}: Chart.yaml needs `name` and `version`")
    names.chart_name(str(metadata["name"]), f"{origin}/Chart.yaml", ChartError)
    names.chart_version(str(metadata["version"]), f"{origin}/Chart.yaml", ChartError)
    if metadata.get("apiVersion") == "v1" and "requirements.yaml" in files:
        metadata = {**metadata, "dependencies": _yaml_mapping(files, "requirements.yaml", origin).get("dependencies")}
    values = _yaml_mapping(files, "values.yaml", origin)
    chart = Chart(metadata=metadata, values=values, origin=origin)
    chart.subcharts = _subcharts(files, f"{origin}:{metadata['name']}", depth + 1, budget or InflationBudget())
    return chart


def _subcharts(files: Files, origin: str, depth: int, budget: InflationBudget) -> dict[str, Chart]:
    found: dict[str, Chart] = {}
    directories: dict[str, Files] = {}
    vendored = [path for path in files if path.startswith("charts/")]
    if vendored and depth > MAX_SUBCHART_DEPTH:
        raise ChartError(f"{origin}: sub-charts nest deeper than {MAX_SUBCHART_DEPTH} levels; refusing to read it")
    for path in vendored:
        parts = path.split("/")
        if len(parts) == 2 and parts[1].endswith(_ARCHIVE_SUFFIXES):
            sub = chart_from_archive(files[path], f"{origin}/charts/{parts[1]}", depth=depth, budget=budget)
            found[sub.name] = sub
        elif len(parts) > 2:
            directories.setdefault(parts[1], {})["/".join(parts[2:])] = files[path]
    for directory, sub_files in directories.items():
        if "Chart.yaml" in sub_files:
            sub = chart_from_files(sub_files, f"{origin}/charts/{directory}", depth=depth, budget=budget)
            found[sub.name] = sub
    return found


def _needed(path: str) -> int | None:
    """How much of a chart's file (path from the chart's root) wsm holds in memory; None: skip it."""
    *directories, file_name = path.split("/")
    # Below the root only `charts/<sub-chart>/charts/<sub-chart>/...` leads to anything wsm reads.
    if any(directories[i] != "charts" for i in range(0, len(directories), 2)):
        return None
    if len(directories) % 2 == 0 and file_name in _METADATA_FILES:
        return MAX_YAML_BYTES
    if len(directories) % 2 == 1 and file_name.endswith(_ARCHIVE_SUFFIXES):
        return MAX_TREE_INFLATED_BYTES
    return None


def _needed_in_archive(path: str) -> int | None:
    """`_needed` for an archive member, whose path starts with the chart's top directory."""
    top, slash, rest = path.partition("/")
    return _needed(rest) if slash else None


def _strip_top_directory(files: Files, origin: str) -> Files:
    if not files:
        return {}  # nothing wsm reads: no Chart.yaml, said by the caller
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
