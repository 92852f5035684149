"""Deletion: finalizers, deletionTimestamp, garbage collection, namespaces, pod binding."""

from __future__ import annotations

from typing import Any

from fixtures.kubeapi import KubeClient, create_namespace, unique_name
from kubeapi_conformance.helpers import (
    cm_path,
    configmap,
    created,
    eventually,
    make_cm,
    ok,
    pod,
    pods_path,
    rv,
    status_of,
)

Obj = dict[str, Any]
FIN = "conformance.kuryr.openstack.org/hold"


def _owner_ref(owner: Obj, **extra: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        **extra,
    }


def test_delete_returns_and_removes(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(pods_path(ns), pod("del")))
    resp = kube_client.delete(pods_path(ns, "del"))
    assert resp.status_code in (200, 202)
    assert kube_client.wait_gone(pods_path(ns, "del"), 30)
    status_of(kube_client.delete(pods_path(ns, "del")), 404, "NotFound")


def test_finalizers_hold_deletion(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(cm_path(ns), configmap("held", finalizers=[FIN])))
    first = ok(kube_client.delete(cm_path(ns, "held")))
    assert first["metadata"]["deletionTimestamp"]
    assert rv(first) > rv(obj)
    still = ok(kube_client.get(cm_path(ns, "held")))
    assert still["metadata"]["deletionTimestamp"] == first["metadata"]["deletionTimestamp"]
    again = ok(kube_client.delete(cm_path(ns, "held")))
    assert again["metadata"]["deletionTimestamp"] == first["metadata"]["deletionTimestamp"]
    # No new finalizers on a terminating object.
    more = {"metadata": {"finalizers": [FIN, "conformance.kuryr.openstack.org/more"]}}
    status_of(kube_client.patch(cm_path(ns, "held"), more), 422, "Invalid")
    # Updates still work while terminating.
    ok(kube_client.patch(cm_path(ns, "held"), {"data": {"during": "deletion"}}))
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]
    ok(kube_client.patch(cm_path(ns, "held"), {"metadata": {"finalizers": None}}))
    status_of(kube_client.get(cm_path(ns, "held")), 404, "NotFound")
    events = list(kube_client.watch(cm_path(ns), {"resourceVersion": start, "timeoutSeconds": 1}))
    kinds = [e["type"] for e in events if e["object"]["metadata"]["name"] == "held"]
    assert kinds[-1] == "DELETED"


def test_delete_preconditions(kube_client: KubeClient, ns: str) -> None:
    obj = make_cm(kube_client, ns)
    name = obj["metadata"]["name"]
    wrong = {"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}}
    status_of(kube_client.delete(cm_path(ns, name), wrong), 409, "Conflict")
    right = {
        "preconditions": {
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
        }
    }
    assert kube_client.delete(cm_path(ns, name), right).status_code == 200


def test_background_garbage_collection(kube_client: KubeClient, ns: str) -> None:
    owner = make_cm(kube_client, ns, "owner")
    dep = make_cm(kube_client, ns, "dep", ownerReferences=[_owner_ref(owner)])
    assert ok(kube_client.delete(cm_path(ns, owner["metadata"]["name"]))).get("kind")
    assert kube_client.wait_gone(cm_path(ns, dep["metadata"]["name"]), 60)


def test_dangling_owner_is_collected(kube_client: KubeClient, ns: str) -> None:
    ghost = {"metadata": {"name": "ghost", "uid": "6d5f2f6e-1111-4111-8111-000000000000"}}
    dep = make_cm(kube_client, ns, "orphaned", ownerReferences=[_owner_ref(ghost)])
    assert kube_client.wait_gone(cm_path(ns, dep["metadata"]["name"]), 60)


def test_orphan_propagation(kube_client: KubeClient, ns: str) -> None:
    owner = make_cm(kube_client, ns, "owner")
    dep = make_cm(kube_client, ns, "dep", ownerReferences=[_owner_ref(owner)])
    kube_client.delete(cm_path(ns, owner["metadata"]["name"]), {"propagationPolicy": "Orphan"})
    assert kube_client.wait_gone(cm_path(ns, owner["metadata"]["name"]), 60)
    kept = ok(kube_client.get(cm_path(ns, dep["metadata"]["name"])))
    assert not kept["metadata"].get("ownerReferences")


def test_foreground_propagation(kube_client: KubeClient, ns: str) -> None:
    owner = make_cm(kube_client, ns, "owner")
    dep = make_cm(
        kube_client,
        ns,
        "dep",
        finalizers=[FIN],
        ownerReferences=[_owner_ref(owner, blockOwnerDeletion=True)],
    )
    owner_path = cm_path(ns, owner["metadata"]["name"])
    dep_path = cm_path(ns, dep["metadata"]["name"])
    out = ok(kube_client.delete(owner_path, {"propagationPolicy": "Foreground"}))
    assert "foregroundDeletion" in out["metadata"]["finalizers"]
    eventually(
        lambda: bool(ok(kube_client.get(dep_path))["metadata"].get("deletionTimestamp")),
        60,
        "dependent marked for deletion",
    )
    assert ok(kube_client.get(owner_path))["metadata"]["deletionTimestamp"]
    ok(kube_client.patch(dep_path, {"metadata": {"finalizers": None}}))
    assert kube_client.wait_gone(dep_path, 60)
    assert kube_client.wait_gone(owner_path, 60)


def test_namespace_termination(kube_client: KubeClient) -> None:
    name = create_namespace(kube_client, "kuryr-term")
    ns_path = f"/api/v1/namespaces/{name}"
    assert ok(kube_client.get(ns_path))["spec"]["finalizers"] == ["kubernetes"]
    created(kube_client.post(cm_path(name), configmap("blocker", finalizers=[FIN])))
    created(kube_client.post(cm_path(name), configmap("plain")))
    out = ok(kube_client.delete(ns_path))
    assert out["status"]["phase"] == "Terminating"
    assert out["metadata"]["deletionTimestamp"]
    assert kube_client.wait_gone(cm_path(name, "plain"), 60)
    eventually(
        lambda: bool(
            ok(kube_client.get(cm_path(name, "blocker")))["metadata"].get("deletionTimestamp")
        ),
        60,
        "blocker marked for deletion",
    )
    resp = kube_client.post(cm_path(name), configmap("late"))
    status_of(resp, 403, "Forbidden")
    assert ok(kube_client.get(ns_path))["status"]["phase"] == "Terminating"
    ok(kube_client.patch(cm_path(name, "blocker"), {"metadata": {"finalizers": None}}))
    assert kube_client.wait_gone(ns_path, 120)


def test_binding_assigns_node(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(pods_path(ns), pod("bind-me")))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "bind-me"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-that-is-not-there"},
    }
    resp = kube_client.post(pods_path(ns, "bind-me", "binding"), binding)
    assert resp.status_code == 201, resp.text
    bound = ok(kube_client.get(pods_path(ns, "bind-me")))
    assert bound["spec"]["nodeName"] == "node-that-is-not-there"
    conditions = {c["type"]: c["status"] for c in bound["status"].get("conditions", [])}
    assert conditions.get("PodScheduled") == "True"
    again = kube_client.post(pods_path(ns, "bind-me", "binding"), binding)
    status_of(again, 409, "Conflict")
    missing = dict(binding, metadata={"name": "nobody"})
    status_of(kube_client.post(pods_path(ns, "nobody", "binding"), missing), 404, "NotFound")
    # No kubelet will ever finish a graceful deletion on that node.
    kube_client.delete(pods_path(ns, "bind-me"), {"gracePeriodSeconds": 0})


def test_bound_pod_deletion_is_graceful(kube_client: KubeClient, ns: str) -> None:
    name = unique_name("graceful")
    created(kube_client.post(pods_path(ns), pod(name, nodeName="node-that-is-not-there")))
    out = ok(kube_client.delete(pods_path(ns, name)))
    assert out["metadata"]["deletionTimestamp"]
    assert out["metadata"]["deletionGracePeriodSeconds"] == 30
    assert ok(kube_client.get(pods_path(ns, name)))["metadata"]["deletionTimestamp"]
    shorter = ok(kube_client.delete(pods_path(ns, name), {"gracePeriodSeconds": 5}))
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    kube_client.delete(pods_path(ns, name), {"gracePeriodSeconds": 0})
    assert kube_client.wait_gone(pods_path(ns, name), 30)
