"""Where a chart comes from, and getting it: a classic repository, an OCI registry, or a local path.

Fetched archives are kept byte for byte in a cache directory (by digest), so that the download step copies
exactly what the repository served into the bundle.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import _names as names
from ._chart import Chart
from ._chartrepo import RepoAuth, open_repository
from ._exceptions import ChartError
from ._files import write_atomically
from ._http import TransportOptions
from ._redact import redact_url
from ._remote import RegistryOptions
from ._versions import highest_matching


@dataclass(frozen=True)
class ChartSource:
    """One of: `repo` (classic repository URL) + `chart`; `oci` (oci://host/path/name); `path` (dir or .tgz)."""

    chart: str
    version: str | None = None
    repo: str | None = None
    oci: str | None = None
    path: Path | None = None

    def describe(self) -> str:
        version = f" {self.version}" if self.version else ""
        return redact_url(f"{self.chart}{version} from {self.location}")  # for messages

    @property
    def location(self) -> str:
        return self.repo or self.oci or str(self.path)


@dataclass(frozen=True)
class FetchOptions:
    transport: TransportOptions = field(default_factory=TransportOptions)
    repo_auth: RepoAuth = field(default_factory=RepoAuth)
    registry_options: RegistryOptions | None = None  # for oci:// charts; default: `transport` and `repo_auth`
    cache_dir: Path | None = None


def fetch_chart(source: ChartSource, options: FetchOptions = FetchOptions()) -> Chart:
    """The chart `source` names, at the highest version matching its range, byte for byte as served."""
    location, name = _place(source)
    with open_repository(location, transport=options.transport, auth=options.repo_auth,
                         registry_options=options.registry_options) as repository:
        chart = repository.fetch(name, source.version).chart
    if source.version and not _satisfies(chart.version, source.version):
        raise ChartError(f"{source.describe()}: got version {chart.version}, which does not match")
    return chart


def archive_path(chart: Chart, options: FetchOptions) -> Path | None:
    """The chart's archive in the cache, written once (atomically) and named by its digest."""
    if chart.archive is None:
        return None
    directory = options.cache_dir or default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(chart.archive).hexdigest()
    name = f"{chart.name}-{chart.version}-{digest[:16]}.tgz".replace("+", "_")  # SemVer build metadata
    if len(name) > 200:  # Helm allows 250-character names; most file systems stop at 255 bytes
        name = f"{digest}.tgz"
    path = names.inside(directory, names.file_name(name, chart.origin, ChartError), chart.origin, ChartError)
    if not path.exists():  # several wsm processes may share the cache: each writes its own partial file
        write_atomically(path, chart.archive, tag=str(os.getpid()))
    return path


def default_cache_dir() -> Path:
    base = os.environ.get("WSM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wsm"
    )
    return Path(base) / "charts"


def _place(source: ChartSource) -> tuple[str, str]:
    """The repository to open and the chart's name in it (an oci:// source names the chart itself)."""
    if source.oci is not None:
        repository, _, name = source.oci.rstrip("/").rpartition("/")
        if not name or "/" not in repository.removeprefix("oci://"):
            raise ChartError(f"chart {source.oci}: give it as oci://host/path/name")
        return repository, name
    if source.repo is None and source.path is None:
        raise ChartError(f"chart {source.chart!r}: give a repository, an oci:// reference or a path")
    return source.location, source.chart


def _satisfies(version: str, constraint: str) -> bool:
    try:
        return highest_matching(constraint, [version]) is not None
    except ValueError:
        return False
