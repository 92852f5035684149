"""Small builders and assertions shared by the conformance tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from fixtures.kubeapi import KubeClient, unique_name

Obj = dict[str, Any]

NO_SCHEDULER = "kuryr-conformance-no-scheduler"
"""A schedulerName no real scheduler serves, so pods stay unbound on real clusters too."""


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "schedulerName": NO_SCHEDULER,
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}],
            **spec,
        },
    }
    return body


def configmap(name: str, labels: dict[str, str] | None = None, **meta: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "data": {"k": "v"},
    }


def pods_path(ns: str, name: str = "", sub: str = "") -> str:
    path = f"/api/v1/namespaces/{ns}/pods"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def cm_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def created(resp: httpx.Response) -> Obj:
    assert resp.status_code == 201, resp.text
    body: Obj = resp.json()
    return body


def ok(resp: httpx.Response) -> Obj:
    assert resp.status_code == 200, resp.text
    body: Obj = resp.json()
    return body


def status_of(resp: httpx.Response, code: int, reason: str) -> Obj:
    """Assert a Status error answer with this HTTP code and reason."""
    assert resp.status_code == code, resp.text
    body: Obj = resp.json()
    assert body["kind"] == "Status", body
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason, body
    return body


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


def make_cm(client: KubeClient, ns: str, prefix: str = "cm", **meta: Any) -> Obj:
    return created(client.post(cm_path(ns), configmap(unique_name(prefix), **meta)))
