"""Helm's version ranges, values layering and --set, as helm itself reads them."""

import pytest

from wsm import ValuesError
from wsm._values import coalesce, merge, parse_set, sub_values
from wsm._versions import highest_matching

VERSIONS = ["0.9.0", "1.0.0", "1.2.3", "1.2.9", "1.3.0", "1.3.8", "2.0.0", "2.1.0-rc1", "v1.4.0"]


@pytest.mark.parametrize(
    "constraint,expected",
    [
        ("*", "2.0.0"),
        ("^1.2", "v1.4.0"),
        ("~1.2.3", "1.2.9"),
        ("1.2.x", "1.2.9"),
        (">=1.0 <1.3", "1.2.9"),
        (">=1.0, <1.3", "1.2.9"),
        ("1.2 - 1.3.0", "1.3.0"),
        ("1.3.8", "1.3.8"),
        ("<1", "0.9.0"),
        (">1.3.8 <2", "v1.4.0"),
        ("^2.1.0-rc0", "2.1.0-rc1"),
        ("!=1.4.0 ^1", "1.3.8"),
        ("^0.9 || ^2", "2.0.0"),
        ("9.9.9", None),
    ],
)
def test_highest_matching(constraint, expected):
    assert highest_matching(constraint, VERSIONS) == expected


def test_invalid_range_is_an_error():
    with pytest.raises(ValueError):
        highest_matching(">=banana", VERSIONS)


def test_user_layers_merge_later_wins():
    assert merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": 3}, "l": [2]}) == {"a": {"b": 3, "c": 2}, "l": [2]}


def test_coalesce_user_over_defaults_and_null_deletes():
    defaults = {"image": {"repository": "acme/app", "tag": "latest", "pullPolicy": "Always"}, "x": 1}
    user = {"image": {"tag": "1.0", "pullPolicy": None}}
    assert coalesce(user, defaults) == {"image": {"repository": "acme/app", "tag": "1.0"}, "x": 1}


def test_subchart_sees_parent_values_under_its_alias_and_parent_globals():
    parent = {"db": {"image": {"tag": "9"}}, "global": {"imageRegistry": "mirror.corp"}}
    defaults = {"image": {"repository": "bitnami/db", "tag": "8"}, "global": {"imageRegistry": "", "other": 1}}
    assert sub_values(parent, "db", defaults) == {
        "image": {"repository": "bitnami/db", "tag": "9"},
        "global": {"imageRegistry": "mirror.corp", "other": 1},
    }


@pytest.mark.parametrize(
    "expression,expected",
    [
        ("a.b=1", {"a": {"b": 1}}),
        ("a=true,b=false,c=null", {"a": True, "b": False, "c": None}),
        ("tag=1.10", {"tag": "1.10"}),
        ("list[1]=x", {"list": [None, "x"]}),
        ("hosts={a,b}", {"hosts": ["a", "b"]}),
        (r"name=a\,b", {"name": "a,b"}),
        (r"annotations.kubernetes\.io/ingress=nginx", {"annotations": {"kubernetes.io/ingress": "nginx"}}),
        ("containers[0].image=x:1", {"containers": [{"image": "x:1"}]}),
    ],
)
def test_parse_set(expression, expected):
    assert parse_set(expression) == expected


def test_set_string_keeps_strings():
    assert parse_set("a=true,b=12", strings=True) == {"a": "true", "b": "12"}


def test_bad_set_expression():
    with pytest.raises(ValuesError, match="is not key=value"):
        parse_set("novalue")
