"""The k8s adapter against a real API server: the emulator, or a cluster via --kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi
from kuryr_k8s.k8s import (
    CRDS,
    EVENTS,
    LEASES,
    PODS,
    SERVICES,
    AlreadyExists,
    Conflict,
    EventRecorder,
    Gone,
    Informer,
    Invalid,
    KubeClient,
    LeaderElectionConfig,
    LeaderElector,
    NotFound,
    PatchType,
    Resource,
    WatchEvent,
    load_kubeconfig,
)
from kuryr_k8s.k8s import objects as o
from unit.k8s.fakeapi import FakeClock

pytestmark = pytest.mark.functional

WAIT = 30.0  # every condition here holds within a fraction of a second


@pytest.fixture
async def kube(kube_api: KubeApi) -> AsyncIterator[KubeClient]:
    settings = load_kubeconfig(Path(kube_api.kubeconfig))
    async with KubeClient.from_settings(settings) as client:
        yield client


def pod(name: str, **labels: str) -> o.Obj:
    container = {"name": "c", "image": "busybox"}
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [container]}}


async def test_crud_conflicts_and_errors(kube: KubeClient, kube_namespace: str) -> None:
    ns = kube_namespace
    created = await kube.create(PODS, pod("a"), ns)
    assert o.namespace(created) == ns and o.uid(created)
    with pytest.raises(AlreadyExists):
        await kube.create(PODS, pod("a"), ns)
    with pytest.raises(NotFound):
        await kube.get(PODS, "missing", ns)
    with pytest.raises(Invalid):
        await kube.create(PODS, {"metadata": {"name": "Bad_Name"}, "spec": {}}, ns)

    await kube.patch(PODS, "a", {"metadata": {"labels": {"x": "1"}}}, ns)
    with pytest.raises(Conflict):
        await kube.replace(PODS, created)  # stale resourceVersion
    fresh = await kube.get(PODS, "a", ns)
    fresh["metadata"]["labels"]["y"] = "2"
    replaced = await kube.replace(PODS, fresh)
    assert o.labels(replaced) == {"x": "1", "y": "2"}

    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}]
    await kube.patch(PODS, "a", ops, ns, patch_type=PatchType.JSON)
    strategic = {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
    patched = await kube.patch(PODS, "a", strategic, ns, patch_type=PatchType.STRATEGIC)
    assert patched["metadata"]["annotations"] == {"k": "v"}
    assert [c["image"] for c in patched["spec"]["containers"]] == ["busybox:2"]

    await kube.patch(PODS, "a", {"status": {"phase": "Running"}}, ns, subresource="status")
    status = await kube.get(PODS, "a", ns, subresource="status")
    assert status["status"]["phase"] == "Running"

    with pytest.raises(Conflict):
        await kube.delete(PODS, "a", ns, precondition_uid="not-the-uid")
    await kube.delete(PODS, "a", ns, grace_period_seconds=0, precondition_uid=o.uid(created))
    with pytest.raises(NotFound):
        await kube.get(PODS, "a", ns)


async def test_paging_and_selectors(kube: KubeClient, kube_namespace: str) -> None:
    for i in range(7):
        await kube.create(SERVICES, svc(f"s{i}", tier="a" if i % 2 else "b"), kube_namespace)
    page = await kube.list(SERVICES, kube_namespace, limit=3)
    assert len(page.items) == 3 and page.continue_token
    everything = await kube.list_all(SERVICES, kube_namespace, page_size=2)
    assert sorted(o.name(s) for s in everything.items) == [f"s{i}" for i in range(7)]
    tier_a = await kube.list_all(SERVICES, kube_namespace, label_selector="tier=a")
    assert sorted(o.name(s) for s in tier_a.items) == ["s1", "s3", "s5"]
    by_name = await kube.list_all(SERVICES, kube_namespace, field_selector="metadata.name=s4")
    assert [o.name(s) for s in by_name.items] == ["s4"]


def svc(name: str, **labels: str) -> o.Obj:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}]},
    }


async def test_watch_resumes_and_old_versions_are_gone(
    kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await kube.create(PODS, pod("before"), ns)
    start = (await kube.list_all(PODS, ns)).resource_version
    await kube.create(PODS, pod("after"), ns)
    await kube.delete(PODS, "before", ns, grace_period_seconds=0)
    seen: list[WatchEvent] = []
    async with asyncio.timeout(WAIT):
        async for ev in kube.watch(PODS, ns, resource_version=start, timeout_seconds=10):
            if ev.type != "BOOKMARK":
                seen.append(ev)
            if ev.type == "DELETED":
                break
    # A real server writes deletionTimestamp first, even with a grace period of 0, then
    # removes the pod (recorded: ../shared/k8s-real scenarios::pod_delete_grace).
    assert [(e.type, o.name(e.object)) for e in seen] == [
        ("ADDED", "after"),
        ("MODIFIED", "before"),
        ("DELETED", "before"),
    ]
    assert seen[1].object["metadata"]["deletionTimestamp"]
    assert seen[1].object["metadata"]["deletionGracePeriodSeconds"] == 0
    with pytest.raises(Gone):
        async with asyncio.timeout(WAIT):
            async for _ in kube.watch(PODS, ns, resource_version="1", timeout_seconds=5):
                pass


async def test_informer_follows_the_api(kube: KubeClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await kube.create(PODS, pod("one", app="x"), ns)
    informer = Informer(
        kube, PODS, namespace=ns, indexers={"app": lambda p: [o.labels(p).get("app", "")]}
    )
    changed = asyncio.Event()
    informer.add_handler(lambda key: changed.set())
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(WAIT):
            await informer.wait_synced()
        assert informer.store.keys() == [f"{ns}/one"]
        await kube.create(PODS, pod("two", app="x"), ns)
        await kube.delete(PODS, "one", ns, grace_period_seconds=0)
        async with asyncio.timeout(WAIT):
            while informer.store.keys() != [f"{ns}/two"]:
                changed.clear()
                await changed.wait()
        assert [o.name(p) for p in informer.store.by_index("app", "x")] == ["two"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_events_aggregate(kube: KubeClient, kube_namespace: str) -> None:
    target = await kube.create(PODS, pod("e"), kube_namespace)
    recorder = EventRecorder(kube, "kuryr-test", host="h1")
    for _ in range(3):
        await recorder.emit(target, "Tested", "it works", type="Normal")
    [ev] = (await kube.list_all(EVENTS, kube_namespace)).items
    assert ev["count"] == 3 and ev["involvedObject"]["uid"] == o.uid(target)
    assert ev["source"] == {"component": "kuryr-test", "host": "h1"}


async def test_leader_election(kube: KubeClient, kube_namespace: str) -> None:
    clock = FakeClock()
    cfg = LeaderElectionConfig(kube_namespace, "leader", "a", 15, 10, 2)
    a = LeaderElector(kube, cfg, clock=clock)
    b = LeaderElector(kube, LeaderElectionConfig(kube_namespace, "leader", "b"), clock=clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(16)
    assert await b.try_acquire_or_renew()
    lease = await kube.get(LEASES, "leader", kube_namespace)
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    await b.release()
    assert await a.try_acquire_or_renew()


async def test_custom_resources(kube: KubeClient, kube_namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.kuryr.test"
    widgets = Resource(group, "v1", "widgets", "Widget", namespaced=True)
    crd = {
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    await kube.create(CRDS, crd)
    try:
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    await kube.list(widgets, kube_namespace)
                    break
                except NotFound:
                    await asyncio.sleep(0.1)
        w = await kube.create(
            widgets, {"metadata": {"name": "w"}, "spec": {"a": 1}}, kube_namespace
        )
        assert w["apiVersion"] == f"{group}/v1" and w["kind"] == "Widget"
        await kube.patch(
            widgets, "w", {"status": {"ok": True}}, kube_namespace, subresource="status"
        )
        got = await kube.get(widgets, "w", kube_namespace)
        assert got["spec"] == {"a": 1} and got["status"] == {"ok": True}
    finally:
        await kube.delete(CRDS, f"widgets.{group}")


async def test_leader_election_run_hands_over_on_release(
    kube: KubeClient, kube_namespace: str
) -> None:
    leading: list[str] = []
    started = {who: asyncio.Event() for who in ("a", "b")}

    def elector(who: str) -> LeaderElector:
        cfg = LeaderElectionConfig(kube_namespace, "run", who, 3.0, 2.0, 0.2)
        return LeaderElector(kube, cfg)

    def lead(who: str) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            leading.append(who)
            started[who].set()
            await asyncio.Event().wait()  # lead until cancelled

        return body

    a = asyncio.create_task(elector("a").run(lead("a")))
    async with asyncio.timeout(WAIT):
        await started["a"].wait()
    b = asyncio.create_task(elector("b").run(lead("b")))
    await asyncio.sleep(1.0)  # b keeps retrying meanwhile: it must not lead while a renews
    assert leading == ["a"]
    a.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await a
    async with asyncio.timeout(WAIT):
        await started["b"].wait()  # released: b takes over without waiting for expiry
    assert leading == ["a", "b"]
    b.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await b
    lease = await kube.get(LEASES, "run", kube_namespace)
    assert lease["spec"].get("holderIdentity") in (None, "")
