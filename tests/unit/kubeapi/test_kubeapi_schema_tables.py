"""CRD schema pruning/validation, printer helpers, URL parsing, name rules."""

from __future__ import annotations

from typing import Any

import pytest

from kuryr_k8s.sandbox.kubeapi import errors, routing, schema
from kuryr_k8s.sandbox.kubeapi import validation_names as names
from kuryr_k8s.sandbox.kubeapi.tables import human_duration, jsonpath_first

pytestmark = pytest.mark.unit

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "items": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                "ios": {"x-kubernetes-int-or-string": True},
            },
        },
    },
}


def test_prune_keeps_known_and_preserved_fields() -> None:
    obj = {
        "apiVersion": "x/v1",
        "kind": "K",
        "metadata": {"name": "n", "odd": 1},
        "spec": {"size": 2, "junk": 1, "free": {"deep": {"x": 1}}, "map": {"a": 1}},
        "top": "level",
    }
    pruned, dropped = schema.prune(obj, SCHEMA)
    assert pruned == {
        "apiVersion": "x/v1",
        "kind": "K",
        "metadata": {"name": "n", "odd": 1},
        "spec": {"size": 2, "free": {"deep": {"x": 1}}, "map": {"a": 1}},
    }
    assert sorted(dropped) == ["spec.junk", "top"]


def test_defaults() -> None:
    assert schema.apply_defaults({"spec": {}}, SCHEMA) == {"spec": {"size": 1, "mode": "a"}}


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"size": "x"}, "spec.size", "FieldValueTypeInvalid"),
        ({"size": True}, "spec.size", "FieldValueTypeInvalid"),
        ({}, "spec.size", "FieldValueRequired"),
        ({"size": 0}, "spec.size", "FieldValueInvalid"),
        ({"size": 1, "mode": "c"}, "spec.mode", "FieldValueNotSupported"),
        ({"size": 1, "name": "ABC"}, "spec.name", "FieldValueInvalid"),
        ({"size": 1, "name": "abcdef"}, "spec.name", "FieldValueTooLong"),
        ({"size": 1, "items": ["a", "b", "c"]}, "spec.items", "FieldValueTooMany"),
        ({"size": 1, "items": [1]}, "spec.items[0]", "FieldValueTypeInvalid"),
        ({"size": 1, "map": {"k": "v"}}, "spec.map.k", "FieldValueTypeInvalid"),
        ({"size": 1, "ios": 1.5}, "spec.ios", "FieldValueTypeInvalid"),
    ],
)
def test_validate_errors(spec: dict[str, Any], field: str, reason: str) -> None:
    causes = schema.validate({"spec": spec}, SCHEMA)
    assert (field, reason) in [(c.field, c.reason) for c in causes]


def test_validate_ok_and_top_level_type() -> None:
    ok = {"spec": {"size": 3, "ios": "50%", "free": {"x": [1]}, "map": {"a": 2}}}
    assert schema.validate(ok, SCHEMA) == []
    assert [c.field for c in schema.validate({"spec": "text"}, SCHEMA)] == ["spec"]


def test_structural_check() -> None:
    assert schema.check_structural({"type": "object", "properties": {"a": {}}}, "s") == [
        errors.required("s.properties[a].type")
    ]
    assert schema.check_structural({"type": "object"}, "s") == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_jsonpath_first() -> None:
    obj = {
        "status": {
            "vifs": {"eth0": {"ip": "1.2.3.4"}},
            "list": [{"a": 1}, {"a": 2}],
            "dotted.key": "d",
        }
    }
    assert jsonpath_first(obj, ".status.vifs.eth0.ip") == "1.2.3.4"
    assert jsonpath_first(obj, "{.status.list[1].a}") == 2
    assert jsonpath_first(obj, ".status.list[*].a") == 1
    assert jsonpath_first(obj, ".status['dotted.key']") == "d"
    assert jsonpath_first(obj, ".status.missing") is None
    assert jsonpath_first(obj, ".status.list[7]") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api", routing.DiscoveryTarget("", None)),
        ("/apis", routing.DiscoveryTarget(None, None)),
        ("/apis/g.io", routing.DiscoveryTarget("g.io", None)),
        ("/apis/g.io/v1", routing.DiscoveryTarget("g.io", "v1")),
        ("/api/v1/pods", routing.Target("", "v1", "pods")),
        (
            "/api/v1/namespaces/ns/pods/p/status",
            routing.Target("", "v1", "pods", "ns", "p", "status"),
        ),
        ("/api/v1/namespaces/ns", routing.Target("", "v1", "namespaces", None, "ns")),
        (
            "/api/v1/namespaces/ns/finalize",
            routing.Target("", "v1", "namespaces", None, "ns", "finalize"),
        ),
        (
            "/api/v1/watch/namespaces/ns/pods",
            routing.Target("", "v1", "pods", "ns", watch_path=True),
        ),
        ("/apis/g.io/v1/namespaces/ns/things/t", routing.Target("g.io", "v1", "things", "ns", "t")),
    ],
)
def test_routing(path: str, expected: object) -> None:
    assert routing.parse(path) == expected


@pytest.mark.parametrize("path", ["/", "/foo", "/api/v1/a/b/c/d", "/api/v1/namespaces/n/p/a/b/c"])
def test_routing_errors(path: str) -> None:
    with pytest.raises(errors.ApiError):
        routing.parse(path)


def test_name_rules() -> None:
    assert names.dns1123_subdomain_error("a.b-c") == ""
    assert names.dns1123_subdomain_error("A") != ""
    assert names.dns1123_label_error("a.b") != ""
    assert names.dns1035_label_error("1a") != ""
    assert names.label_key_error("example.com/Name_1") == ""
    assert names.label_key_error("/x") != ""
    assert names.label_key_error("a/b/c") != ""
    assert names.label_value_error("") == ""
    assert names.label_value_error("_x") != ""
    assert names.path_segment_error("..") != ""
