"""`wsm rewrite`: a stream of Kubernetes manifests with every image the bundle moved pointed at the internal
registry, everything else left byte for byte.

The stream is parsed only to locate references (PyYAML's node marks give each scalar's place in the text);
the output is the input with those exact spans edited, so comments, order, quoting and the `# Source:` lines
helm prints stay as they were. References are looked for where manifests carry them:
- every `image:` string, at any depth and in any kind (containers, initContainers, ephemeralContainers,
  CronJob job templates, custom resources);
- inside `args` and `command` items, `env` values and ConfigMap `data` strings, as words of the string.
A word there counts as a reference when it names a version (a tag or digest) and the mapping knows its name,
or when it is unmistakably one (a registry host, a path and a version): plain words such as `level:info`, or
`busybox` as a command, are left alone.

A reference that is already internal is left as it is, so that the values push wrote and a second pass are
no-ops. One the mapping does not cover is an error (`Uncovered`), listing every such reference: nothing is
written then, so that a pipe into `kubectl apply` applies nothing half-redirected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._exceptions import InvalidReference, WsmError
from ._pushed import PushedImage, PushRecord
from ._reference import Reference, looks_like_reference
from ._yaml import describe

_STRING = "tag:yaml.org,2002:str"
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*[A-Za-z0-9]")
_WORD_CHARACTER = re.compile(r"[A-Za-z0-9._/:@-]")
_COMMAND_KEYS = ("args", "command")
# libyaml's loader, where PyYAML has it, is about 8 times faster; its marks count characters too, as the
# pure-Python one does, so the spans index the decoded text either way.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Uncovered(WsmError):
    """Image references found in the manifests that the mapping does not cover (`references`: each with where)."""

    def __init__(self, references: Sequence[tuple[str, str]]) -> None:
        listed = "; ".join(f"{text} ({where})" for text, where in references)
        super().__init__(f"{len(references)} image reference(s) not in the internal registry's mapping: {listed}")
        self.references = list(references)


@dataclass(frozen=True)
class ImageMap:
    """Which internal name a source reference has: exact references from a push record, or names from a
    mapping file (any tag); references on `internal` hosts (the site registry, the targets') are left alone."""

    pushed: Mapping[str, tuple[PushedImage, ...]] = field(default_factory=dict)  # by source name
    names: Mapping[str, str] = field(default_factory=dict)
    internal: frozenset[str] = frozenset()

    @classmethod
    def from_record(cls, record: PushRecord) -> ImageMap:
        pushed: dict[str, list[PushedImage]] = {}
        for image in record.images:
            pushed.setdefault(image.source.name, []).append(image)
        hosts = frozenset({record.target_registry.host} | {image.target.registry for image in record.images})
        return cls({name: tuple(images) for name, images in pushed.items()}, {}, hosts)

    @classmethod
    def from_names(cls, names: Mapping[str, str]) -> ImageMap:
        return cls({}, dict(names), frozenset(name.split("/", 1)[0] for name in names.values()))

    def is_internal(self, reference: Reference) -> bool:
        return reference.registry in self.internal

    def knows(self, reference: Reference) -> bool:
        return self.is_internal(reference) or reference.name in self.names or reference.name in self.pushed

    def target_for(self, reference: Reference) -> Reference | None:
        """The internal reference (same tag and digest as written), or None when not covered."""
        if reference.name in self.names:
            return _renamed(reference, self.names[reference.name])
        for image in self.pushed.get(reference.name, ()):
            if _same_image(reference, image):
                return _renamed(reference, image.target.name)
        return None


def _renamed(reference: Reference, name: str) -> Reference:
    target = Reference.parse(name + ":x")
    return reference.with_name(target.registry, target.repository)


def _same_image(reference: Reference, image: PushedImage) -> bool:
    if reference.digest:  # a pinned reference names the upstream digest or what the internal tag holds
        return reference.digest in (image.source.digest, image.digest)
    return reference.tag == image.source.tag


class Place(Enum):
    WHOLE = "whole"  # the string is a reference (an `image:` field)
    WORDS = "words"  # references may be words of the string (args, command, env, ConfigMap data)


@dataclass(frozen=True)
class Found:
    """A reference located in the stream: `written` as it stands in the string, inside the scalar at
    `start`..`end` of the text."""

    written: str
    reference: Reference
    where: str
    start: int
    end: int


@dataclass(frozen=True)
class Rewrite:
    text: str
    rewritten: list[tuple[Found, Reference]]
    internal: list[Found]  # already pointing inside

    def summary(self) -> str:
        return (f"{len(self.rewritten)} image reference(s) pointed at the internal registry, "
                f"{len(self.internal)} already there")


def rewrite_manifests(text: str, images: ImageMap) -> Rewrite:
    """`text` with every covered reference pointed inside; raise `Uncovered` listing the others."""
    found = find_references(text, images)
    rewritten: list[tuple[Found, Reference]] = []
    internal: list[Found] = []
    uncovered: list[tuple[str, str]] = []
    for item in found:
        if images.is_internal(item.reference):
            internal.append(item)
            continue
        target = images.target_for(item.reference)
        if target is None:
            uncovered.append((item.written, item.where))
        else:
            rewritten.append((item, target))
    if uncovered:
        raise Uncovered(list(dict.fromkeys(uncovered)))
    return Rewrite(_edit(text, rewritten), rewritten, internal)


def find_references(text: str, images: ImageMap) -> list[Found]:
    """Every image reference in the manifests, in the fields and strings listed in the module's docstring."""
    found: list[Found] = []
    for document in _compose(text):
        if not isinstance(document, MappingNode):
            continue
        label = _label(document)
        for scalar, place, path in _candidates(document, (), _scalar_at(document, "kind") == "ConfigMap"):
            found += _in_scalar(scalar, place, f"{label} {_dotted(path)}", images)
    return found


def _compose(text: str) -> Iterator[Node | None]:
    try:
        yield from yaml.compose_all(text, Loader=_LOADER)
    except yaml.YAMLError as error:
        raise WsmError(f"the manifests are not YAML{describe(error)}") from None


def _candidates(node: Node, path: tuple[str | int, ...], config_map: bool
                ) -> Iterator[tuple[ScalarNode, Place, tuple[str | int, ...]]]:
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _candidates(item, (*path, index), config_map)
        return
    if not isinstance(node, MappingNode):
        return
    for key_node, value in node.value:
        key = key_node.value if isinstance(key_node, ScalarNode) else "?"
        here = (*path, key)
        if key == "image" and _is_string(value):
            yield value, Place.WHOLE, here
        elif key in _COMMAND_KEYS and isinstance(value, SequenceNode):
            yield from ((item, Place.WORDS, (*here, i)) for i, item in enumerate(value.value) if _is_string(item))
        elif key == "env" and isinstance(value, SequenceNode):
            for index, variable in enumerate(value.value):
                scalar = _child(variable, "value")
                if scalar is not None:
                    yield scalar, Place.WORDS, (*here, index, "value")
        elif config_map and path == () and key == "data" and isinstance(value, MappingNode):
            yield from ((item, Place.WORDS, (*here, k.value)) for k, item in value.value if _is_string(item))
        else:
            yield from _candidates(value, here, config_map)


def _in_scalar(scalar: ScalarNode, place: Place, where: str, images: ImageMap) -> list[Found]:
    start, end = scalar.start_mark.index, scalar.end_mark.index
    value: str = scalar.value
    if place is Place.WHOLE:
        written = value.strip()
        return [Found(written, Reference.parse(written), where, start, end)] if looks_like_reference(written) else []
    found = []
    for match in _WORD.finditer(value):
        reference = _word_reference(match.group(), images)
        if reference is not None:
            found.append(Found(match.group(), reference, where, start, end))
    return found


def _word_reference(word: str, images: ImageMap) -> Reference | None:
    """`word` as a reference when it names a version and the mapping knows it, or it cannot be anything else."""
    first, slash, rest = word.partition("/")
    if "@" not in word and ":" not in word.rpartition("/")[2]:
        return None  # no tag or digest: a command, a path, a name
    try:
        reference = Reference.parse(word)
    except InvalidReference:
        return None
    explicit_host = slash and ("." in first or ":" in first or first == "localhost")
    return reference if explicit_host or images.knows(reference) else None


def _edit(text: str, rewritten: Sequence[tuple[Found, Reference]]) -> str:
    """Replace each reference inside its scalar's span; a scalar whose source text does not hold the value
    literally (escapes) is written anew as a double-quoted scalar."""
    by_span: dict[tuple[int, int], list[tuple[Found, Reference]]] = {}
    for item, target in rewritten:
        by_span.setdefault((item.start, item.end), []).append((item, target))
    pieces: list[str] = []
    position = 0
    for (start, end), items in sorted(by_span.items()):
        pieces += [text[position:start], _edited_span(text[start:end], items)]
        position = end
    return "".join(pieces) + text[position:]


def _edited_span(span: str, items: Sequence[tuple[Found, Reference]]) -> str:
    replacements = {item.written: target.canonical for item, target in items}
    edited = span
    for written, replacement in replacements.items():
        edited = _replace_word(edited, written, replacement)
    if all(_replace_word(span, written, "") != span for written in replacements):
        return edited
    value = _unquoted(span)
    for written, replacement in replacements.items():
        value = _replace_word(value, written, replacement)
    return json.dumps(value)


def _replace_word(text: str, word: str, replacement: str) -> str:
    """Every occurrence of `word` in `text` that is a whole word (not part of a longer reference)."""
    pieces: list[str] = []
    position = 0
    for match in re.finditer(re.escape(word), text):
        before = text[match.start() - 1] if match.start() else ""
        after = text[match.end()] if match.end() < len(text) else ""
        if _WORD_CHARACTER.fullmatch(before or " ") or _WORD_CHARACTER.fullmatch(after or " "):
            continue
        pieces += [text[position:match.start()], replacement]
        position = match.end()
    return "".join(pieces) + text[position:]


def _unquoted(span: str) -> str:
    value = yaml.safe_load(span)
    return value if isinstance(value, str) else span


def _is_string(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _STRING


def _child(node: Node, key: str) -> ScalarNode | None:
    if isinstance(node, MappingNode):
        for key_node, value in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key and _is_string(value):
                assert isinstance(value, ScalarNode)
                return value
    return None


def _scalar_at(node: MappingNode, key: str) -> str:
    child = _child(node, key)
    return child.value if child is not None else ""


def _label(document: MappingNode) -> str:
    metadata = next((value for key, value in document.value if isinstance(key, ScalarNode)
                     and key.value == "metadata"), None)
    name = _scalar_at(metadata, "name") if isinstance(metadata, MappingNode) else ""
    return f"{_scalar_at(document, 'kind') or '?'}/{name or '?'}"


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
