"""Watch: resume from a resourceVersion, selectors, timeouts, bookmarks, 410 Gone."""

from __future__ import annotations

import threading
import time
from typing import Any

from fixtures.kubeapi import KubeClient
from kubeapi_conformance.helpers import (
    cm_path,
    configmap,
    created,
    ok,
    rv,
)

Obj = dict[str, Any]


def _events(kube_client: KubeClient, path: str, **params: Any) -> list[Obj]:
    params.setdefault("timeoutSeconds", 1)
    return list(kube_client.watch(path, params, timeout=params["timeoutSeconds"] + 30))


def _summary(events: list[Obj]) -> list[tuple[str, str]]:
    # kube-root-ca.crt is published into every namespace by a real controller manager.
    return [
        (e["type"], e["object"]["metadata"]["name"])
        for e in events
        if e["type"] != "BOOKMARK" and e["object"]["metadata"]["name"] != "kube-root-ca.crt"
    ]


def test_watch_replays_from_resource_version(kube_client: KubeClient, ns: str) -> None:
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]
    created(kube_client.post(cm_path(ns), configmap("w1")))
    ok(kube_client.patch(cm_path(ns, "w1"), {"data": {"k": "2"}}))
    created(kube_client.post(cm_path(ns), configmap("w2")))
    assert ok(kube_client.delete(cm_path(ns, "w1")))
    events = _events(kube_client, cm_path(ns), resourceVersion=start)
    assert _summary(events) == [
        ("ADDED", "w1"),
        ("MODIFIED", "w1"),
        ("ADDED", "w2"),
        ("DELETED", "w1"),
    ]
    versions = [rv(e["object"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert events[1]["object"]["data"] == {"k": "2"}


def test_watch_without_version_starts_with_current_state(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("s1", labels={"w": "x"})))
    created(kube_client.post(cm_path(ns), configmap("s2", labels={"w": "x"})))
    events = _events(kube_client, cm_path(ns), labelSelector="w=x")
    assert sorted(_summary(events)) == [("ADDED", "s1"), ("ADDED", "s2")]


def test_watch_sees_live_changes(kube_client: KubeClient, ns: str) -> None:
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]

    def writer() -> None:
        time.sleep(0.5)
        for i in range(3):
            kube_client.post(cm_path(ns), configmap(f"live-{i}"))

    thread = threading.Thread(target=writer)
    thread.start()
    events = _events(kube_client, cm_path(ns), resourceVersion=start, timeoutSeconds=4)
    thread.join()
    assert _summary(events) == [("ADDED", f"live-{i}") for i in range(3)]


def test_selector_transitions(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("t1", labels={"sel": "in"})))
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]
    ok(kube_client.patch(cm_path(ns, "t1"), {"metadata": {"labels": {"sel": "out"}}}))
    ok(kube_client.patch(cm_path(ns, "t1"), {"data": {"unrelated": "1"}}))
    ok(kube_client.patch(cm_path(ns, "t1"), {"metadata": {"labels": {"sel": "in"}}}))
    events = _events(kube_client, cm_path(ns), resourceVersion=start, labelSelector="sel=in")
    assert _summary(events) == [("DELETED", "t1"), ("ADDED", "t1")]


def test_field_selector_watch(kube_client: KubeClient, ns: str) -> None:
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]
    created(kube_client.post(cm_path(ns), configmap("f1")))
    created(kube_client.post(cm_path(ns), configmap("f2")))
    events = _events(
        kube_client, cm_path(ns), resourceVersion=start, fieldSelector="metadata.name=f2"
    )
    assert _summary(events) == [("ADDED", "f2")]


def test_timeout_ends_stream(kube_client: KubeClient, ns: str) -> None:
    began = time.monotonic()
    _events(kube_client, cm_path(ns), timeoutSeconds=1)
    assert 0.5 < time.monotonic() - began < 20


def test_bookmarks(kube_client: KubeClient, ns: str) -> None:
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]
    created(kube_client.post(cm_path(ns), configmap("b1")))
    events = _events(
        kube_client,
        cm_path(ns),
        resourceVersion=start,
        allowWatchBookmarks="true",
        timeoutSeconds=6,
    )
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks, events
    assert marks[-1]["object"]["kind"] == "ConfigMap"
    assert int(marks[-1]["object"]["metadata"]["resourceVersion"]) >= rv(events[0]["object"])


def test_too_old_resource_version_is_gone(kube_client: KubeClient, ns: str) -> None:
    events = _events(kube_client, cm_path(ns), resourceVersion="1", timeoutSeconds=2)
    assert events, "expected a 410 answer"
    first = events[0]
    assert first["type"] in ("ERROR", "HTTP"), first
    assert first["object"]["kind"] == "Status"
    assert first["object"]["code"] == 410
    assert first["object"]["reason"] in ("Expired", "Gone")


def test_watch_all_namespaces(kube_client: KubeClient, ns: str) -> None:
    start = ok(kube_client.get("/api/v1/configmaps"))["metadata"]["resourceVersion"]
    created(kube_client.post(cm_path(ns), configmap("everywhere")))
    events = _events(
        kube_client,
        "/api/v1/configmaps",
        resourceVersion=start,
        fieldSelector=f"metadata.namespace={ns}",
    )
    assert ("ADDED", "everywhere") in _summary(events)


def test_bad_resource_version_is_500(kube_client: KubeClient, ns: str) -> None:
    # A real v1.36.2 answers 500 without a reason (recorded: conformance seq "watch=1&
    # resourceVersion=abc" of test_bad_resource_version_is_400, scenarios::watch_resource_versions
    # seq 48), not the 400 this test used to expect.
    resp = kube_client.get(cm_path(ns), params={"watch": "1", "resourceVersion": "abc"})
    assert resp.status_code == 500
    body = resp.json()
    assert body["kind"] == "Status" and "reason" not in body
    assert body["message"].startswith('resourceVersion: Invalid value: "abc"')


def test_legacy_watch_path(kube_client: KubeClient, ns: str) -> None:
    start = ok(kube_client.get(cm_path(ns)))["metadata"]["resourceVersion"]
    created(kube_client.post(cm_path(ns), configmap("legacy")))
    events = list(
        kube_client.watch(
            f"/api/v1/watch/namespaces/{ns}/configmaps",
            {"resourceVersion": start, "timeoutSeconds": 1},
        )
    )
    assert ("ADDED", "legacy") in _summary(events)


def test_send_initial_events(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(cm_path(ns), configmap("initial")))
    events = _events(
        kube_client,
        cm_path(ns),
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
    )
    assert ("ADDED", "initial") in _summary(events)
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks
    annotations = marks[0]["object"]["metadata"].get("annotations", {})
    assert annotations.get("k8s.io/initial-events-end") == "true"
