"""Values that point a chart at the internal registry: one override per values path the resolver recorded.

Each shape is rewritten the way its templates read it:
- `{repository, tag}`: repository becomes the full internal name (`registry.corp/wandb/local`);
- `{registry, repository, tag}` (bitnami): registry and repository are set apart, and `global.imageRegistry`
  too, since bitnami templates prefer it over each image's own registry;
- a plain string: the whole internal reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._model import ImageSource, ResolvedImage, Shape
from ._reference import Reference
from ._values import Values, merge, set_path


def image_overrides(
    images: Iterable[ResolvedImage], targets: Mapping[Reference, Reference], chart: str
) -> tuple[Values, list[str]]:
    """Overrides for the release chart `chart`, and the images of it that no values path can redirect."""
    values: Values = {}
    unredirected: list[str] = []
    registries: set[str] = set()
    for image in images:
        target = targets[image.reference]
        sources = [s for s in image.sources if _belongs(s, chart)]
        for source in sources:
            if source.path and source.shape:
                values = merge(values, _override(source, target))
                if source.shape is Shape.REGISTRY:
                    registries.add(target.registry)
        if sources and not any(s.path and s.shape for s in sources):
            unredirected.append(image.reference.canonical)
    if len(registries) == 1:
        values = merge(values, {"global": {"imageRegistry": registries.pop()}})
    return values, unredirected


def _belongs(source: ImageSource, chart: str) -> bool:
    return source.chart == chart or source.chart.startswith(chart + "/")


def _override(source: ImageSource, target: Reference) -> Values:
    node: dict[str, Any]
    if source.shape is Shape.STRING:
        node_value: Any = target.canonical
    else:
        node = {"repository": target.name} if source.shape is Shape.REPOSITORY else {
            "registry": target.registry,
            "repository": target.repository,
        }
        if target.tag:
            node["tag"] = target.tag
        if target.digest:
            node["digest"] = target.digest
        node_value = node
    result: Values = {}
    set_path(result, source.path.split("."), node_value, source.path)
    return result
