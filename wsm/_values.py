"""Helm values: layering user values, coalescing with chart defaults, `--set` expressions, and dotted paths.

The rules follow Helm 3 (pkg/chartutil/coalesce.go and pkg/strvals): user layers merge deeply, later winning;
user values win over chart defaults, and a user `null` deletes a default; a sub-chart sees its defaults
overlaid by the parent's values under its name or alias, and the parent's `global` wins over its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ._exceptions import ValuesError
from ._limits import MAX_VALUES_DEPTH
from ._yaml import load_mapping, read_document

Values = dict[str, Any]


def merge(base: Values, override: Values) -> Values:
    """Deep merge of two user layers (as `helm -f a -f b`): maps merge, anything else in `override` wins."""
    result: Values = copy_tree(base)
    pending = [(result, override, 1)]
    while pending:  # iterative: a hostile document's depth must not reach Python's recursion limit
        target, layer, depth = pending.pop()
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                _check_depth(depth + 1)
                pending.append((target[key], value, depth + 1))
            else:
                target[key] = copy_tree(value, depth)
    return result


def coalesce(values: Values, defaults: Values) -> Values:
    """`values` over `defaults`: missing keys come from defaults, a `None` in `values` removes the default."""
    result: Values = copy_tree(values)
    pending = [(result, defaults, 1)]
    while pending:
        target, layer, depth = pending.pop()
        for key, default in layer.items():
            if key not in target:
                target[key] = copy_tree(default, depth)
            elif target[key] is None:
                del target[key]
            elif isinstance(target[key], dict) and isinstance(default, dict):
                _check_depth(depth + 1)
                pending.append((target[key], default, depth + 1))
        for key in [key for key, value in target.items() if value is None and key in layer]:
            del target[key]
    return result


def copy_tree(value: Any, depth: int = 0) -> Any:
    """A deep copy that shares nothing (YAML aliases load as shared objects), built without recursion.

    `depth` is how deep `value` sits; a result nesting past MAX_VALUES_DEPTH (or a cycle) raises ValuesError.
    """
    if not isinstance(value, (dict, list)):
        return value
    root: Any = {} if isinstance(value, dict) else []
    pending = [(value, root, depth + 1)]
    while pending:
        source, target, level = pending.pop()
        _check_depth(level)
        for key, child in (source.items() if isinstance(source, dict) else enumerate(source)):
            copied = child
            if isinstance(child, (dict, list)):
                copied = {} if isinstance(child, dict) else []
                pending.append((child, copied, level + 1))
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
    return root


def _check_depth(depth: int) -> None:
    if depth > MAX_VALUES_DEPTH:
        raise ValuesError(f"values nest deeper than {MAX_VALUES_DEPTH} levels; refusing to use them")


def sub_values(parent: Values, key: str, sub_defaults: Values) -> Values:
    """What a sub-chart under `key` sees: its defaults under the parent's values for it, and the parent's global."""
    own = parent.get(key)
    values = coalesce(own if isinstance(own, dict) else {}, sub_defaults)
    parent_global = parent.get("global")
    if isinstance(parent_global, dict):
        values["global"] = merge(values.get("global") or {}, parent_global)
    return values


def load_values_file(path: Path) -> Values:
    where = f"values file {path}"
    try:
        text = read_document(path, where, ValuesError)
    except FileNotFoundError:
        raise ValuesError(f"values file {path} does not exist") from None
    except OSError as error:
        raise ValuesError(f"{where} cannot be read ({error.strerror})") from None
    return load_mapping(text, where, ValuesError)


# --- `--set` expressions ------------------------------------------------------------------------------------

_INDEX = re.compile(r"^(.*)\[(\d+)\]$")


def parse_set(expression: str, *, strings: bool = False) -> Values:
    """`a.b=1,c[0]=x,d={p,q}` as Helm's --set reads it; `\\,` and `\\.` escape."""
    result: Values = {}
    for assignment in _split_unescaped(expression, ","):
        if not assignment:
            continue
        key, eq, raw = assignment.partition("=")
        if not eq or not key:
            raise ValuesError(f"set expression {expression!r}: {assignment!r} is not key=value")
        value = _set_value(raw, strings)
        keys = [part.replace("\\.", ".") for part in _split_unescaped(key, ".")]
        if len(keys) > MAX_VALUES_DEPTH:
            raise ValuesError(f"set expression {assignment[:60]!r}...: more than {MAX_VALUES_DEPTH} keys deep")
        set_path(result, keys, value, expression)
    return result


def _set_value(raw: str, strings: bool) -> Any:
    if raw.startswith("{") and raw.endswith("}"):
        return [_scalar(item, strings) for item in _split_unescaped(raw[1:-1], ",") if item != ""]
    return _scalar(raw, strings)


def _scalar(raw: str, strings: bool) -> Any:
    raw = raw.replace("\\,", ",").replace("\\.", ".")
    if strings:
        return raw
    if raw in ("true", "false"):
        return raw == "true"
    if raw == "null":
        return None
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", raw):
        return int(raw)
    return raw


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped, depth = [], "", False, 0
    for char in text:
        if escaped:
            current += "\\" + char  # kept escaped: unescaped by the caller once split
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "{":
            depth += 1
            current += char
        elif char == "}":
            depth -= 1
            current += char
        elif char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def set_path(values: Values, keys: list[str], value: Any, what: str = "") -> None:
    """Set `value` at `keys` (each may end in `[n]`), creating maps and lists on the way."""
    node: Any = values
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        index_match = _INDEX.match(key)
        name, index = (index_match.group(1), int(index_match.group(2))) if index_match else (key, None)
        if index is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {}) if isinstance(node.get(name), dict) else _fresh(node, name, {})
            continue
        items = node.get(name) if isinstance(node.get(name), list) else _fresh(node, name, [])
        if index > 10_000:
            where = f"set expression {what!r}" if what else f"values path {'.'.join(keys)!r}"
            raise ValuesError(f"{where}: index {index} is too large")
        items.extend([None] * (index + 1 - len(items)))
        if last:
            items[index] = value
        else:
            if not isinstance(items[index], dict):
                items[index] = {}
            node = items[index]


def _fresh(node: dict[str, Any], key: str, empty: Any) -> Any:
    node[key] = empty
    return empty


# --- dotted paths ---------------------------------------------------------------------------------------------


def get_path(values: object, path: str) -> Any:
    """The value at a dotted path (`a.b.c`), or None when any step is missing."""
    node = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def join_path(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)
