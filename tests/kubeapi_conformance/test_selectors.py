"""List filtering (label and field selectors) and pagination."""

from __future__ import annotations

import pytest

from fixtures.kubeapi import KubeClient
from kubeapi_conformance.helpers import (
    cm_path,
    configmap,
    created,
    ok,
    pod,
    pods_path,
    status_of,
)

LABELS = {
    "cm-a": {"app": "web", "tier": "front"},
    "cm-b": {"app": "web", "tier": "back"},
    "cm-c": {"app": "db"},
    "cm-d": {},
}


@pytest.fixture(scope="module")
def labelled(kube_client: KubeClient, module_namespace: str) -> str:
    for name, labels in LABELS.items():
        created(kube_client.post(cm_path(module_namespace), configmap(name, labels=labels)))
    return module_namespace


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", {"cm-a", "cm-b"}),
        ("app==web", {"cm-a", "cm-b"}),
        ("app!=web", {"cm-c", "cm-d"}),
        ("app in (web,db)", {"cm-a", "cm-b", "cm-c"}),
        ("app notin (web)", {"cm-c", "cm-d"}),
        ("tier", {"cm-a", "cm-b"}),
        ("!tier", {"cm-c", "cm-d"}),
        ("app=web,tier=back", {"cm-b"}),
        ("app=web, tier notin (back)", {"cm-a"}),
        ("", {"cm-a", "cm-b", "cm-c", "cm-d"}),
    ],
)
def test_label_selectors(
    kube_client: KubeClient, labelled: str, selector: str, expected: set[str]
) -> None:
    body = ok(kube_client.get(cm_path(labelled), params={"labelSelector": selector}))
    names = {i["metadata"]["name"] for i in body["items"]} - {"kube-root-ca.crt"}
    assert names == expected


@pytest.mark.parametrize("selector", ["app in (web", "app=(x)", "=x", "a b", "app=a,,b=c"])
def test_bad_label_selector_is_400(kube_client: KubeClient, labelled: str, selector: str) -> None:
    resp = kube_client.get(cm_path(labelled), params={"labelSelector": selector})
    status_of(resp, 400, "BadRequest")


def test_field_selector_on_name_and_namespace(kube_client: KubeClient, labelled: str) -> None:
    body = ok(kube_client.get(cm_path(labelled), params={"fieldSelector": "metadata.name=cm-c"}))
    assert [i["metadata"]["name"] for i in body["items"]] == ["cm-c"]
    body = ok(
        kube_client.get(
            "/api/v1/configmaps",
            params={
                "fieldSelector": f"metadata.namespace={labelled},metadata.name!=cm-a",
                "labelSelector": "app",
            },
        )
    )
    assert {i["metadata"]["name"] for i in body["items"]} == {"cm-b", "cm-c"}


def test_unsupported_field_label_is_400(kube_client: KubeClient, labelled: str) -> None:
    resp = kube_client.get(cm_path(labelled), params={"fieldSelector": "data.k=v"})
    status_of(resp, 400, "BadRequest")


def test_pod_field_selectors(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(pods_path(ns), pod("on-node", nodeName="node-x")))
    created(kube_client.post(pods_path(ns), pod("unbound")))
    ok(kube_client.patch(pods_path(ns, "unbound", "status"), {"status": {"phase": "Failed"}}))

    def names(selector: str) -> set[str]:
        body = ok(kube_client.get(pods_path(ns), params={"fieldSelector": selector}))
        return {i["metadata"]["name"] for i in body["items"]}

    assert names("spec.nodeName=node-x") == {"on-node"}
    assert names("spec.nodeName=") == {"unbound"}
    assert names("status.phase=Failed") == {"unbound"}
    assert names("status.phase!=Failed") == {"on-node"}
    kube_client.delete(pods_path(ns, "on-node"), params={"gracePeriodSeconds": 0})


def test_pagination(kube_client: KubeClient, ns: str) -> None:
    for i in range(7):
        created(kube_client.post(cm_path(ns), configmap(f"page-{i}", labels={"page": "yes"})))
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 3, "labelSelector": "page=yes"}
    pages = 0
    while True:
        body = ok(kube_client.get(cm_path(ns), params=params))
        pages += 1
        seen += [i["metadata"]["name"] for i in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
        # remainingItemCount is optional, and never set when a selector filters the list.
        assert "remainingItemCount" not in body["metadata"]
        params = {"limit": 3, "labelSelector": "page=yes", "continue": token}
    assert pages == 3
    assert sorted(seen) == sorted(f"page-{i}" for i in range(7))
    assert len(seen) == len(set(seen))


def test_pagination_counts_remaining_items(kube_client: KubeClient, ns: str) -> None:
    for i in range(5):
        created(
            kube_client.post(
                f"/api/v1/namespaces/{ns}/secrets",
                {"metadata": {"name": f"s-{i}"}, "type": "Opaque"},
            )
        )
    body = ok(kube_client.get(f"/api/v1/namespaces/{ns}/secrets", params={"limit": 2}))
    assert len(body["items"]) == 2
    assert body["metadata"]["continue"]
    remaining = body["metadata"].get("remainingItemCount")
    assert remaining is None or remaining >= 3
