"""PATCH flavours and the status subresource."""

from __future__ import annotations

from fixtures.kubeapi import KubeClient
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


def test_merge_patch_adds_and_removes_labels(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("mp", labels={"a": "1", "b": "2"})))
    out = ok(kube_client.patch(cm_path(ns, "mp"), {"metadata": {"labels": {"a": None, "c": "3"}}}))
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}


def test_json_patch(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("jp")))
    ops = [
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "add", "path": "/data/n", "value": "1"},
        {"op": "remove", "path": "/data/k"},
        {"op": "add", "path": "/metadata/annotations", "value": {"x/y": "z"}},
    ]
    out = ok(kube_client.patch(cm_path(ns, "jp"), ops, "json"))
    assert out["data"] == {"n": "1"}
    assert out["metadata"]["annotations"] == {"x/y": "z"}
    failing = [{"op": "test", "path": "/data/n", "value": "2"}]
    status_of(kube_client.patch(cm_path(ns, "jp"), failing, "json"), 422, "Invalid")
    assert ok(kube_client.get(cm_path(ns, "jp")))["data"] == {"n": "1"}


def test_json_patch_resource_version_precondition(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(cm_path(ns), configmap("jprv")))
    ok(kube_client.patch(cm_path(ns, "jprv"), {"data": {"k": "changed"}}))
    ops = [
        {
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": obj["metadata"]["resourceVersion"],
        },
        {"op": "replace", "path": "/data/k", "value": "late"},
    ]
    status_of(kube_client.patch(cm_path(ns, "jprv"), ops, "json"), 409, "Conflict")


def test_strategic_merge_of_containers_by_name(kube_client: KubeClient, ns: str) -> None:
    containers = [
        {"name": "a", "image": "busybox:1.35", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "busybox:1.35"},
    ]
    created(kube_client.post(pods_path(ns), pod("smp", containers=containers)))
    patch = {"spec": {"containers": [{"name": "b", "image": "busybox:1.36"}]}}
    out = ok(kube_client.patch(pods_path(ns, "smp"), patch, "strategic"))
    by_name = {c["name"]: c for c in out["spec"]["containers"]}
    assert by_name["a"]["image"] == "busybox:1.35"
    assert by_name["a"]["env"] == [{"name": "X", "value": "1"}]
    assert by_name["b"]["image"] == "busybox:1.36"


def test_strategic_merge_of_finalizers_and_labels(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("smpf", finalizers=["example.com/a"])))
    patch = {"metadata": {"finalizers": ["example.com/b"], "labels": {"l": "v"}}}
    out = ok(kube_client.patch(cm_path(ns, "smpf"), patch, "strategic"))
    # apimachinery's normalizeElementOrder puts the patch's new item first (recorded:
    # conformance seq 525 of this test: ["example.com/b", "example.com/a"]).
    assert out["metadata"]["finalizers"] == ["example.com/b", "example.com/a"]
    assert out["metadata"]["labels"] == {"l": "v"}
    remove = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a", "example.com/b"]}
    }
    out = ok(kube_client.patch(cm_path(ns, "smpf"), remove, "strategic"))
    assert not out["metadata"].get("finalizers")


def test_status_subresource(kube_client: KubeClient, ns: str) -> None:
    obj = created(kube_client.post(pods_path(ns), pod("st")))
    patch = {"status": {"phase": "Running", "podIP": "10.1.2.3"}}
    out = ok(kube_client.patch(pods_path(ns, "st", "status"), patch))
    assert out["status"]["phase"] == "Running"
    assert out["status"]["podIP"] == "10.1.2.3"
    assert rv(out) > rv(obj)
    # Status changes through the main resource are ignored...
    ignored = ok(
        kube_client.patch(
            pods_path(ns, "st"), {"status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}}
        )
    )
    assert ignored["status"]["phase"] == "Running"
    assert ignored["metadata"]["labels"] == {"a": "b"}
    # ...and spec changes through status are ignored (pods keep metadata changes there).
    through_status = {
        "metadata": {"labels": {"a": "changed"}},
        "spec": {"restartPolicy": "Never"},
        "status": {"phase": "Running"},
    }
    out = ok(kube_client.patch(pods_path(ns, "st", "status"), through_status))
    assert out["spec"]["restartPolicy"] == "Always"
    assert out["metadata"]["labels"] == {"a": "changed"}
    status_put = ok(kube_client.get(pods_path(ns, "st", "status")))
    status_put["status"]["phase"] = "Succeeded"
    assert (
        ok(kube_client.put(pods_path(ns, "st", "status"), status_put))["status"]["phase"]
        == "Succeeded"
    )


def test_patch_missing_object_is_404(kube_client: KubeClient, ns: str) -> None:
    status_of(kube_client.patch(cm_path(ns, "ghost"), {"data": {}}), 404, "NotFound")


def test_unsupported_patch_content_type_is_415(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("ct")))
    resp = kube_client.request(
        "PATCH", cm_path(ns, "ct"), content=b"{}", headers={"Content-Type": "text/plain"}
    )
    status_of(resp, 415, "UnsupportedMediaType")


def test_patch_with_bad_json_is_400(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("bad")))
    resp = kube_client.request(
        "PATCH",
        cm_path(ns, "bad"),
        content=b"{oops",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    status_of(resp, 400, "BadRequest")
