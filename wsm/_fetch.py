"""Where a chart comes from, and getting it: a classic repository, an OCI registry, or a local path.

Fetched archives are kept byte for byte in a cache directory (by digest), so that the download step copies
exactly what the repository served into the bundle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ._chart import Chart, chart_from_archive, load_chart
from ._exceptions import ChartError
from ._helmrepo import RepoAuth, fetch_archive, fetch_index, select_entry
from ._http import TransportOptions
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
        return f"{self.chart}{version} from {self.location}"

    @property
    def location(self) -> str:
        return self.repo or self.oci or str(self.path)


@dataclass(frozen=True)
class FetchOptions:
    transport: TransportOptions = field(default_factory=TransportOptions)
    repo_auth: RepoAuth = field(default_factory=RepoAuth)
    registry_options: object | None = None  # wsm._remote.RegistryOptions for oci:// charts
    cache_dir: Path | None = None


def fetch_chart(source: ChartSource, options: FetchOptions = FetchOptions()) -> Chart:
    if source.path is not None:
        chart = load_chart(source.path)
    elif source.oci is not None:
        chart = _fetch_oci(source, options)
    elif source.repo is not None:
        chart = _fetch_classic(source, options)
    else:
        raise ChartError(f"chart {source.chart!r}: give a repository, an oci:// reference or a path")
    if source.version and source.path is None and not _satisfies(chart.version, source.version):
        raise ChartError(f"{source.describe()}: got version {chart.version}, which does not match")
    return chart


def archive_path(chart: Chart, options: FetchOptions) -> Path | None:
    """The chart's archive in the cache, written once (atomically) and named by its digest."""
    if chart.archive is None:
        return None
    directory = options.cache_dir or default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{chart.name}-{chart.version}-{chart.digest.split(':')[1][:16]}.tgz"
    if not path.exists():
        partial = path.with_name(path.name + f".{os.getpid()}.partial")
        partial.write_bytes(chart.archive)
        os.replace(partial, path)
    return path


def default_cache_dir() -> Path:
    base = os.environ.get("WSM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wsm"
    )
    return Path(base) / "charts"


def _fetch_classic(source: ChartSource, options: FetchOptions) -> Chart:
    index = fetch_index(source.repo, options.transport, options.repo_auth)
    entry = select_entry(index, source.repo, source.chart, source.version or "*")
    data = fetch_archive(source.repo, entry, options.transport, options.repo_auth)
    return chart_from_archive(data, f"{source.chart}-{entry.get('version')} from {source.repo}")


def _fetch_oci(source: ChartSource, options: FetchOptions) -> Chart:
    from ._helmoci import pull_chart
    from ._remote import RegistryClient, RegistryOptions

    registry_options = options.registry_options or RegistryOptions(transport=options.transport)
    with RegistryClient(registry_options) as client:
        data, tag = pull_chart(client, source.oci, source.version)
    return chart_from_archive(data, f"{source.oci}:{tag}")


def _satisfies(version: str, constraint: str) -> bool:
    try:
        return highest_matching(constraint, [version]) is not None
    except ValueError:
        return False
