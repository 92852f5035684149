"""Label and field selector parsing and matching."""

from __future__ import annotations

import pytest

from kuryr_k8s.sandbox.kubeapi.selectors import (
    Requirement,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
    selector_from_dict,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=b", (Requirement("a", "=", ("b",)),)),
        ("a==b", (Requirement("a", "=", ("b",)),)),
        ("a!=b", (Requirement("a", "!=", ("b",)),)),
        ("a in (x, y)", (Requirement("a", "in", ("x", "y")),)),
        ("a notin (x)", (Requirement("a", "notin", ("x",)),)),
        ("a", (Requirement("a", "exists"),)),
        ("!a", (Requirement("a", "!exists"),)),
        ("a>3", (Requirement("a", "gt", ("3",)),)),
        ("a<3", (Requirement("a", "lt", ("3",)),)),
        ("a=", (Requirement("a", "=", ("",)),)),
        (
            "example.com/role=db,!x",
            (Requirement("example.com/role", "=", ("db",)), Requirement("x", "!exists")),
        ),
        ("  a = b ,  c  ", (Requirement("a", "=", ("b",)), Requirement("c", "exists"))),
    ],
)
def test_parse(text: str, expected: tuple[Requirement, ...]) -> None:
    assert parse_label_selector(text).requirements == expected


@pytest.mark.parametrize(
    "text",
    [
        "a in (x",
        "a in x",
        "=b",
        "a b",
        "a=b,,c",
        "a=b,",
        "a>x",
        "-bad-=x",
        "a=-bad-",
        "a=(x)",
        "!",
        "a in (x))",
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(text)


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a!=b", {}, True),
        ("a!=b", {"a": "b"}, False),
        ("a notin (b)", {}, True),
        ("a in (b,c)", {"a": "c"}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("a>3", {"a": "4"}, True),
        ("a>3", {"a": "x"}, False),
        ("a<3", {"a": "2"}, True),
        ("", {"x": "y"}, True),
    ],
)
def test_match(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(text).matches(labels) is matches


def test_selector_from_dict() -> None:
    sel = selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }
    )
    assert sel.matches({"app": "web"})
    assert not sel.matches({"app": "web", "tier": "db"})
    assert selector_from_dict(None).empty


def test_field_selector() -> None:
    sel = parse_field_selector("spec.nodeName=n1,status.phase!=Failed")
    values = {"spec.nodeName": "n1", "status.phase": "Running"}
    assert sel.matches(values.__getitem__)
    assert not sel.matches({"spec.nodeName": "n1", "status.phase": "Failed"}.__getitem__)
    assert sel.exact("spec.nodeName") == "n1"
    assert sel.exact("status.phase") is None
    assert sel.paths() == {"spec.nodeName", "status.phase"}


def test_field_selector_escapes_and_errors() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b")
    assert sel.requirements[0].value == "a,b"
    assert parse_field_selector("a==b").requirements[0].value == "b"
    for bad in ("novalue", "=x", "a=b,c"):
        with pytest.raises(SelectorError):
            parse_field_selector(bad)
