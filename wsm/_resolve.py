"""The resolver: from a release (manifest or a single chart) to every image it needs, with where each was found.

For each chart: merge values as Helm does, walk the chart and each sub-chart that its condition/tags enable,
collect images from values and the `helm.sh/images` annotation, optionally confirm with `helm template`, and
add the manifest's extra images. Offline, the manifest's lock stands in for all of that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._bind import ChartBinding, RenderedImage, bind_chart
from ._chart import Chart, Dependency
from ._discover import ANNOTATION_PLACE, Found, images_in_annotation, images_in_values
from ._exceptions import ChartError, Hint, RenderError
from ._fetch import FetchOptions, archive_path, fetch_chart
from ._manifest import ChartEntry, ReleaseManifest
from ._model import ImageSource, Method, ResolvedChart, ResolvedImage, merge_images
from ._package import package_directory
from ._redact import redact_url
from ._reference import Reference
from ._render import helm_if_any
from ._values import Values, coalesce, get_path, join_path, merge, sub_values


@dataclass(frozen=True)
class SkippedImage:
    chart: str
    image: str | None
    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class InvalidImage:
    """An image-shaped values node whose reference does not parse: reported, never silently dropped."""

    chart: str
    image: str
    path: str  # in the values, or the entry's index in the annotation
    reason: str
    found_in: str = "values"  # or "annotation helm.sh/images"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        where = f"values path {self.path}" if self.found_in == "values" else f"{self.found_in} {self.path}"
        return f"{self.chart}: {where}: {self.reason}"


@dataclass
class Resolution:
    images: list[ResolvedImage]
    charts: list[ResolvedChart]
    skipped: list[SkippedImage] = field(default_factory=list)
    invalid: list[InvalidImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    from_lock: bool = False
    rendered_charts: list[str] = field(default_factory=list)  # release charts whose images rendering bound

    @property
    def rendered(self) -> bool:
        return bool(self.rendered_charts)

    def to_download(self) -> list[ResolvedImage]:
        """The images a bundle carries: every rendered one and the manifest's extras, not the unused."""
        return [image for image in self.images if not image.unused]

    def image(self, text: str) -> ResolvedImage | None:
        """The image `text` names: exactly, or (without a tag) by name or last path component when unique."""
        wanted = Reference.parse(text)
        exact = [i for i in self.images if i.reference == wanted]
        if exact:
            return exact[0]
        if any(mark in text.rsplit("/", 1)[-1] for mark in ":@"):
            return None
        same_name = [i for i in self.images if i.reference.name == wanted.name]
        short = text.rsplit("/", 1)[-1]
        same_tail = [i for i in self.images if i.reference.repository.rsplit("/", 1)[-1] == short]
        for candidates in (same_name, same_tail):
            if len(candidates) == 1:
                return candidates[0]
        return None


@dataclass
class _ChartResult:
    found: list[Found] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)
    invalid: list[InvalidImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- one chart -----------------------------------------------------------------------------------------------


def chart_values(chart: Chart, user: Values) -> Values:
    """The release chart's values: user layers over its defaults (sub-charts coalesce as they are walked)."""
    return coalesce(user, chart.values)


def images_of_chart(chart: Chart, values: Values, label: str) -> _ChartResult:
    """Walk `chart` and its enabled sub-charts; `values` are the chart's coalesced values."""
    result = _ChartResult()
    _walk(chart, values, label, "", values.get("tags") or {}, result)
    return result


def _walk(chart: Chart, values: Values, label: str, prefix: str, tags: Mapping[str, Any], result: _ChartResult) -> None:
    subcharts = _subchart_values(chart, values)
    view = {**values, **{key: sub for key, (_, _, sub) in subcharts.items()}}
    _check_missing(chart, view, label, prefix, tags, result)
    discovered = images_in_values(values, chart, label, prefix, set(subcharts) | {"global"})
    annotated = images_in_annotation(chart, label, discovered.found)
    result.found += discovered.found + annotated.found
    result.skipped += [SkippedImage(label, s.text, s.path, f"{s.switch} is false") for s in discovered.skipped]
    result.invalid += [InvalidImage(label, i.text, i.path, i.reason) for i in discovered.invalid]
    result.invalid += [InvalidImage(label, i.text, i.path, i.reason, ANNOTATION_PLACE) for i in annotated.invalid]
    for key, (dependency, sub, sub_vals) in subcharts.items():
        path = join_path(prefix, key)
        reason = _disabled_reason(dependency, view, tags) if dependency else None
        if reason:
            result.skipped.append(SkippedImage(f"{label}/{key}", None, path, reason))
            continue
        _walk(sub, sub_vals, f"{label}/{key}", path, tags, result)


def _check_missing(chart: Chart, view: Values, label: str, prefix: str, tags: Mapping[str, Any],
                   result: _ChartResult) -> None:
    """A dependency not vendored in charts/: skipped with a note when it is disabled (helm renders without it),
    an error naming its place in the chart tree when it is enabled."""
    for dependency in chart.dependencies:
        if dependency.name in chart.subcharts:
            continue
        where = " > ".join([*label.split("/"), dependency.key])
        what = f"{where} ({dependency.name} {dependency.version or 'any version'})"
        reason = _disabled_reason(dependency, view, tags)
        if reason is None:
            switch = f", or disable it ({dependency.condition} false)" if dependency.condition else ""
            raise ChartError(
                f"{what}: dependency {dependency.name!r} is enabled but not vendored in charts/; run `helm "
                f"dependency build` on the chart that declares it{switch}"
            )
        path = join_path(prefix, dependency.key)
        result.skipped.append(SkippedImage(f"{label}/{dependency.key}", None, path,
                                           f"{reason}; not vendored, so its images are not known"))
        result.notes.append(f"{what} is disabled ({reason}) and not vendored: skipped")


def _subchart_values(chart: Chart, values: Values) -> dict[str, tuple[Dependency | None, Chart, Values]]:
    """Each vendored sub-chart by its key (alias or name) with its dependency entry and the values it sees."""
    # A declared sub-chart that is not vendored is not among them: _check_missing says what that means.
    return {key: (dependency, sub, sub_values(values, key, sub.values)) for key, dependency, sub in chart.vendored()}


def _disabled_reason(dependency: Dependency, view: Values, tags: Mapping[str, Any]) -> str | None:
    """Helm's rule: the first condition path that holds a boolean decides; else any true tag enables."""
    for condition in (dependency.condition or "").split(","):
        condition = condition.strip()
        value = get_path(view, condition) if condition else None
        if isinstance(value, bool):
            return None if value else f"condition {condition} is false"
    tag_values = [tags.get(tag) for tag in dependency.tags if isinstance(tags.get(tag), bool)]
    if tag_values and not any(tag_values):
        return f"tags {', '.join(dependency.tags)} are false"
    return None


# --- a release ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolveOptions:
    fetch: FetchOptions = field(default_factory=FetchOptions)
    user_values: Mapping[str, Values] = field(default_factory=dict)  # by chart name in the release
    render: bool | None = None  # True: insist on differential rendering; False: never; None: when helm is found
    helm: str | None = None
    progress: Callable[[str], None] | None = None


def resolve(manifest: ReleaseManifest, options: ResolveOptions = ResolveOptions(), *, fresh: bool = False
            ) -> Resolution:
    """The release's images: from its lock when that can serve (offline), else from the charts themselves.

    The charts are read when `fresh` is asked, when rendering or user values are involved (the lock knows
    neither), or when there is no lock; a fresh resolution of a locked release notes its drift from the lock.
    """
    locked = manifest.lock is not None and not options.user_values
    if locked and not (fresh or options.render):
        return from_lock(manifest)
    resolution = resolve_release(manifest, options)
    if locked:
        resolution.notes += drift(from_lock(manifest), resolution)
    return resolution


def resolve_for_bundle(manifest: ReleaseManifest, options: ResolveOptions = ResolveOptions()) -> Resolution:
    """What a bundle must carry: the charts themselves (a bundle needs their archives), their images, and any
    image the manifest's lock names that resolving did not find: nothing is dropped."""
    resolution = resolve(manifest, options, fresh=True)
    if manifest.lock is not None:
        unused = {image.reference for image in resolution.images if image.unused}
        if resolution.rendered:  # rendering knows what the templates use: an image only the lock names is not
            found = {image.reference for image in resolution.images}
            unused |= {image.reference for image in from_lock(manifest).images} - found
        merged = merge_images([*resolution.images, *from_lock(manifest).images])
        resolution.images = [replace(i, unused=True) if i.reference in unused else i for i in merged]
    return resolution


def resolve_release(manifest: ReleaseManifest, options: ResolveOptions = ResolveOptions()) -> Resolution:
    """Fetch every chart of the release and derive its images (what `--resolve` does)."""
    found: list[ResolvedImage] = []
    resolution = Resolution(images=[], charts=[])
    for entry in manifest.charts:
        if options.progress:
            options.progress(f"Resolving {entry.source.describe()}")
        chart = fetch_chart(entry.source, options.fetch)
        if chart.archive is None and entry.source.path is not None and entry.source.path.is_dir():
            chart.archive = package_directory(entry.source.path, chart.name)  # a bundle carries archives
        values = chart_values(chart, merge(entry.values, options.user_values.get(entry.name, {})))
        result = images_of_chart(chart, values, entry.name)
        resolved_chart = _resolved_chart(entry, chart, options.fetch)
        bound = _rendered(entry, chart, resolved_chart, values, result.found, resolution, options)
        if bound is not None:
            found += bound
            resolution.rendered_charts.append(entry.name)
        else:
            found += [ResolvedImage(item.reference, entry.group, (item.source,)) for item in result.found]
        resolution.skipped += result.skipped
        resolution.invalid += result.invalid
        resolution.notes += result.notes
        resolution.charts.append(resolved_chart)
    resolution.images = merge_images([*found, *_extra_images(manifest)])
    return resolution


def from_lock(manifest: ReleaseManifest) -> Resolution:
    """The manifest's locked image list: what `wsm list` shows offline."""
    if manifest.lock is None:
        raise ChartError(f"{manifest.origin} has no lock section", hint=Hint.RESOLVE)
    locked = [
        ResolvedImage(image.reference, image.group, image.sources or (ImageSource("(lock)", Method.LOCK),))
        for image in manifest.lock.images
    ]
    versions = {c.name: c for c in manifest.lock.charts}
    charts = [
        ResolvedChart(
            name=e.source.chart,
            version=versions[e.name].version if e.name in versions else (e.source.version or "?"),
            source=redact_url(e.source.location),
            group=e.group,
            digest=versions[e.name].digest if e.name in versions else None,
            release=e.release or e.name,
        )
        for e in manifest.charts
    ]
    return Resolution(images=merge_images([*locked, *_extra_images(manifest)]), charts=charts, from_lock=True)


def _extra_images(manifest: ReleaseManifest) -> list[ResolvedImage]:
    return [
        ResolvedImage(extra.reference, extra.group, (ImageSource("(manifest)", Method.MANIFEST, note=extra.why or None),))
        for extra in manifest.images
    ]


def drift(locked: Resolution, resolved: Resolution) -> list[str]:
    """What differs between the lock and a fresh resolution, one line each."""
    old = {image.reference for image in locked.images}
    new = {image.reference for image in resolved.images}
    lines = [f"added since the lock: {ref.canonical}" for ref in sorted(new - old)]
    lines += [f"in the lock but no longer found: {ref.canonical}" for ref in sorted(old - new)]
    old_versions = {(c.name, c.version) for c in locked.charts}
    for chart in resolved.charts:
        if (chart.name, chart.version) not in old_versions:
            lines.append(f"chart {chart.name} resolves to {chart.version}, not the locked version")
    return lines


def _resolved_chart(entry: ChartEntry, chart: Chart, fetch: FetchOptions) -> ResolvedChart:
    return ResolvedChart(
        name=chart.name,
        version=chart.version,
        source=redact_url(entry.source.location),  # a record: kept in locks, printed
        group=entry.group,
        archive=archive_path(chart, fetch),
        digest=chart.digest,
        release=entry.release or entry.name,
    )


def _rendered(
    entry: ChartEntry, chart: Chart, resolved_chart: ResolvedChart, values: Values, found: list[Found],
    resolution: Resolution, options: ResolveOptions,
) -> list[ResolvedImage] | None:
    """The chart's images bound by differential rendering; None when helm is absent, or when the chart does not
    render with these values and rendering was not insisted on (the values method then stands alone)."""
    if options.render is False or (options.render is None and helm_if_any(options.helm) is None):
        return None
    location = resolved_chart.archive or entry.source.path
    if location is None:
        raise ChartError(f"{entry.source.describe()}: no archive or directory of the chart to render")
    try:
        return _bound_images(entry, chart, location, values, found, resolution, options)
    except RenderError as error:
        if options.render:
            raise
        resolution.notes.append(f"{entry.name}: not rendered, so images come from the values alone ({error})")
        return None


def _bound_images(
    entry: ChartEntry, chart: Chart, location: Path, values: Values, found: list[Found], resolution: Resolution,
    options: ResolveOptions,
) -> list[ResolvedImage]:
    """The chart's images as rendering shows them, each bound to the values paths that make it (differential
    rendering); what values found but the templates never render is marked unused."""
    bound = bind_chart(location, chart, values, chart_name=entry.name, release=entry.release or entry.name,
                       namespace=entry.namespace, helm=options.helm)
    occurrences: dict[Reference, list[RenderedImage]] = {}
    for item in bound.images:
        occurrences.setdefault(item.reference, []).append(item)
    attached: set[int] = set()
    images = []
    for reference, items in occurrences.items():
        paths = {p.path for item in items if item.binding for p in item.binding.paths}
        sources: list[ImageSource] = []
        for index, candidate in enumerate(found):
            if candidate.reference == reference or _covers(candidate.source.path, paths):
                attached.add(index)
                sources.append(_as_found_for(candidate, reference))
        sources += [ImageSource(entry.name, Method.RENDER, template=item.template,
                                note=f"kind {item.kind}, {item.field}" + (f"; {item.note}" if item.note else ""))
                    for item in items]
        bindings = tuple(dict.fromkeys(item.binding for item in items if item.binding))
        hardcoded = any(item.binding is None for item in items)
        images.append(ResolvedImage(reference, entry.group, tuple(dict.fromkeys(sources)), bindings, hardcoded))
    unused = [candidate for index, candidate in enumerate(found) if index not in attached]
    images += [ResolvedImage(c.reference, entry.group, (c.source,), unused=True) for c in unused]
    resolution.notes += _binding_notes(entry.name, bound, images)
    return merge_images(images)


def _covers(path: str | None, bound: set[str]) -> bool:
    return path is not None and any(p == path or p.startswith(path + ".") for p in bound)


def _as_found_for(candidate: Found, reference: Reference) -> ImageSource:
    if candidate.reference == reference:
        return candidate.source
    note = f"the values alone read {candidate.reference.canonical}; the templates render {reference.canonical}"
    return replace(candidate.source, note=note)


def _binding_notes(chart: str, bound: ChartBinding, images: list[ResolvedImage]) -> list[str]:
    notes = [f"{chart}: differential rendering: {bound.renders} helm renders for {bound.candidates} candidate "
             f"values paths"]
    notes += [f"{chart}: {image.reference.canonical} is hard-coded in the templates: no values path moves it"
              for image in images if image.hardcoded]
    notes += [f"{chart}: {image.reference.canonical} is in the values but the templates never render it: unused, "
              "not downloaded" for image in images if image.unused]
    notes += [f"{chart}: setting {path} to a marker makes helm fail: what it renders is unknown"
              for path in bound.unprobed]
    return notes
