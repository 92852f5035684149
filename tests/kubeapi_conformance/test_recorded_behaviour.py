"""Behaviour a real kube-apiserver v1.36.2 showed in the recordings of issue 11.

Each case names the recorded exchange (``data/real/`` holds the reduced recordings;
``../shared/k8s-real/`` the full ones): ``scenarios::<name> seq N`` or the conformance test
it came from. They assert what a client reads: status, reason, event order, fields.
"""

from __future__ import annotations

from fixtures.kubeapi import KubeClient
from kubeapi_conformance.helpers import created, ok, pod, pods_path, status_of

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
EVENTS_V1 = "/apis/events.k8s.io/v1/namespaces/{ns}/events"


def _lease(name: str, renew: str = "2024-01-01T00:00:00.000000Z") -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": renew},
    }


def test_lease_update_rules(kube_client: KubeClient, ns: str) -> None:
    # scenarios::lease_conflict seq 106 (422), 107 (400), 108 (201)
    path = LEASES.format(ns=ns)
    lease = created(kube_client.post(path, _lease("l")))
    del lease["metadata"]["resourceVersion"]
    body = status_of(kube_client.put(f"{path}/l", lease), 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    body = status_of(
        kube_client.put(f"{path}/l", _lease("l", "2024-01-01T00:00:05Z")), 400, "BadRequest"
    )
    assert 'as "2006-01-02T15:04:05.000000Z07:00"' in body["message"]
    resp = kube_client.put(f"{path}/missing", _lease("missing"))
    assert resp.status_code == 201, resp.text


def test_events_k8s_io_v1_shares_core_events(kube_client: KubeClient, ns: str) -> None:
    # scenarios::events_core_and_events_k8s_io seq 112 (201), 113 (422 eventTime), 114 (422
    # type), 115 (core list shows it), 116 (events.k8s.io list)
    path = EVENTS_V1.format(ns=ns)
    regarding = {"kind": "Pod", "namespace": ns, "name": "p", "apiVersion": "v1"}
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "p.ev1"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reportingController": "kuryr.openstack.org/controller",
        "reportingInstance": "kuryr-controller-1",
        "action": "Bind",
        "reason": "NetworkReady",
        "regarding": regarding,
        "note": "port active",
        "type": "Normal",
    }
    out = created(kube_client.post(path, event))
    assert out["apiVersion"] == "events.k8s.io/v1" and out["note"] == "port active"
    missing = {k: v for k, v in event.items() if k != "eventTime"}
    missing["metadata"] = {"name": "p.ev2"}
    body = status_of(kube_client.post(path, missing), 422, "Invalid")
    assert [c["field"] for c in body["details"]["causes"]] == ["eventTime"]
    bogus = {**event, "metadata": {"name": "p.ev3"}, "type": "Bogus"}
    body = status_of(kube_client.post(path, bogus), 422, "Invalid")
    assert [c["field"] for c in body["details"]["causes"]] == ["type"]
    core = ok(kube_client.get(f"/api/v1/namespaces/{ns}/events"))
    [item] = [e for e in core["items"] if e["metadata"]["name"] == "p.ev1"]
    assert item["message"] == "port active"
    assert item["involvedObject"] == regarding
    assert item["reportingComponent"] == "kuryr.openstack.org/controller"
    listed = ok(kube_client.get(path))
    assert listed["kind"] == "EventList" and listed["apiVersion"] == "events.k8s.io/v1"


def test_legacy_bindings_and_binding_name_mismatch(kube_client: KubeClient, ns: str) -> None:
    # scenarios::pods_binding seq 14 (POST bindings 201), 16 (name mismatch 400)
    created(kube_client.post(pods_path(ns), pod("tobind")))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "tobind"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "conformance-no-such-node"},
    }
    resp = kube_client.post(f"/api/v1/namespaces/{ns}/bindings", binding)
    assert resp.status_code == 201, resp.text
    assert ok(kube_client.get(pods_path(ns, "tobind")))["spec"]["nodeName"]
    created(kube_client.post(pods_path(ns), pod("other")))
    other = {**binding, "metadata": {"name": "somebody-else"}}
    body = status_of(kube_client.post(pods_path(ns, "other", "binding"), other), 400, "BadRequest")
    assert body["message"] == "name in URL does not match name in Binding object"


def test_unbound_pod_delete_is_modified_then_deleted(kube_client: KubeClient, ns: str) -> None:
    # scenarios::pod_delete_grace seq 59 (watch: MODIFIED with deletionTimestamp and grace 0,
    # then DELETED) and 61 (the answer: the pod with deletionTimestamp, generation 2)
    created(kube_client.post(pods_path(ns), pod("gone")))
    start = ok(kube_client.get(pods_path(ns)))["metadata"]["resourceVersion"]
    out = ok(kube_client.delete(pods_path(ns, "gone")))
    assert out["metadata"]["deletionTimestamp"] and out["metadata"]["generation"] == 2
    assert out["metadata"]["deletionGracePeriodSeconds"] == 0
    events = [
        (e["type"], e["object"]["metadata"].get("deletionGracePeriodSeconds"))
        for e in kube_client.watch(pods_path(ns), {"resourceVersion": start, "timeoutSeconds": 2})
        if e["type"] != "BOOKMARK"
    ]
    assert events == [("MODIFIED", 0), ("DELETED", 0)]


def test_list_and_watch_resource_version_rules(kube_client: KubeClient, ns: str) -> None:
    # scenarios::watch_resource_versions / list_limit_continue_and_selectors: seq 45
    # (Exact at "1": 410 Expired), 56 (sendInitialEvents without resourceVersionMatch: 422)
    body = status_of(
        kube_client.get(
            pods_path(ns), params={"resourceVersion": "1", "resourceVersionMatch": "Exact"}
        ),
        410,
        "Expired",
    )
    assert body["message"] == "The resourceVersion for the provided list is too old."
    [event] = list(
        kube_client.watch(pods_path(ns), {"sendInitialEvents": "true", "timeoutSeconds": 2})
    )
    assert event["code"] == 422 and event["object"]["reason"] == "Invalid"
    assert event["object"]["details"]["causes"][0]["field"] == "resourceVersionMatch"


def test_pod_ip_wins_over_a_different_pod_ips(kube_client: KubeClient, ns: str) -> None:
    # scenarios::pod_status_merge_patch seq 19: podIP 10.0.0.5 with podIPs [10.0.0.6] keeps
    # podIPs [10.0.0.5] (the v1 conversion: podIP is authoritative)
    created(kube_client.post(pods_path(ns), pod("ips")))
    patch = {"status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.6"}]}}
    out = ok(kube_client.patch(pods_path(ns, "ips", "status"), patch))
    assert out["status"]["podIP"] == "10.0.0.5"
    assert out["status"]["podIPs"] == [{"ip": "10.0.0.5"}]


def test_new_crd_is_not_established_in_its_create_answer(kube_client: KubeClient) -> None:
    # conformance recording: every CRD POST answered status.conditions null and
    # acceptedNames {plural: "", kind: ""} (the establishing controller runs after)
    import uuid

    group = f"t{uuid.uuid4().hex[:8]}.conformance.kuryr.openstack.org"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"things.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    out = created(kube_client.post(path, crd))
    try:
        assert out["status"]["conditions"] is None
        assert out["status"]["acceptedNames"] == {"plural": "", "kind": ""}
        assert not out["metadata"].get("finalizers")
    finally:
        kube_client.delete(f"{path}/things.{group}")


def test_aggregated_discovery_for_kubectl(kube_client: KubeClient) -> None:
    # conformance recording, test_kubectl.py: GET /api and /apis with kubectl's Accept answer
    # apidiscovery.k8s.io/v2 APIGroupDiscoveryList
    accept = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
        "application/json"
    )
    core = kube_client.get("/api", headers={"Accept": accept})
    assert core.status_code == 200
    assert core.headers["content-type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    doc = core.json()
    assert doc["kind"] == "APIGroupDiscoveryList" and doc["apiVersion"] == "apidiscovery.k8s.io/v2"
    [group] = doc["items"]
    resources = {r["resource"]: r for r in group["versions"][0]["resources"]}
    assert resources["bindings"]["verbs"] == ["create"]
    assert {s["subresource"] for s in resources["pods"]["subresources"]} >= {"binding", "status"}
    groups = kube_client.get("/apis", headers={"Accept": accept}).json()
    names = {i["metadata"]["name"] for i in groups["items"]}
    assert {"apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io"} <= names
