"""Binding rendered images to values paths: differential rendering.

The chart is rendered once with the resolved values, then with a unique marker (a sentinel) at every candidate
values path: each registry, repository, tag and digest field of every image-shaped map, every `image:` string
and every registry string of the merged values (sub-charts' defaults included). A rendered reference that
carries sentinels is bound: its text with a hole per sentinel is the transformation (`{0}/{1}:v{2}`), and the
reference the same place renders with the real values is the image. A reference no sentinel reaches is
hard-coded. Leaf paths never overlap, so all sentinels share one render; only when helm refuses a batch (a
template that checks a value) is it split in halves, so N candidates cost a handful of renders, not N.

Solving a binding backwards gives the values that make helm render a wanted reference exactly (`solve`), and
`prove` renders a chart with the values wsm wrote and names every reference that is not the expected one.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._chart import Chart
from ._discover import is_image_key, is_image_string
from ._exceptions import InvalidReference, RenderError
from ._model import Binding, BoundPath, Method, ResolvedImage, Role
from ._pullsecret import KEYS as PULL_SECRET_KEYS
from ._reference import Reference, looks_like_reference
from ._render import RenderedString, Renderings, helm_template, rendered_strings
from ._values import Values, copy_tree, join_path, set_path, sub_values

IMAGE_FIELDS = ("container", "custom-resource")  # where a whole string is one image reference
_TOKEN = re.compile(r"[A-Za-z0-9._:/@-]+")
_MAP_FIELDS = (("registry", Role.REGISTRY), ("repository", Role.REPOSITORY), ("name", Role.REPOSITORY),
               ("tag", Role.TAG), ("digest", Role.DIGEST))
_ROLE_PATTERNS = {
    Role.REGISTRY: r"[^/@]+",
    Role.REPOSITORY: r"[^@]+?",
    Role.TAG: r"[\w][\w.-]*",
    Role.DIGEST: r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+",
    Role.IMAGE: r".+",
}


@dataclass(frozen=True)
class RenderedImage:
    """One rendered occurrence of an image: bound to values paths, or hard-coded (`binding` None)."""

    reference: Reference
    location: str
    field: str
    template: str
    kind: str
    binding: Binding | None = None
    note: str | None = None


@dataclass
class ChartBinding:
    images: list[RenderedImage] = field(default_factory=list)
    renders: int = 0
    candidates: int = 0
    unprobed: list[str] = field(default_factory=list)  # paths whose sentinel made helm fail even alone


# --- the values helm sees, and the candidate paths in them ----------------------------------------------------


def values_view(chart: Chart, values: Values, globals_seen: list[Values] | None = None) -> Values:
    """`values` with each vendored sub-chart's part coalesced with its defaults, as its templates see it (its
    `global` left to the root, collected in `globals_seen`): what differential rendering passes to helm, so
    that every candidate path (sub-chart defaults included) can be set without replacing a list or map helm
    would otherwise merge."""
    view: Values = copy_tree(values)
    for key, _, sub in chart.vendored():
        sub_view = values_view(sub, sub_values(values, key, sub.values), globals_seen)
        sub_global = sub_view.pop("global", None)
        if isinstance(sub_global, dict) and globals_seen is not None:
            globals_seen.append(sub_global)
        view[key] = sub_view
    return view


def candidates(view: Values, sub_globals: Sequence[Values] = ()) -> list[BoundPath]:
    """Every values path that may go into an image reference, in the order found; a sub-chart's own `global`
    defaults (a registry there decides its images) are set through the root's `global`, which wins over them."""
    found: list[BoundPath] = []
    _candidates_in(view, "", "", found)
    for sub_global in sub_globals:
        _candidates_in(sub_global, "global", "global", found)
    return list(dict.fromkeys(found))


def _candidates_in(node: object, key: str, path: str, found: list[BoundPath]) -> None:
    if isinstance(node, dict):
        if _is_image_map(node, key):
            found += _map_candidates(node, path)
            return
        for child_key, child in node.items():
            # Pull-secret lists name secrets, never images (discovery's walk skips them too).
            if isinstance(child_key, str) and _plain_key(child_key) and child_key not in PULL_SECRET_KEYS:
                _candidates_in(child, child_key, join_path(path, child_key), found)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _candidates_in(item, key, join_path(path, index), found)
    elif isinstance(node, str) and node.strip():
        if is_image_key(key) and is_image_string(node):
            found.append(BoundPath(path, Role.IMAGE))
        elif "registry" in key.lower() and _looks_like_host(node):
            found.append(BoundPath(path, Role.REGISTRY))


def _plain_key(key: str) -> bool:
    """A key a dotted path can name (wsm's paths split on dots and read `[n]` as an index)."""
    return bool(key) and not any(mark in key for mark in ".[]")


def _is_image_map(node: dict[str, Any], key: str) -> bool:
    repository = node.get("repository", node.get("name") if "image" in key.lower() else None)
    if not isinstance(repository, str) or not repository.strip():
        return False
    return any(k in node for k in ("tag", "digest", "registry")) or "image" in key.lower()


def _map_candidates(node: dict[str, Any], path: str) -> list[BoundPath]:
    result = []
    has_digest = bool(_text(node.get("digest")))
    for name, role in _MAP_FIELDS:
        if name == "name" and "repository" in node:
            continue
        value = node.get(name)
        if isinstance(value, (dict, list)) or (name == "name" and not _text(value)):
            continue
        if role is Role.TAG and has_digest and not _text(value):
            continue  # a tag set beside a digest would change what the template renders
        if name not in node and role is not Role.TAG:
            continue
        if role in (Role.REPOSITORY, Role.DIGEST) and not _text(value):
            continue
        result.append(BoundPath(join_path(path, name), role))
    return result


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _looks_like_host(text: str) -> bool:
    host = text.split("/", 1)[0]
    return host == "localhost" or "." in host or ":" in host


# --- differential rendering ----------------------------------------------------------------------------------


@dataclass
class _Renderer:
    chart_path: Path
    release: str
    namespace: str
    helm: str | None
    count: int = 0

    def render(self, values: Values) -> list[RenderedString]:
        self.count += 1
        return rendered_strings(helm_template(self.chart_path, values, release=self.release,
                                              namespace=self.namespace, helm=self.helm))


def bind_chart(chart_path: Path, chart: Chart, values: Values, *, chart_name: str, release: str, namespace: str,
               helm: str | None = None) -> ChartBinding:
    """Render `chart_path` with `values` (the release chart's coalesced values) and with sentinels; bind every
    rendered image to the values paths that make it."""
    renderer = _Renderer(chart_path, release, namespace, helm)
    sub_globals: list[Values] = []
    view = values_view(chart, values, sub_globals)
    baseline = renderer.render(view)
    found = candidates(view, sub_globals)
    result = ChartBinding(candidates=len(found))
    markers = _Markers()
    observed: dict[str, list[_Observed]] = {}
    numbered = dict(enumerate(found))
    for batch, rendered in _sentinel_renders(renderer, view, _groups(found), numbered, markers, result.unprobed):
        for item in rendered:
            for observation in _observe(item, batch, markers):
                observed.setdefault(item.location, []).append(observation)
    result.images = list(_bind_baseline(baseline, observed, chart_name))
    result.renders = renderer.count
    return result


class _Markers:
    """Sentinels: `wsm<nonce><n>x`, lower-case letters and digits only, so that they survive any part of a
    reference (a registry host, a repository path, a tag) and `lower`; the nonce keeps them unlike any value."""

    def __init__(self) -> None:
        self.nonce = "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))
        self.pattern = re.compile(rf"wsm{self.nonce}(\d+)x")

    def marker(self, index: int) -> str:
        return f"wsm{self.nonce}{index}x"


def _sentinel_renders(renderer: _Renderer, view: Values, groups: Sequence[Sequence[int]],
                      numbered: Mapping[int, BoundPath], markers: _Markers, unprobed: list[str]
                      ) -> Iterator[tuple[dict[int, BoundPath], list[RenderedString]]]:
    """One render for every group of candidates at once; when helm fails on it, each half on its own. A group
    (the fields of one image map) stays together so that one render shows its whole reference; a lone group
    that fails is tried field by field, and a lone field that fails is reported as unprobed."""
    if not groups:
        return
    batch = {index: numbered[index] for group in groups for index in group}
    values = copy_tree(view)
    for index, candidate in batch.items():
        set_path(values, candidate.path.split("."), markers.marker(index), candidate.path)
    try:
        rendered = renderer.render(values)
    except RenderError:
        if len(batch) == 1:
            unprobed.append(next(iter(batch.values())).path)
            return
        if len(groups) == 1:  # one image's fields: now apart
            groups = [[index] for index in groups[0]]
        half = len(groups) // 2
        for part in (groups[:half], groups[half:]):
            yield from _sentinel_renders(renderer, view, part, numbered, markers, unprobed)
        return
    yield batch, rendered


def _groups(found: Sequence[BoundPath]) -> list[list[int]]:
    """Indices of the candidates by image: the fields of one map together, every string on its own."""
    by_parent: dict[str, list[int]] = {}
    for index, candidate in enumerate(found):
        parent, _, name = candidate.path.rpartition(".")
        in_map = candidate.role is not Role.IMAGE and name in {field for field, _ in _MAP_FIELDS}
        by_parent.setdefault(parent if in_map else candidate.path, []).append(index)
    return list(by_parent.values())


@dataclass(frozen=True)
class _Observed:
    token_index: int  # which reference-like token of the string (0 for an image field)
    pattern: str
    paths: tuple[BoundPath, ...]


def _tokens(item: RenderedString) -> list[str]:
    if item.field in IMAGE_FIELDS:
        return [item.text.strip()]
    return [token for token in _TOKEN.findall(item.text) if "://" not in token]


def _observe(item: RenderedString, batch: Mapping[int, BoundPath], markers: _Markers) -> Iterator[_Observed]:
    for index, token in enumerate(_tokens(item)):
        holes = [int(match.group(1)) for match in markers.pattern.finditer(token)]
        if not holes or any(hole not in batch for hole in holes):
            continue
        order = list(dict.fromkeys(holes))
        pieces = markers.pattern.split(token)  # literal, hole, literal, hole, ..., literal
        pattern = "".join(
            piece.replace("{", "{{").replace("}", "}}") if position % 2 == 0 else f"{{{order.index(int(piece))}}}"
            for position, piece in enumerate(pieces)
        )
        paths = tuple(batch[hole] for hole in order)
        yield _Observed(index, pattern, paths)


def _bind_baseline(baseline: Iterable[RenderedString], observed: Mapping[str, list[_Observed]], chart_name: str
                   ) -> Iterator[RenderedImage]:
    for item in baseline:
        tokens = _tokens(item)
        seen = {o.token_index: o for o in sorted(observed.get(item.location, ()), key=lambda o: len(o.paths))}
        for index, token in enumerate(tokens):
            reference = _reference(token)
            if reference is None:
                continue
            found = seen.get(index)
            if found is not None:
                binding = Binding(chart_name, item.location, item.field, found.pattern, found.paths)
                yield RenderedImage(reference, item.location, item.field, item.template, item.kind, binding)
            elif item.field in IMAGE_FIELDS:
                yield RenderedImage(reference, item.location, item.field, item.template, item.kind,
                                    note="no values path moves it")


def _reference(token: str) -> Reference | None:
    if not looks_like_reference(token):
        return None
    try:
        return Reference.parse(token)
    except InvalidReference:
        return None


# --- from a binding back to values -------------------------------------------------------------------------


def solve(binding: Binding, wanted: str) -> dict[str, str] | None:
    """The value of each bound path that makes the binding render exactly `wanted`, or None when it cannot
    (a literal part of the pattern, such as a registry written into the template, does not fit)."""
    regex = ""
    groups: dict[int, str] = {}
    for literal, hole, _, _ in string.Formatter().parse(binding.pattern):
        regex += re.escape(literal)
        if hole is None:
            continue
        number = int(hole)
        if number in groups:
            regex += f"(?P={groups[number]})"
        else:
            groups[number] = f"h{number}"
            regex += f"(?P<h{number}>{_ROLE_PATTERNS[binding.paths[number].role]})"
    match = re.fullmatch(regex, wanted)
    if match is None:
        return None
    return {binding.paths[number].path: match.group(name) for number, name in groups.items()}


def internal_text(target: Reference) -> str:
    """The text a template must render for `target`: its canonical form (an internal registry is explicit)."""
    return target.canonical


def binding_overrides(image: ResolvedImage, target: Reference, chart: str) -> tuple[Values, bool] | None:
    """Values that make every bound occurrence of `image` in the release chart `chart` render `target`, and
    whether every occurrence could be solved; None when the image has no binding in this chart."""
    bindings = [binding for binding in image.bindings if binding.chart == chart]
    if not bindings:
        return None
    values: Values = {}
    solved_all = True
    for binding in bindings:
        solved = solve(binding, internal_text(target))
        solved_all = solved_all and solved is not None
        for path, value in (solved or {}).items():
            set_path(values, path.split("."), value, path)
    return values, solved_all


# --- the proof ------------------------------------------------------------------------------------------------


@dataclass
class Proof:
    """What rendering a chart with the values wsm wrote showed: `problems` name each reference that is not the
    expected internal one; `hardcoded` the references no values path moves (known from the binding)."""

    chart: str
    problems: list[str] = field(default_factory=list)
    hardcoded: list[str] = field(default_factory=list)
    checked: int = 0
    unrendered: str | None = None  # why the chart could not be rendered to prove it


def prove(chart_path: Path, values: Values, *, chart: str, release: str, namespace: str,
          images: Sequence[ResolvedImage], targets: Mapping[Reference, Reference], helm: str | None = None,
          renderings: Renderings | None = None) -> Proof:
    """Render `chart_path` with `values` (through `renderings`, when the caller shares them) and check every image
    field, and every string a binding recorded, against the internal references `targets` gives."""
    expected = {target.canonical for target in targets.values()}
    # Hard-coded: marked so by the binding, or (a lock from before differential rendering) found only by rendering.
    hardcoded = {image.reference.canonical for image in images
                 if image.hardcoded or (not image.bindings and image.methods == {Method.RENDER})}
    bound_locations = {binding.location for image in images for binding in image.bindings if binding.chart == chart}
    proof = Proof(chart)
    text = (renderings or Renderings(helm)).template(chart_path, values, release=release, namespace=namespace)
    rendered = rendered_strings(text)
    sources = {image.reference.canonical for image in images}
    internal_hosts = {target.registry for target in targets.values()}
    for item in rendered:
        if item.field not in IMAGE_FIELDS and item.location not in bound_locations:
            continue
        for token in _tokens(item):
            reference = _reference(token)
            if reference is None:
                continue
            if item.field not in IMAGE_FIELDS and reference.canonical not in sources and \
                    reference.registry not in internal_hosts:
                continue  # another word of an argument or a ConfigMap, not one of the release's images
            proof.checked += 1
            if reference.canonical in expected:
                continue
            if reference.canonical in hardcoded:
                proof.hardcoded.append(reference.canonical)
                continue
            proof.problems.append(f"{chart}: {item.location} renders {token}, not an internal image")
    return proof
