"""EventRecorder: creation, aggregation of repeats, expiry, best-effort."""

from __future__ import annotations

import pytest

from kuryr_k8s.k8s import EVENTS, NODES, PODS, EventRecorder, KubeClient
from unit.k8s.fakeapi import FakeApi, FakeClock

pytestmark = pytest.mark.unit


async def events(client: KubeClient, ns: str = "ns") -> list[dict[str, object]]:
    return (await client.list_all(EVENTS, ns)).items


async def test_first_event_describes_object_and_source(
    client: KubeClient, clock: FakeClock
) -> None:
    pod = await client.create(PODS, {"metadata": {"name": "p", "namespace": "ns"}})
    rec = EventRecorder(client, "kuryr-controller", host="node-1", clock=clock)
    await rec.emit(pod, "PortCreated", "port abc", type="Normal")
    [ev] = await events(client)
    assert ev["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p",
        "namespace": "ns",
        "uid": pod["metadata"]["uid"],
        "resourceVersion": pod["metadata"]["resourceVersion"],
    }
    assert ev["source"] == {"component": "kuryr-controller", "host": "node-1"}
    assert (ev["reason"], ev["message"], ev["type"], ev["count"]) == (
        "PortCreated",
        "port abc",
        "Normal",
        1,
    )
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2024-01-01T00:00:00Z"


async def test_repeats_are_aggregated_into_count(client: KubeClient, clock: FakeClock) -> None:
    pod = await client.create(PODS, {"metadata": {"name": "p", "namespace": "ns"}})
    rec = EventRecorder(client, "kuryr-daemon", clock=clock)
    for _ in range(3):
        await rec.emit(pod, "FailedPlug", "no route", type="Warning")
        clock.advance(10)
    await rec.emit(pod, "FailedPlug", "other message", type="Warning")
    evs = sorted(await events(client), key=lambda e: str(e["message"]))
    assert [(e["message"], e["count"]) for e in evs] == [("no route", 3), ("other message", 1)]
    assert evs[0]["firstTimestamp"] == "2024-01-01T00:00:00Z"
    assert evs[0]["lastTimestamp"] == "2024-01-01T00:00:20Z"


async def test_expired_event_starts_a_new_series(client: KubeClient, clock: FakeClock) -> None:
    pod = await client.create(PODS, {"metadata": {"name": "p", "namespace": "ns"}})
    rec = EventRecorder(client, "c", clock=clock)
    await rec.emit(pod, "R", "m")
    [ev] = await events(client)
    await client.delete(EVENTS, ev["metadata"]["name"], "ns")  # type: ignore[index]
    clock.advance(1)
    await rec.emit(pod, "R", "m")
    [ev2] = await events(client)
    assert ev2["count"] == 1


async def test_cluster_scoped_objects_get_events_in_default(
    client: KubeClient, clock: FakeClock
) -> None:
    node = await client.create(NODES, {"metadata": {"name": "n1"}})
    await EventRecorder(client, "c", clock=clock).emit(node, "Registered", "hello")
    [ev] = await events(client, "default")
    assert "namespace" not in ev["involvedObject"]  # type: ignore[operator]


async def test_api_failure_is_swallowed(api: FakeApi, client: KubeClient, clock: FakeClock) -> None:
    pod = await client.create(PODS, {"metadata": {"name": "p", "namespace": "ns"}})
    api.fail_next(500, "InternalError")
    await EventRecorder(client, "c", clock=clock).emit(pod, "R", "m")
    assert await events(client) == []
