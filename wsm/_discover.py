"""Finding images in a chart's values and in its `helm.sh/images` annotation.

Charts write images in a few common shapes; each found image records its dotted values path and shape so that
the pusher can point exactly that node at the internal registry:
- `{repository: wandb/local, tag: 0.62.2}` (the registry may be part of `repository`; `digest` optional)
- `{registry: docker.io, repository: bitnami/redis, tag: 7.2.4}` (bitnami; `global.imageRegistry` wins)
- `image: wandb/local:0.62.2` (a plain string under an image-like key)
An empty or missing tag means the chart's appVersion, the convention of `helm create`'s templates.
A node of one of these shapes whose reference does not parse (an upper-case repository, a 200-character tag, a
malformed digest) is not dropped: it is recorded as `Invalid`, with its path, for the caller to report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._chart import Chart
from ._exceptions import ChartError, InvalidReference
from ._model import ImageSource, Method, Shape
from ._pullsecret import KEYS as PULL_SECRET_KEYS
from ._reference import Reference, looks_like_reference
from ._values import join_path
from ._yaml import load_yaml

_SWITCH_KEYS = ("enabled", "install")


@dataclass(frozen=True)
class Found:
    reference: Reference
    source: ImageSource


@dataclass(frozen=True)
class Invalid:
    """An image-shaped node whose reference does not parse as Docker's would."""

    text: str
    path: str
    reason: str


@dataclass
class Discovered:
    found: list[Found]
    skipped: list[Skipped]
    invalid: list[Invalid]


@dataclass(frozen=True)
class Skipped:
    """An image-shaped node left out because a switch beside or above it is off."""

    text: str
    path: str
    switch: str


def images_in_values(
    values: dict[str, Any], chart: Chart, chart_path: str, prefix: str, skip_keys: set[str]
) -> Discovered:
    """Images in a chart's own part of the values (`skip_keys`: its sub-charts' keys and `global`)."""
    walker = _Walker(chart, chart_path, values.get("global") or {})
    for key, value in values.items():
        if key not in skip_keys:
            walker.walk(value, key, join_path(prefix, key))
    return Discovered(walker.found, walker.skipped, walker.invalid)


class _Walker:
    def __init__(self, chart: Chart, chart_path: str, global_values: object) -> None:
        self.chart = chart
        self.chart_path = chart_path
        self.global_registry = global_values.get("imageRegistry") if isinstance(global_values, dict) else None
        self.found: list[Found] = []
        self.skipped: list[Skipped] = []
        self.invalid: list[Invalid] = []

    def walk(self, root: object, root_key: str | int, root_path: str) -> None:
        """Depth first, in document order, with an explicit stack (values may nest as deep as their budget)."""
        pending: list[tuple[object, str | int, str, str | None]] = [(root, root_key, root_path, None)]
        while pending:
            node, key, path, switched_off = pending.pop()
            if key in PULL_SECRET_KEYS:
                continue  # `imagePullSecrets: [{name: regcred}]` names secrets, not images
            children: list[tuple[object, str | int, str, str | None]] = []
            if isinstance(node, dict):
                switched_off = switched_off or _switch_off(node, path)
                if _is_image_map(node, key):
                    self._image_map(node, path, switched_off)
                elif _is_invalid_image_map(node, key):
                    self._invalid(_map_text(node), path, switched_off)
                else:
                    children = [(child, k, join_path(path, k), switched_off) for k, child in node.items()]
            elif isinstance(node, list):
                children = [(item, key, join_path(path, i), switched_off) for i, item in enumerate(node)]
            elif isinstance(node, str) and is_image_key(key) and is_image_string(node):
                self._add(Reference.parse(node), path, Shape.STRING, None, switched_off)
            elif isinstance(node, str) and _is_invalid_image_string(node, key):
                self._invalid(node, path, switched_off)
            pending.extend(reversed(children))

    def _invalid(self, text: str, path: str, switched_off: str | None) -> None:
        if switched_off:
            return  # a disabled component's images are not carried, valid or not
        try:
            Reference.parse(text)
        except InvalidReference as error:
            self.invalid.append(Invalid(text, path, error.message))

    def _image_map(self, node: dict[str, Any], path: str, switched_off: str | None) -> None:
        repository = str(node.get("repository") or node.get("name") or "").strip()
        registry = node.get("registry")
        shape = Shape.REGISTRY if "registry" in node else Shape.REPOSITORY
        registry_path = None
        if shape is Shape.REGISTRY and self.global_registry:
            registry = self.global_registry  # bitnami's common.images.image gives global.imageRegistry priority
            registry_path = "global.imageRegistry"
        tag, note = _scalar(node.get("tag")), None
        digest = _scalar(node.get("digest"))
        if not tag and not digest:
            tag, note = self.chart.app_version or "latest", "tag from the chart's appVersion"
        text = _reference_text(registry, repository, tag, digest)
        if "{{" in text:
            return  # a template: helm fills it in, only rendering can tell
        try:
            reference = Reference.parse(text)
        except InvalidReference:
            self._invalid(text, path, switched_off)
            return
        self._add(reference, path, shape, note, switched_off, registry_path)

    def _add(
        self, reference: Reference, path: str, shape: Shape, note: str | None, switched_off: str | None,
        registry_path: str | None = None,
    ) -> None:
        if switched_off:
            self.skipped.append(Skipped(reference.canonical, path, switched_off))
            return
        source = ImageSource(chart=self.chart_path, method=Method.VALUES, path=path, shape=shape, note=note,
                             registry_path=registry_path)
        self.found.append(Found(reference, source))


def _switch_off(node: dict[str, Any], path: str) -> str | None:
    for key in _SWITCH_KEYS:
        if node.get(key) is False:
            return join_path(path, key)
    return None


def _is_image_map(node: dict[str, Any], key: str | int) -> bool:
    repository = node.get("repository", node.get("name") if is_image_key(key) else None)
    if not isinstance(repository, str) or not repository or "{{" in repository:
        return False
    if not looks_like_reference(repository):
        return False
    return any(k in node for k in ("tag", "digest", "registry")) or is_image_key(key)


def _is_invalid_image_map(node: dict[str, Any], key: str | int) -> bool:
    """An image map (`repository` with a tag, digest or registry) whose repository is not a valid name.

    Only a repository that could be meant as one counts (no template, no URL, no spaces): a `repository` key
    holding a git URL or a Helm repository is not an image.
    """
    repository = node.get("repository")
    if not isinstance(repository, str) or not _image_like_text(repository):
        return False
    return any(k in node for k in ("tag", "digest", "registry")) or is_image_key(key)


def _is_invalid_image_string(text: str, key: str | int) -> bool:
    # Only under a key that names one image (`image`, `initImage`): `imagePullPolicy` or `imageRegistry` hold
    # other things, and a string without ':', '/' or '@' is no reference anyone meant.
    named_image = isinstance(key, str) and key.lower().endswith("image")
    return named_image and _image_like_text(text) and any(mark in text for mark in ":/@")


def _image_like_text(text: str) -> bool:
    text = text.strip()
    if not text or "{{" in text or "://" in text or any(c.isspace() for c in text):
        return False
    return not (text.startswith("git@") or text.endswith(".git"))  # a git remote, not an image


def _map_text(node: dict[str, Any]) -> str:
    registry = node.get("registry")
    return _reference_text(str(registry) if registry else None, str(node.get("repository")).strip(),
                           _scalar(node.get("tag")), _scalar(node.get("digest")))


def _reference_text(registry: object, repository: str, tag: str | None, digest: str | None) -> str:
    text = f"{registry}/{repository}" if registry else repository
    text += f":{tag}" if tag else ""
    return text + (f"@{digest}" if digest else "")


def is_image_key(key: str | int) -> bool:
    return isinstance(key, str) and "image" in key.lower()


def is_image_string(text: str) -> bool:
    # A bare word ("IfNotPresent", "nginx") under an image-ish key is too weak a signal: ask for a tag or a path.
    return looks_like_reference(text) and (":" in text or "/" in text or "@" in text)


def _scalar(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value).strip() or None


ANNOTATION = "helm.sh/images"
ANNOTATION_PLACE = f"annotation {ANNOTATION}"  # where an annotation's entry was found, for reports


def images_in_annotation(chart: Chart, chart_path: str, from_values: Sequence[Found] = ()) -> Discovered:
    """Images listed in Chart.yaml's `helm.sh/images` annotation (Artifact Hub's convention).

    The annotation lists the chart's defaults; an entry whose repository the values set to another registry
    or tag is superseded by what the values say, and is left out (one that agrees is a second witness). An
    entry whose `image` does not parse is recorded as `Invalid` (its path is the entry's index), not dropped.
    """
    by_values = {item.reference for item in from_values}
    overridden = {reference.repository for reference in by_values}
    result = Discovered([], [], [])
    text = chart.annotations.get(ANNOTATION)
    if not text:
        return result
    entries = load_yaml(text, f"{chart_path}: Chart.yaml {ANNOTATION_PLACE}", ChartError) or []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        image = entry.get("image") if isinstance(entry, dict) else None
        if image is None:
            continue
        try:
            reference = Reference.parse(image if isinstance(image, str) else "")
        except InvalidReference as error:
            reason = error.message if isinstance(image, str) else f"the image {image!r} is not a string"
            result.invalid.append(Invalid(str(image), f"[{index}].image", reason))
            continue
        if reference.repository not in overridden or reference in by_values:
            source = ImageSource(chart=chart_path, method=Method.ANNOTATION, note=f"{ANNOTATION} annotation")
            result.found.append(Found(reference, source))
    return result
