"""Pull secrets: the values that make every pod of a chart pull with a named `kubernetes.io/dockerconfigjson`
secret, and the check of `helm template` output that every pod pulling an internal image names it.

Charts take pull secrets under a few keys, found the way images are found (in the chart's merged values):
- `imagePullSecrets` at the root of a chart or sub-chart (what `helm create` writes);
- `global.imagePullSecrets` (bitnami charts and many umbrella charts; shared by every sub-chart);
- `<image path>.pullSecrets` beside an image (bitnami's `image.pullSecrets`, the W&B operator's).
Elements are `{name: X}` (the Kubernetes shape) or plain `X` strings. The shape is the one the chart's values
show; an empty list says nothing, so the conventions decide: `pullSecrets` beside an image holds strings
(bitnami's helpers and the W&B operator's template both render `- name: {{ . }}`), and so do the keys of
bitnami-style charts (those with `global.imageRegistry`); every other `imagePullSecrets` takes `{name: X}`. A
`global` list shared by both kinds gets `{name: X}`: bitnami's current helpers take either. Rendering tells
whether the guess was right (`pod_spec_gaps` accepts only `{name: X}` in the output).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._chart import Chart
from ._exceptions import RenderError, WsmError
from ._model import Shape
from ._limits import MAX_SECRET_NAME
from ._names import is_dns_subdomain
from ._reference import Reference, looks_like_reference
from ._render import CONTAINER_LISTS, Renderings
from ._values import Values, coalesce, get_path, join_path, set_path, sub_values

ROOT_KEY = "imagePullSecrets"
GLOBAL_KEY = "global.imagePullSecrets"
IMAGE_KEY = "pullSecrets"
KEYS = frozenset({ROOT_KEY, IMAGE_KEY})  # keys whose lists hold secret names, never images


def validate_secret_name(name: str) -> str:
    """`name` when it is a valid Kubernetes secret name (a DNS-1123 subdomain), else a one-line error."""
    if not is_dns_subdomain(name, MAX_SECRET_NAME):
        raise WsmError(
            f"pull secret name {name!r} is not a Kubernetes secret name: use at most {MAX_SECRET_NAME} lower-case "
            "letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. regcred)"
        )
    return name


@dataclass(frozen=True)
class ImagePath:
    """A values path (from the release chart's root) where the chart sets an image, and its shape."""

    path: str
    shape: Shape


@dataclass(frozen=True)
class _Node:
    """One chart of the tree: where its values start, and the values it sees."""

    prefix: str
    values: Values

    @property
    def bitnami(self) -> bool:
        return isinstance(self.values.get("global"), dict) and "imageRegistry" in self.values["global"]


def pull_secret_overrides(
    chart: Chart, user: Values, images: Iterable[ImagePath], name: str
) -> tuple[Values, list[str]]:
    """The values that set secret `name` wherever `chart` (with the user's values) takes pull secrets, and the
    dotted keys set; no key means the chart offers no way to set one through values."""
    nodes = list(_nodes(chart, coalesce(user, chart.values), ""))
    view = _view(nodes)
    overrides: Values = {}
    keys: list[str] = []

    def put(path: str, current: list[Any], strings: bool) -> None:
        element = _element(name, current, strings)
        set_path(overrides, path.split("."), current if element in current else [*current, element])
        keys.append(path)

    for node in nodes:
        if isinstance(node.values.get(ROOT_KEY), list):
            put(join_path(node.prefix, ROOT_KEY), node.values[ROOT_KEY], node.bitnami)
    owners = [node for node in nodes if isinstance(get_path(node.values, GLOBAL_KEY), list)]
    if owners:
        current = max((get_path(node.values, GLOBAL_KEY) for node in owners), key=len)
        put(GLOBAL_KEY, current, all(node.bitnami for node in owners))
    for image in dict.fromkeys(images):
        node_value = get_path(view, image.path)
        beside = node_value.get(IMAGE_KEY) if isinstance(node_value, dict) else None
        if image.shape is not Shape.STRING and isinstance(beside, list):
            put(join_path(image.path, IMAGE_KEY), beside, True)
    return overrides, keys


def _element(name: str, current: list[Any], strings: bool) -> Any:
    """`name` in the shape of the first element the values show, else a string or `{name: X}`."""
    first = current[0] if current else None
    if isinstance(first, dict):
        return {"name": name}
    if isinstance(first, str):
        return name
    return name if strings else {"name": name}


def _nodes(chart: Chart, values: Values, prefix: str) -> Iterator[_Node]:
    """The chart and every vendored sub-chart under each key it is used as (disabled ones too: a secret set
    for them does no harm)."""
    yield _Node(prefix, values)
    for key, _, sub in chart.vendored():
        yield from _nodes(sub, sub_values(values, key, sub.values), join_path(prefix, key))


def _view(nodes: list[_Node]) -> Values:
    """One tree of every node's values under its prefix, as image paths address them (parents come first)."""
    view: Values = dict(nodes[0].values)
    for node in nodes[1:]:
        set_path(view, node.prefix.split("."), dict(node.values))
    return view


# --- rendered pod specs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodSpecGap:
    """A rendered pod spec that pulls an internal image without naming the pull secret."""

    chart: str
    template: str  # helm's `# Source:` path
    kind: str
    name: str  # the object's metadata.name
    images: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.chart}: {self.kind} {self.name} ({self.template}) pulls {', '.join(self.images)}"


def pod_spec_gaps(
    documents: Iterable[tuple[str, object]], chart: str, registry_host: str, name: str
) -> tuple[int, list[PodSpecGap]]:
    """How many rendered pod specs pull from `registry_host`, and those whose `imagePullSecrets` lack
    `{name: <name>}` (the only shape Kubernetes reads)."""
    checked, gaps = 0, []
    for template, document in documents:
        if not isinstance(document, dict):
            continue
        for spec in _pod_specs(document):
            internal = tuple(image for image in _images(spec) if _registry(image) == registry_host)
            if not internal:
                continue
            checked += 1
            named = spec.get("imagePullSecrets")
            if not isinstance(named, list) or {"name": name} not in named:
                metadata = document.get("metadata")
                object_name = str(metadata.get("name", "?")) if isinstance(metadata, dict) else "?"
                gaps.append(PodSpecGap(chart, template, str(document.get("kind", "?")), object_name, internal))
    return checked, gaps


def _pod_specs(node: object) -> Iterator[dict[str, Any]]:
    """Every mapping with a `containers` list, at any depth (Deployments, CronJobs, custom resources)."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield node
        for value in node.values():
            yield from _pod_specs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pod_specs(item)


def _registry(image: str) -> str | None:
    return Reference.parse(image).registry if looks_like_reference(image) else None


def _images(spec: dict[str, Any]) -> Iterator[str]:
    for key in CONTAINER_LISTS:
        for container in spec.get(key) or []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                yield container["image"]


@dataclass(frozen=True)
class RenderTarget:
    """A chart as the site installs it: its archive and the values wsm wrote for it."""

    chart: str
    archive: Path
    values: Values
    release: str
    namespace: str


@dataclass
class PullSecretReport:
    """What rendering the written values showed about the pull secret."""

    secret: str
    pod_specs_checked: int = 0
    gaps: list[PodSpecGap] = field(default_factory=list)
    without_keys: list[str] = field(default_factory=list)  # charts whose values take no pull secret
    notes: list[str] = field(default_factory=list)  # why some chart was not rendered

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.secret, "pod_specs_checked": self.pod_specs_checked, "gaps": [str(g) for g in self.gaps],
            "charts_without_keys": self.without_keys, "notes": self.notes,
        }


def check_rendered(
    secret: str, registry_host: str, targets: Iterable[RenderTarget], helm: str | None = None,
    renderings: Renderings | None = None,
) -> PullSecretReport:
    """`helm template` each target and name every pod spec that pulls from `registry_host` without the secret.
    A chart helm cannot render (or no helm at all) is noted, not fatal: the values are written either way."""
    report = PullSecretReport(secret)
    renderings = renderings or Renderings(helm)
    for target in targets:
        try:
            documents = renderings.documents(target.archive, target.values, release=target.release,
                                             namespace=target.namespace)
        except RenderError as error:
            report.notes.append(f"{target.chart}: pod specs not checked ({error})")
            continue
        checked, gaps = pod_spec_gaps(documents, target.chart, registry_host, secret)
        report.pod_specs_checked += checked
        report.gaps += gaps
    return report
