"""Release manifests (`manifests/*.yaml`): which charts make a release, the values that pin it, extra images,
and a lock of the resolved image list. The format is documented in manifests/README.md.

Validation names the file and the key (`manifests/x.yaml: charts[1].version: ...`) so that a typo in a
hand-edited manifest is a one-line fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from . import _names as names
from ._exceptions import ChartError, Hint, InvalidReference, ManifestError, WsmError
from ._fetch import ChartSource
from ._model import ImageSource, ResolvedImage
from ._redact import redact_url
from ._reference import Reference
from ._versions import is_exact
from ._yaml import load_mapping, read_document

if TYPE_CHECKING:
    from ._lock import BundleLock

API_VERSION = "wsm/v1"
EMBEDDED = "wandb.yaml"

_TOP_KEYS = {"apiVersion", "kind", "name", "description", "charts", "images", "lock"}
_CHART_KEYS = {
    "name", "chart", "group", "repo", "oci", "path", "version", "values", "release", "namespace", "install", "resource"
}
_RESOURCE_KEYS = {"file", "chartPath", "valuesPath", "template"}
_IMAGE_KEYS = {"image", "group", "why"}
_INSTALL_KINDS = {"helm", "operator"}


@dataclass(frozen=True)
class ChartEntry:
    name: str  # the chart's name within the release (and the default Helm release name)
    group: str
    source: ChartSource
    values: dict[str, Any] = field(default_factory=dict)
    release: str | None = None
    namespace: str = "default"
    install: str = "helm"  # "operator": installed by an operator from a custom resource, not by helm directly
    resource: CustomResource | None = None


@dataclass(frozen=True)
class CustomResource:
    """The custom resource an operator installs a chart from (W&B: `WeightsAndBiases`).

    wsm fills `chart_path` with {url, name, version} of the chart in the internal repository and merges the
    image overrides into `values_path`; the rest of `template` (site keys) is the operator's to complete.
    """

    file: str
    template: dict[str, Any]
    chart_path: str = "spec.chart"
    values_path: str = "spec.values"


@dataclass(frozen=True)
class ExtraImage:
    reference: Reference
    group: str
    why: str


@dataclass(frozen=True)
class PinnedChart:
    """A chart version the release's lock section pins (what `wsm list` shows offline)."""

    name: str
    version: str
    digest: str | None = None


@dataclass(frozen=True)
class ReleaseLock:
    """The manifest's `lock:` section: the release's charts and images as last resolved, for offline listing.
    (Not the bundle's lock: that is `wsm._lock.BundleLock`, what a bundle holds.)"""

    charts: tuple[PinnedChart, ...]
    images: tuple[ResolvedImage, ...]


@dataclass(frozen=True)
class ReleaseManifest:
    name: str
    charts: tuple[ChartEntry, ...]
    origin: str  # where it came from, for messages: a file, "embedded manifest ...", "--chart REF"
    description: str = ""
    images: tuple[ExtraImage, ...] = ()
    lock: ReleaseLock | None = None
    text: str = ""  # the manifest as written, recorded in bundles ("" when there was no file)

    @classmethod
    def single_chart(cls, ref: str, repo: str | None = None, version: str | None = None) -> ReleaseManifest:
        """A release of one chart: `ref` is a name in the classic repository `repo`, an oci:// reference, or a
        chart directory or .tgz. It is named after the chart."""
        if not ref.strip():
            raise ManifestError("the chart reference is empty; give a directory, a .tgz, oci://... or a name")
        if repo:
            source = ChartSource(chart=names.chart_name(ref, f"chart {ref}", ChartError), version=version, repo=repo)
        elif ref.startswith("oci://"):
            name = names.chart_name(ref.rstrip("/").rsplit("/", 1)[-1], f"chart {ref}", ChartError)
            source = ChartSource(chart=name, version=version, oci=ref)
        elif Path(ref).exists():
            from ._chart import load_chart

            source = ChartSource(chart=load_chart(Path(ref)).name, path=Path(ref))
        else:
            raise ChartError(f"chart {ref}: no such file or directory", hint=Hint.CHART_REPO)
        entry = ChartEntry(name=source.chart, group=source.chart, source=source)
        return cls(name=source.chart, charts=(entry,), origin=f"chart {redact_url(ref)}")

    @classmethod
    def from_bundle(cls, lock: BundleLock) -> ReleaseManifest:
        """The release a bundle was made for: the manifest its lock keeps, or (a single-chart bundle) one entry
        per chart it holds. A bundle of images only has no chart."""
        if lock.manifest:
            return parse_manifest(lock.manifest, "the bundle's release manifest", base=None)
        entries = tuple(
            ChartEntry(name=chart.name, group=chart.group, source=_source_at(chart.source, chart.name, chart.version),
                       release=chart.release)
            for chart in lock.release_charts()
        )
        return cls(name=entries[0].name if len(entries) == 1 else "", charts=entries, origin="the bundle")

    @property
    def groups(self) -> list[str]:
        """Display groups in the order the manifest first names them."""
        seen: dict[str, None] = {}
        for group in [c.group for c in self.charts] + [i.group for i in self.images]:
            seen.setdefault(group, None)
        return list(seen)

    def chart(self, name: str) -> ChartEntry:
        for entry in self.charts:
            if entry.name == name:
                return entry
        raise ManifestError(f"{self.origin}: no chart named {name!r} (charts: {', '.join(self.chart_names)})")

    @property
    def chart_names(self) -> list[str]:
        return [entry.name for entry in self.charts]


def load_manifest(path: Path | None = None) -> ReleaseManifest:
    """Load and validate a manifest file; without a path, the embedded W&B manifest."""
    if path is None:
        text = resources.files("wsm").joinpath("manifests").joinpath(EMBEDDED).read_text()
        return parse_manifest(text, f"embedded manifest {EMBEDDED}", base=None)
    try:
        text = read_document(Path(path), f"manifest {path}", ManifestError)
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist; give a path to a release manifest") from None
    except OSError as error:
        raise ManifestError(f"manifest {path} cannot be read ({error.strerror or type(error).__name__})") from None
    return parse_manifest(text, str(path), base=Path(path).resolve().parent)


def parse_manifest(text: str, origin: str, base: Path | None) -> ReleaseManifest:
    check = _Checker(origin)
    data = check.mapping(load_mapping(text, origin, ManifestError), "", _TOP_KEYS)
    if data.get("apiVersion") != API_VERSION:
        check.fail("apiVersion", f"must be {API_VERSION!r}")
    if data.get("kind") != "Release":
        check.fail("kind", "must be 'Release'")
    charts = tuple(_chart(check, item, f"charts[{i}]", base) for i, item in enumerate(check.sequence(data, "charts")))
    if not charts:
        check.fail("charts", "a release needs at least one chart")
    _unique(check, [c.name for c in charts], "charts", "name")
    images = tuple(_extra(check, item, f"images[{i}]") for i, item in enumerate(check.sequence(data, "images", True)))
    lock = _lock(check, data["lock"], set(c.name for c in charts)) if data.get("lock") is not None else None
    return ReleaseManifest(
        name=check.string(data, "name", ""),
        charts=charts,
        origin=origin,
        description=str(data.get("description") or ""),
        images=images,
        lock=lock,
        text=text,
    )


def _source_at(location: str, chart: str, version: str) -> ChartSource:
    """Where a bundle's chart came from, as a source of the same kind."""
    if location.startswith("oci://"):
        return ChartSource(chart=chart, version=version, oci=location)
    if location.startswith(("http://", "https://")):
        return ChartSource(chart=chart, version=version, repo=location)
    return ChartSource(chart=chart, version=version, path=Path(location))


def _chart(check: _Checker, item: Any, key: str, base: Path | None) -> ChartEntry:
    item = check.mapping(item, key, _CHART_KEYS)
    name = check.name(item, f"{key}.name", names.chart_name)
    places = [k for k in ("repo", "oci", "path") if item.get(k)]
    if len(places) != 1:
        check.fail(key, "give exactly one of `repo` (classic Helm repository URL), `oci` (oci://...) or `path`")
    chart_name = check.name(item, f"{key}.chart", names.chart_name) if item.get("chart") else name
    version = item.get("version")
    if version is not None:
        version = str(version)
        if is_exact(version):
            check.name(item, f"{key}.version", names.chart_version)
    if places[0] != "path" and not version:
        check.fail(f"{key}.version", "a version or a range (e.g. '1.2.3', '^1.2') is required")
    source = ChartSource(
        chart=chart_name,
        version=version,
        repo=_url(check, item, key, "repo", ("http://", "https://")),
        oci=_url(check, item, key, "oci", ("oci://",)),
        path=_local(item.get("path"), base),
    )
    install = str(item.get("install") or "helm")
    if install not in _INSTALL_KINDS:
        check.fail(f"{key}.install", f"must be one of {', '.join(sorted(_INSTALL_KINDS))}")
    resource = _resource(check, item.get("resource"), f"{key}.resource", name)
    release = check.name(item, f"{key}.release", names.release_name) if item.get("release") else None
    if release is None:  # the chart's name is its release name
        check.name(item, f"{key}.name", names.release_name, "(the release name when `release` is not given)")
    if resource is not None and install != "operator":
        check.fail(f"{key}.resource", "goes with `install: operator`")
    return ChartEntry(
        name=name,
        resource=resource,
        group=str(item.get("group") or name),
        source=source,
        values=check.mapping(item.get("values") or {}, f"{key}.values", None),
        release=release,
        namespace=check.name(item, f"{key}.namespace", names.namespace) if item.get("namespace") else "default",
        install=install,
    )


def _resource(check: _Checker, data: Any, key: str, chart: str) -> CustomResource | None:
    if data is None:
        return None
    data = check.mapping(data, key, _RESOURCE_KEYS)
    template = check.mapping(data.get("template"), f"{key}.template", None)
    for field_name in ("apiVersion", "kind"):
        if not template.get(field_name):
            check.fail(f"{key}.template.{field_name}", "is required")
    return CustomResource(
        file=check.name(data, f"{key}.file", names.file_name) if data.get("file") else f"{chart}-cr.yaml",
        template=template,
        chart_path=str(data.get("chartPath") or "spec.chart"),
        values_path=str(data.get("valuesPath") or "spec.values"),
    )


def _url(check: _Checker, item: dict[str, Any], key: str, field_name: str, schemes: tuple[str, ...]) -> str | None:
    value = item.get(field_name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(schemes):
        check.fail(f"{key}.{field_name}", f"must start with {' or '.join(schemes)}")
    return value


def _local(value: Any, base: Path | None) -> Path | None:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _extra(check: _Checker, item: Any, key: str) -> ExtraImage:
    item = check.mapping(item, key, _IMAGE_KEYS)
    return ExtraImage(
        reference=_reference(check, check.string(item, f"{key}.image"), f"{key}.image"),
        group=check.string(item, f"{key}.group"),
        why=str(item.get("why") or ""),
    )


def _lock(check: _Checker, data: Any, chart_names: set[str]) -> ReleaseLock:
    data = check.mapping(data, "lock", {"charts", "images", "generated"})
    charts = []
    for i, item in enumerate(check.sequence(data, "lock.charts", True)):
        item = check.mapping(item, f"lock.charts[{i}]", {"name", "version", "digest"})
        name = check.string(item, f"lock.charts[{i}].name")
        if name not in chart_names:
            check.fail(f"lock.charts[{i}].name", f"{name!r} is not one of the manifest's charts")
        charts.append(PinnedChart(name, check.string(item, f"lock.charts[{i}].version"), item.get("digest")))
    images = []
    for i, item in enumerate(check.sequence(data, "lock.images", True)):
        key = f"lock.images[{i}]"
        item = check.mapping(item, key, {"image", "group", "sources"})
        reference = _reference(check, check.string(item, f"{key}.image"), f"{key}.image")
        sources = []
        for j, source in enumerate(check.sequence(item, f"{key}.sources", True)):
            try:
                sources.append(ImageSource.from_dict(check.mapping(source, f"{key}.sources[{j}]", None)))
            except (KeyError, ValueError) as error:
                check.fail(f"{key}.sources[{j}]", f"needs `chart` and a valid `method` ({error})")
        images.append(ResolvedImage(reference, check.string(item, f"{key}.group"), tuple(sources)))
    return ReleaseLock(tuple(charts), tuple(images))


def _reference(check: _Checker, text: str, key: str) -> Reference:
    try:
        return Reference.parse(text)
    except InvalidReference as error:
        check.fail(key, str(error))


def _unique(check: _Checker, names: list[str], key: str, field_name: str) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            check.fail(f"{key}[{i}].{field_name}", f"{name!r} appears twice")
        seen.add(name)


class _Checker:
    """Type checks that fail with `origin: key: what is wrong`."""

    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, key: str, message: str) -> NoReturn:
        raise ManifestError(f"{self.origin}: {key or 'top level'}: {message}")

    def mapping(self, value: Any, key: str, allowed: set[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, found {type(value).__name__}")
        if allowed is not None:
            unknown = sorted(set(map(str, value)) - allowed)
            if unknown:
                self.fail(f"{key}.{unknown[0]}" if key else unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return cast(dict[str, Any], value)  # YAML mapping keys are strings in every manifest we accept

    def name(self, data: dict[str, Any], key: str, validator: Callable[[str, str, type[WsmError]], str],
             use: str = "") -> str:
        """A required string that `validator` (one of `_names`) accepts; `use` says what it serves as."""
        return validator(self.string(data, key), f"{self.origin}: {key}{' ' + use if use else ''}", ManifestError)

    def sequence(self, data: dict[str, Any], key: str, optional: bool = False) -> list[Any]:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None and optional:
            return []
        if not isinstance(value, list):
            self.fail(key, f"expected a list, found {type(value).__name__}")
        return value

    def string(self, data: dict[str, Any], key: str, default: str | None = None) -> str:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None or value == "":
            if default is not None:
                return default
            self.fail(key, "is required")
        if not isinstance(value, (str, int, float)):
            self.fail(key, f"expected a string, found {type(value).__name__}")
        return str(value)
