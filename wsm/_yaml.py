"""Reading YAML from upstream within a budget, with one error line that says where it is broken.

Every YAML document wsm reads goes through `load_yaml`: its size, its nesting depth, its number of nodes and the
nodes its aliases create are counted while it is composed, before any Python object is built, so that an alias
bomb ("billion laughs") or a document nested thousands deep ends in one line naming the file. Aliases stay
shared objects after loading; the values code copies them into plain trees (`_values.copy_tree`), which the
node budget keeps small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from ._exceptions import WsmError
from ._format import human_bytes
from ._limits import (
    MAX_ALIAS_NODES,
    MAX_INDEX_YAML_BYTES,
    MAX_INDEX_YAML_NODES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)

try:  # libyaml parses (events only: composing stays in Python, where it is counted) several times faster
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str | bytes) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


@dataclass(frozen=True)
class YamlLimits:
    max_bytes: int
    max_nodes: int
    max_depth: int = MAX_YAML_DEPTH
    max_alias_nodes: int = MAX_ALIAS_NODES


DOCUMENT = YamlLimits(MAX_YAML_BYTES, MAX_YAML_NODES)
INDEX = YamlLimits(MAX_INDEX_YAML_BYTES, MAX_INDEX_YAML_NODES)


class _OverBudget(yaml.YAMLError):
    pass


class _BudgetLoader(Composer, _Parser, SafeConstructor, Resolver):
    """PyYAML's safe loader whose composer counts nodes, alias expansions and depth as it goes."""

    def __init__(self, stream: str | bytes, limits: YamlLimits) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.limits = limits
        self.nodes = 0
        self.alias_nodes = 0
        self.depth = 0
        self.open_anchors: set[str] = set()
        self.expanded: dict[int, int] = {}  # id(node) -> its node count with aliases expanded

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._alias(event.anchor or "")
        self._count(1)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        if self.depth >= self.limits.max_depth:
            raise _OverBudget(f"nests deeper than {self.limits.max_depth} levels")
        self.depth += 1
        anchor = event.anchor
        if anchor:
            self.open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.discard(anchor or "")

    def _alias(self, anchor: str) -> Node | None:
        if anchor in self.open_anchors:
            raise _OverBudget(f"alias *{anchor} refers to itself")
        node = self.anchors.get(anchor)
        if node is not None:
            size = self._expanded_size(node)
            self.alias_nodes += size
            if self.alias_nodes > self.limits.max_alias_nodes:
                raise _OverBudget(f"aliases expand to more than {self.limits.max_alias_nodes} nodes (an alias bomb?)")
            self._count(size - 1)  # the alias event itself is counted below
        return super().compose_node(None, 0)

    def _count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.max_nodes:
            raise _OverBudget(f"has more than {self.limits.max_nodes} nodes")

    def _expanded_size(self, root: Node) -> int:
        """Nodes under `root` with every alias expanded, memoised (shared nodes are counted once per use)."""
        pending: list[tuple[Node, bool]] = [(root, False)]
        while pending:
            node, children_done = pending.pop()
            if id(node) in self.expanded:
                continue
            children = _children(node)
            if children_done or not children:
                self.expanded[id(node)] = 1 + sum(self.expanded[id(child)] for child in children)
                continue
            pending.append((node, True))
            pending.extend((child, False) for child in children if id(child) not in self.expanded)
        return self.expanded[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(text: str | bytes, where: str, error: type[WsmError], limits: YamlLimits = DOCUMENT) -> Any:
    """One YAML document (None when empty), within `limits`; raise `error` naming `where` and the fault."""
    size = len(text) if isinstance(text, bytes) or len(text) > limits.max_bytes else len(text.encode())
    if size > limits.max_bytes:
        raise error(f"{where}: larger than {human_bytes(limits.max_bytes)}; refusing to read it")
    loader = _BudgetLoader(text, limits)
    try:
        node = loader.get_single_node()
        return None if node is None else loader.construct_document(node)
    except _OverBudget as problem:
        raise error(f"{where}: {problem}; refusing to read it") from None
    except yaml.YAMLError as problem:
        raise error(f"{where}: malformed YAML{describe(problem)}") from None
    except (ValueError, TypeError, OverflowError) as problem:  # a scalar the constructor cannot build (a bad date)
        raise error(f"{where}: malformed YAML ({' '.join(str(problem).split())[:200]})") from None
    finally:
        loader.dispose()


def load_mapping(
    text: str | bytes, where: str, error: type[WsmError], limits: YamlLimits = DOCUMENT
) -> dict[str, Any]:
    """The document as a dict (empty for an empty document); raise `error` naming `where` and the line."""
    data = load_yaml(text, where, error, limits)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping at the top, found {type(data).__name__}")
    return data


def read_document(path: Path, where: str, error: type[WsmError], limits: YamlLimits = DOCUMENT) -> str:
    """A YAML file's text, read no further than the size budget (OSError passes through for the caller)."""
    with open(path, "rb") as handle:
        data = handle.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise error(f"{where}: larger than {human_bytes(limits.max_bytes)}; refusing to read it")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise error(f"{where}: not UTF-8 text") from None


def describe(problem: Exception) -> str:
    """` at line N (what)` for a YAML error of PyYAML or ruamel.yaml, on one line."""
    mark = getattr(problem, "problem_mark", None)
    line = f" at line {mark.line + 1}" if mark is not None else ""
    what = getattr(problem, "problem", None) or str(problem)
    return f"{line} ({' '.join(str(what).split())[:200]})"

