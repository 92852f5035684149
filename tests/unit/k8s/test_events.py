"""EventRecorder: creation, aggregation of repeats, expiry, best-effort."""

from __future__ import annotations

import pytest

from kuryr_k8s.k8s import EVENTS, NODES, PODS, EventRecorder, KubeClient
from kuryr_k8s.k8s.events import QueuedEvents
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


@pytest.mark.mock_only(
    "asserts that nothing was sent before flush(); over a socket the sender task runs while "
    "the test's own list request is in flight"
)
async def test_queued_events_return_at_once_and_arrive_in_order(client: KubeClient) -> None:
    pod = await client.create(PODS, {"metadata": {"name": "p", "namespace": "ns"}})
    queued = QueuedEvents(EventRecorder(client, "c"))  # real time: distinct Event names
    for i in range(3):
        await queued.emit(pod, f"R{i}", "m")
    assert await events(client) == []  # nothing sent on the caller's path
    await queued.flush()
    assert [e["reason"] for e in await events(client)] == ["R0", "R1", "R2"]
    await queued.emit(pod, "R0", "m")  # a repeat is still aggregated
    await queued.flush()
    assert sorted((e["reason"], e["count"]) for e in await events(client)) == [
        ("R0", 2),
        ("R1", 1),
        ("R2", 1),
    ]


async def test_a_full_event_queue_drops_instead_of_blocking(client: KubeClient) -> None:
    pod = await client.create(PODS, {"metadata": {"name": "p", "namespace": "ns"}})
    queued = QueuedEvents(EventRecorder(client, "c"), maxsize=2)
    for i in range(4):
        await queued.emit(pod, f"R{i}", "m")
    await queued.flush()
    assert [e["reason"] for e in await events(client)] == ["R0", "R1"]
