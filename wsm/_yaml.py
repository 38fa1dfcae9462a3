"""Reading a YAML document that must be a mapping, with one error line that says where it is broken."""

from __future__ import annotations

from typing import Any

import yaml

from ._exceptions import WsmError


def load_mapping(text: str | bytes, where: str, error: type[WsmError]) -> dict[str, Any]:
    """The document as a dict (empty for an empty document); raise `error` naming `where` and the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise error(f"{where}: malformed YAML{describe(problem)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping at the top, found {type(data).__name__}")
    return data


def describe(problem: Exception) -> str:
    """` at line N (what)` for a YAML error of PyYAML or ruamel.yaml, on one line."""
    mark = getattr(problem, "problem_mark", None)
    line = f" at line {mark.line + 1}" if mark is not None else ""
    what = getattr(problem, "problem", None) or str(problem)
    return f"{line} ({' '.join(str(what).split())[:200]})"
