"""EndpointSlices the EndpointSlice controller (kube-controller-manager) writes for a Service.

unverified-on-real: the recordings of issue 11 (``../shared/k8s-real/``) hold no
EndpointSlice written by the real controller (their cluster ran no kubelet, and no test made
a Service with a selector); the expected slices follow ``pkg/controller/endpointslice`` and
``staging/src/k8s.io/endpointslice`` (v1.36). Written to pass against a real cluster: the
pods are bound to a Node the test creates and their status is set by the test, as a kubelet
would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.kubeapi import KubeClient, unique_name

from .helpers import created, eventually, ok, pod, pods_path

Obj = dict[str, Any]
SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
TIMEOUT = 30.0


@pytest.fixture
def node(kube_client: KubeClient) -> Iterator[str]:
    name = unique_name("conformance-eps-node")
    created(kube_client.post("/api/v1/nodes", {"metadata": {"name": name}}))
    yield name
    kube_client.delete(f"/api/v1/nodes/{name}")


def _backend(client: KubeClient, ns: str, name: str, node: str, port: int, ip: str) -> Obj:
    body = pod(name, {"app": "web"}, nodeName=node)
    body["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": port}]
    created(client.post(pods_path(ns), body))
    return _status(client, ns, name, ip, True)


def _status(client: KubeClient, ns: str, name: str, ip: str, ready: bool) -> Obj:
    cond = {"type": "Ready", "status": "True" if ready else "False"}
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [cond]}
    return ok(client.patch(pods_path(ns, name, "status"), {"status": status}, "strategic"))


def _slices(client: KubeClient, ns: str, service: str) -> list[Obj]:
    query = {"labelSelector": f"kubernetes.io/service-name={service}"}
    items: list[Obj] = ok(client.get(SLICES.format(ns=ns), params=query))["items"]
    return sorted(items, key=lambda s: str(s.get("ports")))


def _endpoints(slices: list[Obj]) -> dict[str, tuple[int, Obj]]:
    return {
        ep["addresses"][0]: (s["ports"][0]["port"], ep["conditions"])
        for s in slices
        for ep in s.get("endpoints") or []
    }


def test_selector_service_gets_slices(kube_client: KubeClient, ns: str, node: str) -> None:
    svc = created(
        kube_client.post(
            f"/api/v1/namespaces/{ns}/services",
            {
                "metadata": {"name": "web", "labels": {"team": "a"}},
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            },
        )
    )
    one = _backend(kube_client, ns, "web-1", node, 8080, "10.250.0.5")
    _backend(kube_client, ns, "web-2", node, 9090, "10.250.0.6")
    ready = {"ready": True, "serving": True, "terminating": False}
    want = {"10.250.0.5": (8080, ready), "10.250.0.6": (9090, ready)}
    eventually(lambda: _endpoints(_slices(kube_client, ns, "web")) == want, TIMEOUT, "slices")
    first = _slices(kube_client, ns, "web")[0]
    meta = first["metadata"]
    assert meta["generateName"] == "web-" and meta["name"].startswith("web-")
    assert meta["labels"] == {
        "team": "a",
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": svc["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert first["addressType"] == "IPv4"
    assert first["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    [endpoint] = first["endpoints"]
    assert endpoint["nodeName"] == node
    assert endpoint["targetRef"] == {
        "kind": "Pod",
        "namespace": ns,
        "name": "web-1",
        "uid": one["metadata"]["uid"],
    }

    _status(kube_client, ns, "web-1", "10.250.0.5", False)
    not_ready = {"ready": False, "serving": False, "terminating": False}
    want["10.250.0.5"] = (8080, not_ready)
    eventually(lambda: _endpoints(_slices(kube_client, ns, "web")) == want, TIMEOUT, "not ready")

    kube_client.delete(f"/api/v1/namespaces/{ns}/services/web")
    eventually(lambda: not _slices(kube_client, ns, "web"), TIMEOUT, "slices collected")


def test_selectorless_service_gets_no_slices(kube_client: KubeClient, ns: str) -> None:
    created(
        kube_client.post(
            f"/api/v1/namespaces/{ns}/services",
            {"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}},
        )
    )
    created(kube_client.post(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "x"}}))
    assert _slices(kube_client, ns, "manual") == []
