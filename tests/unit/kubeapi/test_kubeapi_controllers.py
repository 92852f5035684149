"""Control-plane loops, driven synchronously through the in-process API (no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from kuryr_k8s.sandbox.kubeapi.api import Api
from kuryr_k8s.sandbox.kubeapi.controllers import Controllers
from kuryr_k8s.sandbox.kubeapi.options import DeleteOptions
from unit.kubeapi.conftest import rt_of

pytestmark = pytest.mark.unit
Obj = dict[str, Any]


_rt = rt_of


def _pod(name: str, node: str = "") -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec}


def test_default_service_account(api: Api, ctl: Controllers) -> None:
    assert api.store.get("/serviceaccounts", "ns", "default") is not None


def test_orphaned_pods_are_collected_after_quarantine(api: Api, ctl: Controllers) -> None:
    pods, nodes = _rt(api, "/pods"), _rt(api, "/nodes")
    api.create(nodes, "v1", "", {"metadata": {"name": "alive"}})
    api.create(pods, "v1", "ns", _pod("on-alive", "alive"))
    api.create(pods, "v1", "ns", _pod("on-ghost", "ghost"))
    api.create(pods, "v1", "ns", _pod("unbound"))
    assert ctl.collect_orphaned_pods(100.0) == []
    assert ctl.collect_orphaned_pods(139.0) == []
    assert ctl.collect_orphaned_pods(140.0) == ["ns/on-ghost"]
    assert api.store.get("/pods", "ns", "on-ghost") is None
    assert api.store.get("/pods", "ns", "on-alive") is not None


def test_namespace_waits_for_graceful_pods(api: Api, ctl: Controllers) -> None:
    pods, nss = _rt(api, "/pods"), _rt(api, "/namespaces")
    api.create(_rt(api, "/nodes"), "v1", "", {"metadata": {"name": "n1"}})
    api.create(pods, "v1", "ns", _pod("running", "n1"))
    api.delete(nss, "", "ns")
    ctl.run_pending()
    pod = api.store.get("/pods", "ns", "running")
    assert pod is not None and pod["metadata"]["deletionGracePeriodSeconds"] == 30
    assert api.store.get("/namespaces", "", "ns") is not None
    api.delete(pods, "ns", "running", DeleteOptions(grace=0))
    ctl.run_pending()
    assert api.store.get("/namespaces", "", "ns") is None
    assert api.store.get("/serviceaccounts", "ns", "default") is None


def test_foreground_and_orphan(api: Api, ctl: Controllers) -> None:
    cms = _rt(api, "/configmaps")
    owner = api.create(cms, "v1", "ns", {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    api.create(cms, "v1", "ns", {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    api.delete(cms, "ns", "owner", DeleteOptions(propagation="Orphan"))
    ctl.run_pending()
    dep = api.store.get("/configmaps", "ns", "dep")
    assert dep is not None and "ownerReferences" not in dep["metadata"]
    assert api.store.get("/configmaps", "ns", "owner") is None

    owner = api.create(cms, "v1", "ns", {"metadata": {"name": "owner2"}})
    ref = dict(ref, name="owner2", uid=owner["metadata"]["uid"])
    api.create(cms, "v1", "ns", {"metadata": {"name": "dep2", "ownerReferences": [ref]}})
    held = api.delete(cms, "ns", "owner2", DeleteOptions(propagation="Foreground"))
    assert held["metadata"]["finalizers"] == ["foregroundDeletion"]
    ctl.run_pending()
    assert api.store.get("/configmaps", "ns", "dep2") is None
    assert api.store.get("/configmaps", "ns", "owner2") is None
