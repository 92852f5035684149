"""Discovery, version and health endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.kubeapi import KubeClient
from kubeapi_conformance.helpers import ok, status_of


def _resources(client: KubeClient, path: str) -> dict[str, dict[str, Any]]:
    body = ok(client.get(path))
    assert body["kind"] == "APIResourceList"
    return {r["name"]: r for r in body["resources"]}


def test_version_and_health(kube_client: KubeClient) -> None:
    version = ok(kube_client.get("/version"))
    assert version["major"] and version["gitVersion"].startswith("v1.")
    for path in ("/healthz", "/readyz", "/livez"):
        resp = kube_client.get(path)
        assert resp.status_code == 200
        assert resp.text == "ok"


def test_core_group(kube_client: KubeClient) -> None:
    body = ok(kube_client.get("/api"))
    assert body["kind"] == "APIVersions"
    assert "v1" in body["versions"]
    res = _resources(kube_client, "/api/v1")
    pods = res["pods"]
    assert pods["namespaced"] is True
    assert pods["kind"] == "Pod"
    assert "po" in pods["shortNames"]
    assert "all" in pods["categories"]
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(pods["verbs"])
    assert res["pods/status"]["verbs"]
    assert res["pods/binding"]["kind"] == "Binding"
    assert "create" in res["pods/binding"]["verbs"]
    assert res["namespaces"]["namespaced"] is False
    assert "ns" in res["namespaces"]["shortNames"]
    for name in ("nodes", "services", "endpoints", "events", "serviceaccounts"):
        assert name in res, name


@pytest.mark.parametrize(
    ("group", "version", "resource", "kind"),
    [
        ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
        ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
        ("coordination.k8s.io", "v1", "leases", "Lease"),
        ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition"),
    ],
)
def test_api_groups(
    kube_client: KubeClient, group: str, version: str, resource: str, kind: str
) -> None:
    groups = {g["name"]: g for g in ok(kube_client.get("/apis"))["groups"]}
    assert f"{group}/{version}" in [v["groupVersion"] for v in groups[group]["versions"]]
    assert groups[group]["preferredVersion"]["groupVersion"]
    single = ok(kube_client.get(f"/apis/{group}"))
    assert single["kind"] == "APIGroup"
    assert single["name"] == group
    res = _resources(kube_client, f"/apis/{group}/{version}")
    assert res[resource]["kind"] == kind


def test_unknown_resource_is_404_status(kube_client: KubeClient) -> None:
    status_of(kube_client.get("/api/v1/namespaces/default/frobnicators"), 404, "NotFound")
    # An unknown group is not the API's: the Go mux answers a plain-text 404 (recorded:
    # conformance seq 169 of this test, text/plain "404 page not found").
    resp = kube_client.get("/apis/no.such.group.example.com/v1/things")
    assert resp.status_code == 404
    assert resp.text == "404 page not found\n"


def test_system_namespaces_exist(kube_client: KubeClient) -> None:
    names = {n["metadata"]["name"] for n in ok(kube_client.get("/api/v1/namespaces"))["items"]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    default = ok(kube_client.get("/api/v1/namespaces/default"))
    assert default["status"]["phase"] == "Active"


def test_kubernetes_service_and_endpoints(kube_client: KubeClient) -> None:
    svc = ok(kube_client.get("/api/v1/namespaces/default/services/kubernetes"))
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0]["port"] == 443
    endpoints = ok(kube_client.get("/api/v1/namespaces/default/endpoints/kubernetes"))
    assert endpoints["subsets"][0]["addresses"]
    slices = ok(
        kube_client.get(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            params={"labelSelector": "kubernetes.io/service-name=kubernetes"},
        )
    )
    assert slices["items"]


def test_system_namespaces_cannot_be_deleted(kube_client: KubeClient) -> None:
    status_of(kube_client.delete("/api/v1/namespaces/kube-system"), 403, "Forbidden")
    assert ok(kube_client.get("/api/v1/namespaces/kube-system"))["status"]["phase"] == "Active"
