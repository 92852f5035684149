"""Body decoding: JSON without NaN, YAML as JSON (timestamps stay strings), Go type checks."""

from __future__ import annotations

import pytest

from kuryr_k8s.sandbox.kubeapi import decode, errors
from kuryr_k8s.sandbox.kubeapi.resources import BUILTINS

pytestmark = pytest.mark.unit
PODS = next(rt for rt in BUILTINS if rt.key == "/pods")


def test_yaml_timestamps_stay_strings_and_keys_become_strings() -> None:
    doc = decode.parse_yaml_or_json(b"a: 2020-01-01T00:00:00Z\n1: one\nb: [1, 2.5, true, null]\n")
    assert doc == {"a": "2020-01-01T00:00:00Z", "1": "one", "b": [1, 2.5, True, None]}


@pytest.mark.parametrize(
    "raw",
    [b"a: !!binary aGk=\n", b"a: .nan\n", b"a: !!set {x}\n", b"a: [\n", b"---\na: 1\n---\nb: 2\n"],
)
def test_yaml_that_json_cannot_carry_is_400(raw: bytes) -> None:
    with pytest.raises(errors.ApiError) as info:
        decode.parse_yaml_or_json(raw)
    assert info.value.code == 400


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b"[", b""])
def test_json_errors_are_400(raw: bytes) -> None:
    with pytest.raises(errors.ApiError) as info:
        decode.parse_json(raw)
    assert info.value.code == 400


def test_shape_checks_and_nulls() -> None:
    body = {"metadata": {"name": "p", "labels": None}, "spec": {"containers": [{"name": "c"}]}}
    assert decode.check_shape(PODS, body) == {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c"}]},
    }
    bad_bodies: list[object] = [
        {"metadata": {"labels": {"a": 1}}},
        {"spec": {"containers": {}}},
        {"spec": {"nodeName": 3}},
        {"metadata": {"finalizers": "x"}},
        "text",
    ]
    for bad in bad_bodies:
        with pytest.raises(errors.ApiError) as info:
            decode.check_shape(PODS, bad)
        assert info.value.code == 400
        assert "cannot be handled as a Pod" in info.value.message
