"""Property-based tests (hypothesis) of the parsers that meet upstream content: image references, YAML within its
budget, the values walk and merge, chart archives, and name validation. Bounded to run in a few seconds."""

from __future__ import annotations

import io
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import chart_tgz
from wsm import WsmError
from wsm._archive import read_tgz
from wsm._chart import Chart, chart_from_archive
from wsm._discover import images_in_values
from wsm._limits import MAX_YAML_NODES
from wsm._names import chart_name, chart_version, file_name, namespace, release_name
from wsm._reference import Reference
from wsm._values import coalesce, merge
from wsm._yaml import YamlLimits, load_yaml

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_COMPONENT = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)
_REFERENCE_PARTS = st.tuples(
    st.one_of(st.none(), st.sampled_from(["docker.io", "quay.io", "registry.local:5000", "localhost", "[::1]:5000"])),
    st.lists(_COMPONENT, min_size=1, max_size=3),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    st.one_of(st.none(), st.from_regex(r"[a-f0-9]{64}", fullmatch=True)),
)


@FAST
@given(_REFERENCE_PARTS)
def test_valid_references_round_trip(parts):
    registry, path, tag, digest = parts
    text = (f"{registry}/" if registry else "") + "/".join(path)
    text += (f":{tag}" if tag else "") + (f"@sha256:{digest}" if digest else "")
    reference = Reference.parse(text)
    assert Reference.parse(reference.canonical) == reference
    assert Reference.parse(reference.familiar) == reference
    assert reference.canonical.endswith((f":{tag}" if tag and not digest else "") + (f"@sha256:{digest}" if digest else ""))


@FAST
@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_in_our_terms(text):
    try:
        reference = Reference.parse(text)
    except WsmError:
        return
    assert Reference.parse(reference.canonical) == reference


_YAML_PIECES = st.sampled_from(["a", ":", " ", "\n", "- ", "&x ", "*x", "[", "]", "{", "}", ",", "!!binary ", "<<: ",
                                "'", '"', "2020-13-40", "? ", "---", "|", ">", "#", "1" * 5, "\t", "&y ", "*y"])
_SMALL = YamlLimits(max_bytes=4096, max_nodes=300, max_depth=8, max_alias_nodes=100)


@FAST
@given(st.one_of(st.text(max_size=200), st.lists(_YAML_PIECES, max_size=60).map("".join)))
def test_yaml_loads_or_fails_in_one_line_within_budget(text):
    try:
        data = load_yaml(text, "fuzz.yaml", WsmError, _SMALL)
    except WsmError as error:
        assert "\n" not in str(error) and str(error).startswith("fuzz.yaml: ")
        return
    assert _nodes(data) <= _SMALL.max_nodes and _depth(data) <= _SMALL.max_depth + 1


@FAST
@given(st.integers(min_value=2, max_value=12), st.integers(min_value=2, max_value=12))
def test_alias_towers_stay_within_the_budget(width, levels):
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    try:
        data = load_yaml("\n".join(lines), "tower.yaml", WsmError)
    except WsmError as error:
        assert "alias bomb" in str(error) or "nodes" in str(error)
        return
    assert _nodes(data) <= MAX_YAML_NODES


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30),
                     st.sampled_from(["nginx:1.25", "Example/Up:1", "redis@sha256:12", "quay.io/a/b:v1"]))
_KEYS = st.one_of(st.sampled_from(["image", "repository", "tag", "digest", "registry", "enabled", "global",
                                   "imageRegistry", "sidecarImage", "name"]), st.text(max_size=8))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_KEYS, inner, max_size=5)), max_leaves=40)


@FAST
@given(st.dictionaries(_KEYS, _VALUES, max_size=6), st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_values_merge_coalesce_and_walk(user, defaults):
    merged = merge(defaults, user)
    for key, value in user.items():
        if not (isinstance(value, dict) and isinstance(defaults.get(key), dict)):
            assert merged[key] == value
    coalesced = coalesce(user, defaults)
    assert all(key in coalesced for key, value in user.items() if value is not None)
    chart = Chart(metadata={"name": "fuzz", "version": "1.0.0", "appVersion": "2.0"}, values=defaults)
    try:
        discovered = images_in_values(coalesced, chart, "fuzz", "", {"global"})
    except WsmError:
        return
    assert all(found.source.path for found in discovered.found)
    assert all(invalid.reason for invalid in discovered.invalid)


def test_shared_aliases_are_copied_apart_by_merge():
    data = load_yaml("a: &x {p: 1}\nb: *x\n", "shared.yaml", WsmError)
    merged = merge(data, {"a": {"q": 2}})
    assert merged == {"a": {"p": 1, "q": 2}, "b": {"p": 1}}


_CHART = chart_tgz("fuzz", "image: {repository: nginx, tag: '1'}\n", subcharts={"sub.tgz": chart_tgz("sub")})


@FAST
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(_CHART) - 1), st.integers(0, 255)), max_size=8),
       st.integers(min_value=0, max_value=len(_CHART)))
def test_mutated_archives_give_a_chart_or_our_error(flips, cut):
    data = bytearray(_CHART[:cut] if cut > 10 else _CHART)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    try:
        chart = chart_from_archive(bytes(data), "fuzz.tgz")
    except WsmError as error:
        assert "\n" not in str(error)
        return
    assert chart.name and chart.version


@FAST
@given(st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=50)), max_size=5))
def test_random_tar_members(members):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name or "x")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    try:
        files = read_tgz(raw.getvalue(), "random.tgz")
    except WsmError:
        return
    assert all(not path.startswith(("/", "../")) and path != ".." for path in files)


@FAST
@given(st.text(max_size=300))
def test_names_are_accepted_only_when_safe(text):
    for validator in (chart_name, chart_version, release_name, namespace, file_name):
        try:
            name = validator(text, "fuzz", WsmError)
        except WsmError as error:
            assert "\n" not in str(error)
            continue
        assert name == text and "/" not in name and name not in (".", "..") and not name.startswith("-")
        assert all(c.isascii() and (c.isalnum() or c in "._-+") for c in name)


def _nodes(data: object) -> int:
    pending, count = [data], 0
    while pending:
        node = pending.pop()
        count += 1
        if isinstance(node, dict):
            pending += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            pending += node
    return count


def _depth(data: object) -> int:
    pending, deepest = [(data, 0)], 0
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        pending += [(child, depth + 1) for child in children]
    return deepest
