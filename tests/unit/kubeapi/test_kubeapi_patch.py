"""Merge patch, JSON patch and strategic merge patch."""

from __future__ import annotations

from typing import Any

import pytest

from kuryr_k8s.sandbox.kubeapi.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

pytestmark = pytest.mark.unit


def test_merge_patch_rfc7386_examples() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch({"a": "b"}, {"a": {"c": None}}) == {"a": {}}
    assert merge_patch(target, {}) == target
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}, "input must not be mutated"


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "x": 1}
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "replace", "path": "/x", "value": 2},
        {"op": "copy", "from": "/x", "path": "/y"},
        {"op": "move", "from": "/y", "path": "/z"},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "test", "path": "/z", "value": 2},
        {"op": "add", "path": "/k~1e~0y", "value": True},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [9, 2, 3]}, "x": 2, "z": 2, "k/e~y": True}
    assert doc == {"a": {"b": [1, 2]}, "x": 1}


@pytest.mark.parametrize(
    ("ops", "unprocessable"),
    [
        ([{"op": "test", "path": "/x", "value": 2}], True),
        ([{"op": "remove", "path": "/nope"}], True),
        ([{"op": "replace", "path": "/nope", "value": 1}], True),
        ([{"op": "add", "path": "/a/5", "value": 1}], True),
        ([{"op": "frob", "path": "/x"}], False),
        ([{"op": "add", "path": "x", "value": 1}], False),
        ([{"op": "add", "value": 1}], False),
        ([{"op": "add", "path": "/x"}], False),
        ({"op": "add"}, False),
        (["not an op"], False),
    ],
)
def test_json_patch_errors(ops: Any, unprocessable: bool) -> None:
    with pytest.raises(PatchError) as info:
        json_patch({"x": 1, "a": []}, ops)
    assert info.value.unprocessable is unprocessable


def _pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": list(containers)}}


def test_smp_merges_containers_by_name() -> None:
    pod = _pod(
        {"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]},
        {"name": "b", "image": "y:1"},
    )
    out = strategic_merge_patch(
        pod,
        {
            "spec": {
                "containers": [
                    {"name": "a", "env": [{"name": "F", "value": "2"}]},
                    {"name": "c", "image": "z:1"},
                ]
            }
        },
    )
    # apimachinery's normalizeElementOrder: patch items in patch order, interleaved with
    # the live-only ones by live position, a new item first (the real server put a new
    # pod condition and a new finalizer first: ../shared/k8s-real recordings).
    assert [c["name"] for c in out["spec"]["containers"]] == ["a", "c", "b"]
    assert out["spec"]["containers"][0]["env"] == [
        {"name": "F", "value": "2"},
        {"name": "E", "value": "1"},
    ]
    assert out["spec"]["containers"][0]["image"] == "x:1"


def test_smp_delete_and_replace_directives() -> None:
    pod = _pod({"name": "a", "image": "x"}, {"name": "b", "image": "y"})
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["b"]
    out = strategic_merge_patch(
        pod, {"spec": {"containers": [{"name": "n", "image": "z"}, {"$patch": "replace"}]}}
    )
    assert out["spec"]["containers"] == [{"name": "n", "image": "z"}]
    out = strategic_merge_patch(pod, {"spec": {"$patch": "replace", "containers": []}})
    assert out["spec"] == {"containers": []}


def test_smp_set_element_order_and_primitive_lists() -> None:
    pod = _pod({"name": "a", "image": "x"}, {"name": "b", "image": "y"})
    pod["metadata"]["finalizers"] = ["f1", "f2"]
    out = strategic_merge_patch(
        pod,
        {
            "metadata": {"finalizers": ["f3", "f1"], "$deleteFromPrimitiveList/finalizers": ["f2"]},
            "spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "image": "x2"}],
            },
        },
    )
    assert out["metadata"]["finalizers"] == ["f3", "f1"]  # the patch's order
    assert [(c["name"], c["image"]) for c in out["spec"]["containers"]] == [("b", "y"), ("a", "x2")]


def test_smp_replaces_lists_without_strategy_and_deletes_nulls() -> None:
    pod = _pod({"name": "a", "image": "x", "command": ["sleep", "1"]})
    pod["metadata"]["labels"] = {"k": "v", "gone": "soon"}
    out = strategic_merge_patch(
        pod,
        {
            "metadata": {"labels": {"gone": None}},
            "spec": {"containers": [{"name": "a", "command": ["true"]}]},
        },
    )
    assert out["metadata"]["labels"] == {"k": "v"}
    assert out["spec"]["containers"][0]["command"] == ["true"]


def test_smp_conditions_by_type_and_retain_keys() -> None:
    obj = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"},
            ]
        },
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"x": 1}}},
    }
    out = strategic_merge_patch(
        obj,
        {
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
        },
    )
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "PodScheduled", "status": "True"},
    ]
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_errors() -> None:
    with pytest.raises(PatchError):
        strategic_merge_patch({}, ["not", "an", "object"])
    with pytest.raises(PatchError):
        strategic_merge_patch(_pod({"name": "a"}), {"spec": {"containers": [{"image": "x"}]}})
