"""Informer: initial sync, watch updates, resume, bookmarks, 410 re-list, reconnect backoff."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

import pytest

from kuryr_k8s.k8s import LEASES, PODS, Backoff, Informer, KubeClient
from kuryr_k8s.k8s import objects as o
from unit.k8s.fakeapi import FakeApi, FakeClock

pytestmark = pytest.mark.unit

WAIT = 5.0  # generous: each condition below holds within milliseconds


def pod(name: str, node: str = "n1") -> o.Obj:
    return {"metadata": {"name": name, "namespace": "ns", "labels": {"node": node}}}


class Keys:
    """Collects the keys delivered to a handler."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, key: str) -> None:
        self.seen.append(key)
        self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Keys]:
    keys = Keys()
    informer.add_handler(keys)
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(WAIT):
            await informer.wait_synced()
        yield keys
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(client: KubeClient, clock: FakeClock, **kw: object) -> Informer:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    return Informer(client, PODS, clock=clock, backoff=backoff, page_size=2, **kw)  # type: ignore[arg-type]


def list_calls(api: FakeApi) -> int:
    return sum(
        1
        for r in api.requests
        if r.method == "GET" and "watch" not in r.url.params and r.url.path.endswith("/pods")
    )


async def test_sync_fills_store_and_index_and_reports_every_key(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    for i, node in enumerate(["n1", "n2", "n1"]):
        await client.create(PODS, pod(f"p{i}", node))
    informer = make(client, clock, indexers={"node": lambda obj: [o.labels(obj).get("node", "")]})
    async with running(informer) as keys:
        assert sorted(informer.store.keys()) == ["ns/p0", "ns/p1", "ns/p2"]
        assert [o.name(p) for p in informer.store.by_index("node", "n1")] == ["p0", "p2"]
        assert sorted(keys.seen) == ["ns/p0", "ns/p1", "ns/p2"]


async def test_watch_updates_store_and_delivers_only_keys(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    informer = make(client, clock, indexers={"node": lambda obj: [o.labels(obj)["node"]]})
    async with running(informer) as keys:
        await client.create(PODS, pod("a"))
        await keys.until(lambda: "ns/a" in informer.store)
        await client.patch(PODS, "a", {"metadata": {"labels": {"node": "n2"}}}, "ns")
        await keys.until(lambda: informer.store.by_index("node", "n2") != [])
        assert informer.store.by_index("node", "n1") == []
        await client.delete(PODS, "a", "ns")
        await keys.until(lambda: "ns/a" not in informer.store)
        assert keys.seen == ["ns/a", "ns/a", "ns/a"]
        assert informer.resource_version == str(api.rv)


async def test_resumes_watch_from_last_version_without_relisting(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    informer = make(client, clock)
    async with running(informer) as keys:
        await client.create(PODS, pod("a"))
        await keys.until(lambda: "ns/a" in informer.store)
        seen_rv = informer.resource_version
        await api.end_watches()  # the server closed the stream (timeoutSeconds)
        await client.create(PODS, pod("b"))  # happens while no watch is open
        await keys.until(lambda: "ns/b" in informer.store)
        watches = [r for r in api.requests if r.url.params.get("watch") == "true"]
        assert watches[-1].url.params["resourceVersion"] == seen_rv
        assert list_calls(api) == 1
        assert keys.seen == ["ns/a", "ns/b"]


async def test_bookmark_moves_resource_version(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    informer = make(client, clock)
    async with running(informer):
        await client.create(LEASES, {"metadata": {"name": "other"}})  # another kind
        async with asyncio.timeout(WAIT):  # over a socket the watch may not be open yet
            while not api.watching():  # noqa: ASYNC110 (no event for it)
                await asyncio.sleep(0.01)
        await api.bookmark()
        async with asyncio.timeout(WAIT):
            while informer.resource_version != str(api.rv):  # noqa: ASYNC110 (no event for it)
                await asyncio.sleep(0.01)
        assert len(informer.store) == 0


async def test_gone_triggers_full_relist_and_reports_missed_changes(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    await client.create(PODS, pod("stays"))
    await client.create(PODS, pod("goes"))
    informer = make(client, clock)
    async with running(informer) as keys:
        keys.seen.clear()
        # Changes the watch never delivers: the history is compacted before it reconnects.
        api.hold_watches()
        await api.end_watches()
        await client.delete(PODS, "goes", "ns")
        await client.create(PODS, pod("new"))
        api.compact()
        api.release_watches()
        await keys.until(lambda: "ns/new" in informer.store)
        assert sorted(informer.store.keys()) == ["ns/new", "ns/stays"]
        assert sorted(set(keys.seen)) == ["ns/goes", "ns/new"]
        assert list_calls(api) == 2


async def test_reconnects_with_capped_jittered_backoff(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    informer = make(client, clock)
    async with running(informer) as keys:
        api.hold_watches()
        await api.end_watches()
        api.fail_next(503, "ServiceUnavailable", method="GET", times=6)
        await client.create(PODS, pod("later"))
        api.release_watches()
        await keys.until(lambda: "ns/later" in informer.store)
    delays = clock.sleeps[:6]
    assert len(delays) == 6
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


async def test_handler_exception_does_not_stop_the_informer(
    client: KubeClient, clock: FakeClock
) -> None:
    informer = make(client, clock)

    def broken(key: str) -> None:
        raise RuntimeError("boom")

    informer.add_handler(broken)
    async with running(informer) as keys:
        await client.create(PODS, pod("a"))
        await keys.until(lambda: "ns/a" in informer.store)
