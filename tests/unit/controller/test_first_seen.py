"""The first sight of a pod (``kuryr_pod_wiring_seconds``' start) is its arrival in the
controller's cache, not the moment a reconciler gets to its key."""

from __future__ import annotations

import pytest

from kuryr_k8s.controller.kuryrports import FirstSeen
from kuryr_k8s.controller.pods import sighting
from kuryr_k8s.k8s.informer import Store
from unit.k8s.fakeapi import FakeClock

pytestmark = pytest.mark.unit


def pod(name: str, uid: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"nodeName": "node1", **spec},
    }


def test_a_pod_is_seen_when_it_reaches_the_cache_not_when_its_key_is_reconciled() -> None:
    clock = FakeClock()
    seen = FirstSeen(clock)
    store = Store()
    handler = sighting(store, seen.saw)
    handler(store.put(pod("web", "u-web")))
    clock.advance(9.5)  # the key waits in a burst's queue
    seen.saw("u-web")  # the reconciler's own sighting, when it gets to the key
    assert seen.since("u-web") == 9.5


def test_pods_that_need_no_port_are_not_tracked() -> None:
    seen = FirstSeen(FakeClock())
    store = Store()
    handler = sighting(store, seen.saw)
    handler(store.put(pod("host", "u-host", hostNetwork=True)))
    unscheduled = pod("pending", "u-pending")
    unscheduled["spec"] = {}
    handler(store.put(unscheduled))
    going = pod("going", "u-going")
    going["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"  # type: ignore[index]
    handler(store.put(going))
    handler("default/never-cached")
    assert [seen.since(u) for u in ("u-host", "u-pending", "u-going")] == [None, None, None]
