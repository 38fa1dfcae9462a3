"""Values that point a chart at the internal registry: one override per values path the resolver recorded.

Each shape is rewritten the way its templates read it:
- `{repository, tag}`: repository becomes the full internal name (`registry.corp/wandb/local`);
- `{registry, repository, tag}` (bitnami): registry and repository are set apart; when the registry came
  from elsewhere (`global.imageRegistry`, which bitnami templates prefer), that path is set too;
- a plain string: the whole internal reference.
A target with a digest (a tag that holds another image, pinned to the carried one) sets the maps' `digest`
and the string's `tag@digest`.
Nothing else is touched: a key the release did not use for an image keeps its meaning. An image that
differential rendering bound to values paths is instead solved from its binding: each bound path gets the
value that makes the template render exactly the internal reference (`"v" + tag` gets the tag without its
"v"), whatever the shape.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._bind import binding_overrides
from ._exceptions import ValuesError
from ._files import write_atomically
from ._model import ImageSource, ResolvedImage, Shape
from ._pullsecret import ImagePath
from ._reference import Reference
from ._values import Values, merge, set_path
from ._yaml import describe, load_yaml, read_document


def image_overrides(
    images: Iterable[ResolvedImage], targets: Mapping[Reference, Reference], chart: str
) -> tuple[Values, list[str]]:
    """Overrides for the release chart `chart`, and the images of it that no values path can redirect."""
    values: Values = {}
    unredirected: list[str] = []
    for image in images:
        target = targets[image.reference]
        bound = binding_overrides(image, target, chart)
        if bound is not None:  # rendering showed which paths make it and how: set exactly those
            values = merge(values, bound[0])
            if not bound[1] or image.hardcoded:
                unredirected.append(image.reference.canonical)
            continue
        sources = [s for s in image.sources if belongs_to(s, chart)]
        for source in sources:
            if source.path and source.shape:
                values = merge(values, _override(source.path, source.shape, target))
            if source.registry_path:
                decided: Values = {}
                set_path(decided, source.registry_path.split("."), target.registry)
                values = merge(values, decided)
        if sources and not any(s.path and s.shape for s in sources):
            unredirected.append(image.reference.canonical)
    return values, unredirected


def image_paths(images: Iterable[ResolvedImage], chart: str) -> list[ImagePath]:
    """The values paths where the release chart `chart` sets its images, with their shapes."""
    return [ImagePath(source.path, source.shape) for image in images for source in image.sources
            if belongs_to(source, chart) and source.path and source.shape]


def belongs_to(source: ImageSource, chart: str) -> bool:
    """Whether `source` is in the release chart `chart` (or one of its sub-charts)."""
    return source.chart == chart or source.chart.startswith(chart + "/")


def _override(path: str, shape: Shape, target: Reference) -> Values:
    node: dict[str, Any]
    if shape is Shape.STRING:
        node_value: Any = target.canonical
    else:
        node = {"repository": target.name} if shape is Shape.REPOSITORY else {
            "registry": target.registry,
            "repository": target.repository,
        }
        if target.tag:
            node["tag"] = target.tag
        if target.digest:
            node["digest"] = target.digest
        node_value = node
    result: Values = {}
    set_path(result, path.split("."), node_value, path)
    return result


def rewrite_values_file(path: Path, overrides: Values) -> Path:
    """Merge `overrides` into the user's values file in place, keeping its comments, order and other keys.

    The original is kept beside it as `<name>.bak` (an older backup is not overwritten: `.bak.1`, ...).
    ruamel.yaml round-trips comments and key order, which PyYAML would lose.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    where = f"values file {path}"
    try:
        original = read_document(path, where, ValuesError)
        load_yaml(original, where, ValuesError)  # the budgets first: ruamel.yaml has none of its own
        document = yaml_rt.load(original) or {}
    except FileNotFoundError:
        raise ValuesError(f"values file {path} does not exist") from None
    except OSError as error:
        raise ValuesError(f"{where} cannot be read ({error.strerror})") from None
    except YAMLError as error:
        raise ValuesError(f"values file {path}: malformed YAML{describe(error)}") from None
    if not isinstance(document, dict):
        raise ValuesError(f"values file {path}: expected a mapping at the top")
    _merge_in_place(document, overrides)
    backup = _free_backup_name(path)
    backup.write_text(original)
    text = io.StringIO()
    yaml_rt.dump(document, text)
    write_atomically(path, text.getvalue().encode())
    return backup


def _merge_in_place(document: dict[str, Any], overrides: Values) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            _merge_in_place(document[key], value)
        else:
            document[key] = value


def _free_backup_name(path: Path) -> Path:
    candidate = path.with_name(path.name + ".bak")
    number = 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate
