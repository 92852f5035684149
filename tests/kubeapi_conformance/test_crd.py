"""CustomResourceDefinitions and the custom resources they define."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.kubeapi import KubeClient, resource_path
from kubeapi_conformance.helpers import created, eventually, ok, rv, status_of

Obj = dict[str, Any]
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

WIDGET_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"state": {"type": "string"}}},
    },
}


def _crd(group: str, kind: str, plural: str, scope: str, status: bool) -> Obj:
    version: Obj = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
        "additionalPrinterColumns": [
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
        ],
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [f"{plural[:2]}{group[1:5]}"],
            },
            "versions": [version],
        },
    }


def _established(client: KubeClient, name: str) -> bool:
    resp = client.get(f"{CRDS}/{name}")
    # A new CRD has "conditions": null until it is established (recorded: every CRD POST of
    # the conformance recording), so the key may be there with None.
    conds = {
        c["type"]: c["status"] for c in (resp.json().get("status") or {}).get("conditions") or []
    }
    return conds.get("Established") == "True"


def _install(client: KubeClient, crd: Obj) -> Obj:
    obj = created(client.post(CRDS, crd))
    name = crd["metadata"]["name"]
    eventually(lambda: _established(client, name), 60, f"CRD {name} established")
    group = crd["spec"]["group"]
    eventually(lambda: client.get(f"/apis/{group}/v1").status_code == 200, 60, "discovery")
    return obj


@pytest.fixture(scope="module")
def group(kube_client: KubeClient) -> Iterator[str]:
    name = f"t{secrets.token_hex(4)}.conformance.kuryr.openstack.org"
    crds = [
        _crd(name, "Widget", "widgets", "Namespaced", True),
        _crd(name, "Gadget", "gadgets", "Cluster", False),
    ]
    for crd in crds:
        _install(kube_client, crd)
    yield name
    for crd in crds:
        kube_client.delete(f"{CRDS}/{crd['metadata']['name']}")


def _widgets(group: str, ns: str, name: str = "", sub: str = "") -> str:
    return resource_path(group, "v1", "widgets", ns, name, sub)


def _widget(group: str, name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 1, **spec},
    }


def _create_when_served(client: KubeClient, path: str, body: Obj) -> Obj:
    deadline = time.monotonic() + 30
    while True:
        resp = client.post(path, body)
        if resp.status_code != 404 or time.monotonic() > deadline:
            return created(resp)
        time.sleep(0.2)


def test_discovery_lists_custom_resources(kube_client: KubeClient, group: str) -> None:
    res = {r["name"]: r for r in ok(kube_client.get(f"/apis/{group}/v1"))["resources"]}
    assert res["widgets"]["namespaced"] is True
    assert res["widgets"]["kind"] == "Widget"
    assert "widgets/status" in res
    assert res["gadgets"]["namespaced"] is False
    assert "gadgets/status" not in res
    groups = [g["name"] for g in ok(kube_client.get("/apis"))["groups"]]
    assert group in groups


def test_crd_status_and_names(kube_client: KubeClient, group: str) -> None:
    crd = ok(kube_client.get(f"{CRDS}/widgets.{group}"))
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"
    assert crd["spec"]["names"]["listKind"] == "WidgetList"


def test_namespaced_custom_resource(kube_client: KubeClient, group: str, ns: str) -> None:
    obj = _create_when_served(kube_client, _widgets(group, ns), _widget(group, "w1"))
    assert obj["metadata"]["generation"] == 1
    assert obj["apiVersion"] == f"{group}/v1"
    listed = ok(kube_client.get(_widgets(group, ns)))
    assert listed["kind"] == "WidgetList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    status_of(kube_client.post(_widgets(group, ns), _widget(group, "w1")), 409, "AlreadyExists")
    body = status_of(kube_client.get(_widgets(group, ns, "nope")), 404, "NotFound")
    assert body["details"]["group"] == group


def test_cluster_scoped_custom_resource(kube_client: KubeClient, group: str) -> None:
    path = resource_path(group, "v1", "gadgets")
    name = f"g-{secrets.token_hex(3)}"
    body = {
        "apiVersion": f"{group}/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": {"size": 2},
    }
    obj = _create_when_served(kube_client, path, body)
    assert "namespace" not in obj["metadata"]
    obj["spec"]["size"] = 3
    obj["status"] = {"state": "kept, no status subresource"}
    out = ok(kube_client.put(f"{path}/{name}", obj))
    assert out["metadata"]["generation"] == 2
    assert out["status"]["state"] == "kept, no status subresource"
    assert kube_client.delete(f"{path}/{name}").status_code == 200
    assert kube_client.wait_gone(f"{path}/{name}", 30)


def test_status_subresource_and_generation(kube_client: KubeClient, group: str, ns: str) -> None:
    body = _widget(group, "gen")
    body["status"] = {"state": "ignored on create"}
    obj = _create_when_served(kube_client, _widgets(group, ns), body)
    assert "status" not in obj
    with_status = ok(
        kube_client.patch(_widgets(group, ns, "gen", "status"), {"status": {"state": "Ready"}})
    )
    assert with_status["status"]["state"] == "Ready"
    assert with_status["metadata"]["generation"] == 1
    labelled = ok(
        kube_client.patch(_widgets(group, ns, "gen"), {"metadata": {"labels": {"a": "b"}}})
    )
    assert labelled["metadata"]["generation"] == 1
    resized = ok(
        kube_client.patch(
            _widgets(group, ns, "gen"), {"spec": {"size": 5}, "status": {"state": "ignored"}}
        )
    )
    assert resized["metadata"]["generation"] == 2
    assert resized["status"]["state"] == "Ready"
    assert rv(resized) > rv(labelled) > rv(with_status)


def test_schema_validation(kube_client: KubeClient, group: str, ns: str) -> None:
    path = _widgets(group, ns)
    _create_when_served(kube_client, path, _widget(group, "valid"))
    bad = _widget(group, "wrong-type")
    bad["spec"]["size"] = "big"
    body = status_of(kube_client.post(path, bad), 422, "Invalid")
    assert any(c["field"] == "spec.size" for c in body["details"]["causes"])
    missing = _widget(group, "missing")
    del missing["spec"]["size"]
    body = status_of(kube_client.post(path, missing), 422, "Invalid")
    assert any(
        c["field"] == "spec.size" and c["reason"] == "FieldValueRequired"
        for c in body["details"]["causes"]
    )
    status_of(kube_client.post(path, _widget(group, "enum", color="green")), 422, "Invalid")
    status_of(kube_client.post(path, _widget(group, "small", size=0)), 422, "Invalid")
    wrong_spec = _widget(group, "spec-not-object")
    wrong_spec["spec"] = ["a"]
    assert kube_client.post(path, wrong_spec).status_code in (400, 422)


def test_unknown_fields_are_pruned(kube_client: KubeClient, group: str, ns: str) -> None:
    body = _widget(group, "pruned", free={"anything": {"goes": 1}})
    body["spec"]["unknown"] = "dropped"
    body["extra"] = "dropped"
    obj = _create_when_served(kube_client, _widgets(group, ns), body)
    assert "unknown" not in obj["spec"]
    assert "extra" not in obj
    assert obj["spec"]["free"] == {"anything": {"goes": 1}}
    strict = _widget(group, "strict")
    strict["spec"]["unknown"] = "x"
    resp = kube_client.post(_widgets(group, ns), strict, params={"fieldValidation": "Strict"})
    status_of(resp, 400, "BadRequest")


def test_update_requires_resource_version(kube_client: KubeClient, group: str, ns: str) -> None:
    obj = _create_when_served(kube_client, _widgets(group, ns), _widget(group, "occ"))
    del obj["metadata"]["resourceVersion"]
    status_of(kube_client.put(_widgets(group, ns, "occ"), obj), 422, "Invalid")


def test_strategic_merge_patch_is_unsupported(kube_client: KubeClient, group: str, ns: str) -> None:
    _create_when_served(kube_client, _widgets(group, ns), _widget(group, "smp"))
    resp = kube_client.patch(_widgets(group, ns, "smp"), {"spec": {"size": 2}}, "strategic")
    status_of(resp, 415, "UnsupportedMediaType")


def test_table_output(kube_client: KubeClient, group: str, ns: str) -> None:
    _create_when_served(kube_client, _widgets(group, ns), _widget(group, "tab", size=7))
    ok(kube_client.patch(_widgets(group, ns, "tab", "status"), {"status": {"state": "Up"}}))
    table = ok(kube_client.get(_widgets(group, ns), headers={"Accept": TABLE}))
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:3] == ["Name", "Size", "State"]
    row = next(r for r in table["rows"] if r["cells"][0] == "tab")
    assert row["cells"][1:3] == [7, "Up"]
    assert row["object"]["metadata"]["name"] == "tab"


def test_deleting_crd_removes_resources(kube_client: KubeClient, ns: str) -> None:
    group = f"t{secrets.token_hex(4)}.conformance.kuryr.openstack.org"
    crd = _crd(group, "Widget", "widgets", "Namespaced", True)
    _install(kube_client, crd)
    _create_when_served(kube_client, _widgets(group, ns), _widget(group, "doomed"))
    kube_client.delete(f"{CRDS}/widgets.{group}")
    assert kube_client.wait_gone(f"{CRDS}/widgets.{group}", 120)
    eventually(
        lambda: kube_client.get(_widgets(group, ns)).status_code == 404,
        60,
        "resource no longer served",
    )


def test_invalid_crd_is_rejected(kube_client: KubeClient) -> None:
    crd = _crd("bad.conformance.kuryr.openstack.org", "Thing", "things", "Namespaced", False)
    crd["metadata"]["name"] = "wrong-name.conformance.kuryr.openstack.org"
    status_of(kube_client.post(CRDS, crd), 422, "Invalid")


def test_terminating_crd_refuses_new_resources(kube_client: KubeClient, ns: str) -> None:
    group = f"t{secrets.token_hex(4)}.conformance.kuryr.openstack.org"
    _install(kube_client, _crd(group, "Widget", "widgets", "Namespaced", True))
    held = _widget(group, "held")
    held["metadata"]["finalizers"] = ["conformance.kuryr.openstack.org/hold"]
    _create_when_served(kube_client, _widgets(group, ns), held)
    kube_client.delete(f"{CRDS}/widgets.{group}")
    try:

        def terminating() -> bool:
            widget = kube_client.get(_widgets(group, ns, "held")).json()
            return bool(widget["metadata"].get("deletionTimestamp"))

        eventually(terminating, 60, "instances deleted by the CRD cleanup")
        resp = kube_client.post(_widgets(group, ns), _widget(group, "late"))
        # recorded: conformance, test_terminating_crd_refuses_new_resources (403 Forbidden)
        body = status_of(resp, 403, "Forbidden")
        assert (
            "create not allowed while custom resource definition is terminating"
            in (body["message"])
        )
    finally:
        kube_client.patch(_widgets(group, ns, "held"), {"metadata": {"finalizers": None}})
    assert kube_client.wait_gone(f"{CRDS}/widgets.{group}", 120)


def test_protected_groups_need_approval(kube_client: KubeClient) -> None:
    crd = _crd("conformance.k8s.io", "Thing", "things", "Namespaced", False)
    resp = kube_client.post(CRDS, crd)
    if resp.status_code == 201:
        kube_client.delete(f"{CRDS}/things.conformance.k8s.io")
    body = status_of(resp, 422, "Invalid")
    assert "api-approved.kubernetes.io" in body["message"]


def test_served_versions_without_conversion(kube_client: KubeClient, ns: str) -> None:
    group = f"t{secrets.token_hex(4)}.conformance.kuryr.openstack.org"
    crd = _crd(group, "Widget", "widgets", "Namespaced", True)
    beta = dict(crd["spec"]["versions"][0], name="v1beta1", storage=False)
    crd["spec"]["versions"].append(beta)
    _install(kube_client, crd)
    try:
        path = resource_path(group, "v1beta1", "widgets", ns)
        body = dict(_widget(group, "multi"), apiVersion=f"{group}/v1beta1")
        assert _create_when_served(kube_client, path, body)["apiVersion"] == f"{group}/v1beta1"
        as_v1 = ok(kube_client.get(_widgets(group, ns, "multi")))
        assert as_v1["apiVersion"] == f"{group}/v1"
        assert as_v1["spec"]["size"] == 1
        listed = ok(kube_client.get(path))
        assert listed["apiVersion"] == f"{group}/v1beta1"
        assert listed["items"][0]["apiVersion"] == f"{group}/v1beta1"
    finally:
        kube_client.delete(f"{CRDS}/widgets.{group}")
