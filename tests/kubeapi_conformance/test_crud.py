"""Create/get/update semantics, server-managed metadata, errors and validation."""

from __future__ import annotations

import json

from fixtures.kubeapi import KubeClient, unique_name
from kubeapi_conformance.helpers import (
    cm_path,
    configmap,
    created,
    ok,
    pod,
    pods_path,
    rv,
    status_of,
)


def test_create_sets_server_metadata_and_pod_defaults(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(pods_path(ns), pod("p1")))
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert isinstance(meta["resourceVersion"], str) and rv(obj) > 0
    assert meta["namespace"] == ns
    assert obj["status"]["phase"] == "Pending"
    spec = obj["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["containers"][0]["terminationMessagePolicy"] == "File"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    fetched = ok(kube_client.get(pods_path(ns, "p1")))
    assert fetched["metadata"]["uid"] == meta["uid"]


def test_default_scheduler_name(kube_client: KubeClient, ns: str) -> None:
    body = pod("p-default-sched")
    del body["spec"]["schedulerName"]
    obj = created(kube_client.post(pods_path(ns), body))
    assert obj["spec"]["schedulerName"] == "default-scheduler"
    kube_client.delete(pods_path(ns, "p-default-sched"), params={"gracePeriodSeconds": 0})


def test_resource_versions_increase(kube_client: KubeClient, ns: str) -> None:
    a = created(kube_client.post(cm_path(ns), configmap("a")))
    b = created(kube_client.post(cm_path(ns), configmap("b")))
    a2 = ok(kube_client.patch(cm_path(ns, "a"), {"data": {"x": "1"}}))
    assert rv(a) < rv(b) < rv(a2)
    listed = ok(kube_client.get(cm_path(ns)))
    assert int(listed["metadata"]["resourceVersion"]) >= rv(a2)


def test_already_exists(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("dup")))
    body = status_of(kube_client.post(cm_path(ns), configmap("dup")), 409, "AlreadyExists")
    assert body["details"]["name"] == "dup"
    assert body["details"]["kind"] == "configmaps"


def test_generate_name(kube_client: KubeClient, ns: str) -> None:
    body = configmap("")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "gen-"
    names = {created(kube_client.post(cm_path(ns), body))["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3
    assert all(n.startswith("gen-") and len(n) == len("gen-") + 5 for n in names)


def test_get_missing_is_404(kube_client: KubeClient, ns: str) -> None:
    body = status_of(kube_client.get(pods_path(ns, "nope")), 404, "NotFound")
    assert body["details"] == {"name": "nope", "kind": "pods"}
    assert body["message"] == 'pods "nope" not found'


def test_update_with_stale_resource_version_conflicts(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(cm_path(ns), configmap("occ")))
    obj["data"] = {"k": "first"}
    newer = ok(kube_client.put(cm_path(ns, "occ"), obj))
    assert rv(newer) > rv(obj)
    obj["data"] = {"k": "second"}
    status_of(kube_client.put(cm_path(ns, "occ"), obj), 409, "Conflict")
    stale = {
        "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
        "data": {"k": "third"},
    }
    status_of(kube_client.patch(cm_path(ns, "occ"), stale), 409, "Conflict")
    assert ok(kube_client.get(cm_path(ns, "occ")))["data"] == {"k": "first"}


def test_unconditional_update(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(cm_path(ns), configmap("uncond")))
    del obj["metadata"]["resourceVersion"]
    obj["data"] = {"k": "new"}
    assert ok(kube_client.put(cm_path(ns, "uncond"), obj))["data"] == {"k": "new"}


def test_noop_update_keeps_resource_version(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(cm_path(ns), configmap("noop")))
    again = ok(kube_client.put(cm_path(ns, "noop"), obj))
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_update_missing_is_404(kube_client: KubeClient, ns: str) -> None:
    status_of(kube_client.put(cm_path(ns, "ghost"), configmap("ghost")), 404, "NotFound")


def test_type_meta_must_match_url(kube_client: KubeClient, ns: str) -> None:
    body = configmap("mismatch")
    body["apiVersion"] = "apps/v1"
    status_of(kube_client.post(cm_path(ns), body), 400, "BadRequest")
    body = configmap("mismatch")
    body["kind"] = "Secret"
    status_of(kube_client.post(cm_path(ns), body), 400, "BadRequest")
    body = configmap("mismatch")
    body["metadata"]["namespace"] = "some-other-namespace"
    status_of(kube_client.post(cm_path(ns), body), 400, "BadRequest")


def test_name_must_match_url_on_update(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("one")))
    status_of(kube_client.put(cm_path(ns, "one"), configmap("two")), 400, "BadRequest")


def test_malformed_bodies(kube_client: KubeClient, ns: str) -> None:
    headers = {"Content-Type": "application/json"}
    for raw in (b"{", b"not json", b"[1, 2", b'{"metadata": {"name": "x"'):
        resp = kube_client.request("POST", cm_path(ns), content=raw, headers=headers)
        status_of(resp, 400, "BadRequest")
    body = configmap("wrong-types")
    body["metadata"]["labels"] = ["a", "b"]
    status_of(kube_client.post(cm_path(ns), body), 400, "BadRequest")
    status_of(kube_client.post(cm_path(ns), ["a list"]), 400, "BadRequest")


def test_yaml_body_is_accepted(kube_client: KubeClient, ns: str) -> None:
    raw = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
    resp = kube_client.request(
        "POST", cm_path(ns), content=raw, headers={"Content-Type": "application/yaml"}
    )
    assert created(resp)["data"] == {"a": "b"}


def test_oversized_body_is_413(kube_client: KubeClient, ns: str) -> None:
    body = configmap("big")
    body["data"] = {"blob": "x" * (3 * 1024 * 1024 + 10)}
    resp = kube_client.request(
        "POST",
        cm_path(ns),
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    status_of(resp, 413, "RequestEntityTooLarge")


def test_invalid_names_are_422_with_causes(kube_client: KubeClient, ns: str) -> None:
    body = status_of(kube_client.post(cm_path(ns), configmap("Bad_Name")), 422, "Invalid")
    causes = body["details"]["causes"]
    assert any(c["field"] == "metadata.name" and c["reason"] == "FieldValueInvalid" for c in causes)
    assert body["details"]["kind"] == "ConfigMap"
    status_of(
        kube_client.post("/api/v1/namespaces", {"metadata": {"name": "UPPER"}}), 422, "Invalid"
    )
    # Service names are DNS-1123 labels since RelaxedServiceNameValidation: a real v1.36.2
    # creates "1abc" (recorded: conformance, test_invalid_names_are_422_with_causes, 201).
    svc = {"metadata": {"name": "1abc"}, "spec": {"ports": [{"port": 80}]}}
    created(kube_client.post(f"/api/v1/namespaces/{ns}/services", svc))
    svc = {"metadata": {"name": "bad_svc"}, "spec": {"ports": [{"port": 80}]}}
    status_of(kube_client.post(f"/api/v1/namespaces/{ns}/services", svc), 422, "Invalid")


def test_invalid_labels_are_422(kube_client: KubeClient, ns: str) -> None:
    for labels in ({"bad key!": "v"}, {"k": "-bad-value-"}, {"k": "x" * 64}):
        resp = kube_client.post(cm_path(ns), configmap(unique_name("lbl"), labels=labels))
        status_of(resp, 422, "Invalid")


def test_pod_requires_containers(kube_client: KubeClient, ns: str) -> None:
    body = status_of(kube_client.post(pods_path(ns), pod("empty", containers=[])), 422, "Invalid")
    assert any(
        c["field"] == "spec.containers" and c["reason"] == "FieldValueRequired"
        for c in body["details"]["causes"]
    )
    nameless = pod("nameless", containers=[{"image": "busybox"}])
    body = status_of(kube_client.post(pods_path(ns), nameless), 422, "Invalid")
    assert any(c["field"] == "spec.containers[0].name" for c in body["details"]["causes"])


def test_pod_spec_is_mostly_immutable(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(pods_path(ns), pod("immut")))
    resp = kube_client.patch(pods_path(ns, "immut"), {"spec": {"restartPolicy": "Never"}})
    status_of(resp, 422, "Invalid")
    image = {"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}
    changed = ok(kube_client.patch(pods_path(ns, "immut"), image, "strategic"))
    assert changed["spec"]["containers"][0]["image"] == "busybox:1.36"


def test_method_not_allowed(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("m")))
    status_of(kube_client.post(cm_path(ns, "m"), configmap("m")), 405, "MethodNotAllowed")


def test_create_in_missing_namespace_is_404(kube_client: KubeClient) -> None:
    resp = kube_client.post(cm_path(unique_name("missing-ns")), configmap("x"))
    body = status_of(resp, 404, "NotFound")
    assert body["details"]["kind"] == "namespaces"


def test_service_gets_cluster_ip(kube_client: KubeClient, ns: str) -> None:
    svc = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    obj = created(kube_client.post(f"/api/v1/namespaces/{ns}/services", svc))
    assert obj["spec"]["type"] == "ClusterIP"
    assert obj["spec"]["clusterIP"].count(".") == 3
    assert obj["spec"]["ports"][0]["protocol"] == "TCP"
    assert obj["spec"]["ports"][0]["targetPort"] == 80


def test_cluster_ip_conflict(kube_client: KubeClient, ns: str) -> None:
    first = {"metadata": {"name": "first"}, "spec": {"ports": [{"port": 80}]}}
    ip = created(kube_client.post(f"/api/v1/namespaces/{ns}/services", first))["spec"]["clusterIP"]
    second = {"metadata": {"name": "second"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}
    status_of(kube_client.post(f"/api/v1/namespaces/{ns}/services", second), 422, "Invalid")


def test_default_service_account_appears(kube_client: KubeClient, ns: str) -> None:
    from kubeapi_conformance.helpers import eventually

    path = f"/api/v1/namespaces/{ns}/serviceaccounts/default"
    eventually(lambda: kube_client.get(path).status_code == 200, 30, "default SA")


def test_list_items_of_builtin_kinds_have_no_type_meta(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("typed")))
    listed = ok(kube_client.get(cm_path(ns), params={"fieldSelector": "metadata.name=typed"}))
    assert listed["kind"] == "ConfigMapList"
    assert listed["apiVersion"] == "v1"
    [item] = listed["items"]
    assert "kind" not in item and "apiVersion" not in item
    assert ok(kube_client.get(cm_path(ns, "typed")))["kind"] == "ConfigMap"


def test_unknown_fields_of_builtin_kinds(kube_client: KubeClient, ns: str) -> None:
    body = pod("typo")
    body["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    body["spec"]["restartPolicyy"] = "Never"
    strict = kube_client.post(pods_path(ns), body, params={"fieldValidation": "Strict"})
    failure = status_of(strict, 400, "BadRequest")
    assert 'unknown field "spec.restartPolicyy"' in failure["message"]
    assert 'unknown field "spec.containers[0].imagePullPolicyy"' in failure["message"]
    resp = kube_client.post(pods_path(ns), body)
    obj = created(resp)
    assert "restartPolicyy" not in obj["spec"]
    assert "imagePullPolicyy" not in obj["spec"]["containers"][0]
    assert "unknown field" in resp.headers.get("Warning", "")
    cm = configmap("typo-cm")
    cm["dataa"] = {"x": "y"}
    assert "dataa" not in created(kube_client.post(cm_path(ns), cm))


def test_defaults_apply_to_updates(kube_client: KubeClient, ns: str) -> None:
    svc_path = f"/api/v1/namespaces/{ns}/services"
    svc = created(
        kube_client.post(
            svc_path, {"metadata": {"name": "keep-ip"}, "spec": {"ports": [{"port": 80}]}}
        )
    )
    bare = {
        "metadata": {"name": "keep-ip", "resourceVersion": svc["metadata"]["resourceVersion"]},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}},
    }
    updated = ok(kube_client.put(f"{svc_path}/keep-ip", bare))
    assert updated["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    assert updated["spec"]["sessionAffinity"] == "None"
    assert updated["spec"]["ports"][0]["protocol"] == "TCP"

    obj = created(kube_client.post(pods_path(ns), pod("redefault")))
    del obj["spec"]["containers"][0]["imagePullPolicy"]
    del obj["spec"]["restartPolicy"]
    again = ok(kube_client.put(pods_path(ns, "redefault"), obj))
    assert again["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_namespace_spec_changes_only_through_finalize(kube_client: KubeClient, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}"
    out = ok(
        kube_client.patch(path, {"spec": {"finalizers": []}, "metadata": {"labels": {"a": "b"}}})
    )
    assert out["spec"]["finalizers"] == ["kubernetes"]
    assert out["metadata"]["labels"]["a"] == "b"
    assert out["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns


def test_yaml_timestamps_are_strings(kube_client: KubeClient, ns: str) -> None:
    raw = b"metadata:\n  name: when\n  annotations:\n    at: 2020-01-01T00:00:00Z\ndata:\n  a: b\n"
    obj = created(
        kube_client.request(
            "POST", cm_path(ns), content=raw, headers={"Content-Type": "application/yaml"}
        )
    )
    assert obj["metadata"]["annotations"]["at"] == "2020-01-01T00:00:00Z"
    resp = kube_client.request(
        "POST",
        cm_path(ns),
        content=b'{"metadata": {"name": "n"}, "data": {"a": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    status_of(resp, 400, "BadRequest")


def test_root_ca_configmap_appears(kube_client: KubeClient, ns: str) -> None:
    # Recorded on a real v1.36.2: every namespace gets kube-root-ca.crt from the
    # controller-manager (conformance recording, test_watch_replays_from_resource_version,
    # the GET .../configmaps list), which the pods' kube-api-access volumes refer to.
    from kubeapi_conformance.helpers import eventually

    path = f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"
    eventually(lambda: kube_client.get(path).status_code == 200, 30, "kube-root-ca.crt")
    cm = ok(kube_client.get(path))
    assert cm["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    assert "kubernetes.io/description" in cm["metadata"]["annotations"]
