"""Per-kind behaviour of the other kinds our components use, tables, dry runs, collections."""

from __future__ import annotations

from fixtures.kubeapi import KubeClient, unique_name
from kubeapi_conformance.helpers import (
    cm_path,
    configmap,
    created,
    ok,
    pod,
    pods_path,
    status_of,
)

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def test_node_create_keeps_status_and_status_updates(kube_client: KubeClient) -> None:
    name = unique_name("conformance-node")
    body = {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.7"}]},
    }
    path = f"/api/v1/nodes/{name}"
    try:
        node = created(kube_client.post("/api/v1/nodes", body))
        assert "namespace" not in node["metadata"]
        ready = {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
                ]
            }
        }
        out = ok(kube_client.patch(f"{path}/status", ready, "strategic"))
        assert {c["type"]: c["status"] for c in out["status"]["conditions"]}["Ready"] == "True"
        table = ok(kube_client.get(path, headers={"Accept": TABLE}))
        assert [c["name"] for c in table["columnDefinitions"]][:5] == [
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
        ]
    finally:
        kube_client.delete(path)


def test_pod_table(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(pods_path(ns), pod("tab", nodeName="node-t")))
    ok(
        kube_client.patch(
            pods_path(ns, "tab", "status"), {"status": {"phase": "Running", "podIP": "10.9.8.7"}}
        )
    )
    table = ok(kube_client.get(pods_path(ns), headers={"Accept": TABLE}))
    cols = table["columnDefinitions"]
    assert [c["name"] for c in cols][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    wide = {c["name"]: c["priority"] for c in cols}
    assert wide["IP"] > 0 and wide["Node"] > 0 and wide["Status"] == 0
    [row] = table["rows"]
    by_name = dict(zip([c["name"] for c in cols], row["cells"], strict=True))
    assert by_name["Name"] == "tab"
    assert by_name["Ready"] == "0/1"
    assert by_name["Status"] == "Running"
    assert by_name["IP"] == "10.9.8.7"
    assert by_name["Node"] == "node-t"
    assert row["object"]["kind"] == "PartialObjectMetadata"
    full = ok(
        kube_client.get(
            pods_path(ns), headers={"Accept": TABLE}, params={"includeObject": "Object"}
        )
    )
    assert full["rows"][0]["object"]["spec"]["nodeName"] == "node-t"
    kube_client.delete(pods_path(ns, "tab"), {"gracePeriodSeconds": 0})


def test_events_and_describe_style_field_selector(kube_client: KubeClient, ns: str) -> None:
    target = created(kube_client.post(pods_path(ns), pod("ev-target")))
    event = {
        "metadata": {"name": "ev-target.1"},
        "involvedObject": {
            "kind": "Pod",
            "namespace": ns,
            "name": "ev-target",
            "uid": target["metadata"]["uid"],
            "apiVersion": "v1",
        },
        "reason": "Testing",
        "message": "hello",
        "type": "Normal",
        "source": {"component": "conformance"},
        "count": 1,
    }
    created(kube_client.post(f"/api/v1/namespaces/{ns}/events", event))
    selector = (
        f"involvedObject.name=ev-target,involvedObject.namespace={ns},"
        f"involvedObject.kind=Pod,involvedObject.uid={target['metadata']['uid']}"
    )
    found = ok(
        kube_client.get(f"/api/v1/namespaces/{ns}/events", params={"fieldSelector": selector})
    )
    assert [e["reason"] for e in found["items"]] == ["Testing"]
    by_reason = ok(
        kube_client.get(f"/api/v1/namespaces/{ns}/events", params={"fieldSelector": "reason=Other"})
    )
    assert by_reason["items"] == []


def test_endpointslice(kube_client: KubeClient, ns: str) -> None:
    path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    body = {
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    out = created(kube_client.post(path, body))
    assert out["endpoints"][0]["addresses"] == ["10.0.0.5"]
    listed = ok(kube_client.get(path, params={"labelSelector": "kubernetes.io/service-name=web"}))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["web-abc"]
    missing = dict(body, metadata={"name": "no-type"})
    del missing["addressType"]
    status_of(kube_client.post(path, missing), 422, "Invalid")
    status_of(kube_client.patch(f"{path}/web-abc", {"addressType": "IPv6"}), 422, "Invalid")


def test_network_policy_defaults(kube_client: KubeClient, ns: str) -> None:
    path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
    body = {"metadata": {"name": "deny"}, "spec": {"podSelector": {"matchLabels": {"a": "b"}}}}
    assert created(kube_client.post(path, body))["spec"]["policyTypes"] == ["Ingress"]
    egress = {
        "metadata": {"name": "egress"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
    }
    assert created(kube_client.post(path, egress))["spec"]["policyTypes"] == ["Ingress", "Egress"]
    bad = {"metadata": {"name": "bad"}, "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}}
    status_of(kube_client.post(path, bad), 422, "Invalid")


def test_lease(kube_client: KubeClient, ns: str) -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    body = {
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "renewTime": "2026-01-01T00:00:00.000000Z",
        },
    }
    lease = created(kube_client.post(path, body))
    lease["spec"]["holderIdentity"] = "b"
    taken = ok(kube_client.put(f"{path}/leader", lease))
    assert taken["spec"]["holderIdentity"] == "b"
    lease["spec"]["holderIdentity"] = "c"
    status_of(kube_client.put(f"{path}/leader", lease), 409, "Conflict")
    status_of(
        kube_client.post(
            path, dict(body, metadata={"name": "bad"}, spec={"leaseDurationSeconds": 0})
        ),
        422,
        "Invalid",
    )


def test_dry_run_changes_nothing(kube_client: KubeClient, ns: str) -> None:
    out = created(kube_client.post(cm_path(ns), configmap("dry"), params={"dryRun": "All"}))
    assert out["metadata"]["name"] == "dry"
    status_of(kube_client.get(cm_path(ns, "dry")), 404, "NotFound")
    created(kube_client.post(cm_path(ns), configmap("wet")))
    ok(kube_client.patch(cm_path(ns, "wet"), {"data": {"k": "dry"}}, params={"dryRun": "All"}))
    assert ok(kube_client.get(cm_path(ns, "wet")))["data"] == {"k": "v"}
    kube_client.delete(cm_path(ns, "wet"), params={"dryRun": "All"})
    ok(kube_client.get(cm_path(ns, "wet")))


def test_delete_collection(kube_client: KubeClient, ns: str) -> None:
    for i in range(3):
        created(kube_client.post(cm_path(ns), configmap(f"coll-{i}", labels={"coll": "x"})))
    created(kube_client.post(cm_path(ns), configmap("keep", labels={"coll": "y"})))
    resp = kube_client.delete(cm_path(ns), params={"labelSelector": "coll=x"})
    assert resp.status_code == 200, resp.text
    left = ok(kube_client.get(cm_path(ns), params={"labelSelector": "coll"}))
    assert [i["metadata"]["name"] for i in left["items"]] == ["keep"]
