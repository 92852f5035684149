"""The batched port status watcher over the in-memory Neutron: one list call for many
ports, one ``on_change`` per change, ``GONE`` for a deleted port, slower polling later."""

from __future__ import annotations

import asyncio

from kuryr_k8s.controller.kuryrports import GONE
from kuryr_k8s.controller.portstatus import CHUNK, PortStatusWatcher
from kuryr_k8s.openstack.neutron import PortSpec
from kuryr_k8s.openstack.ports import NeutronPort
from unit.openstack.world import PROJECT, World, make_world


async def _ports(world: World, n: int) -> list[NeutronPort]:
    spec = PortSpec(world.network, world.subnet, PROJECT, (world.sg,), "node-a", ())
    made: list[NeutronPort] = []
    while len(made) < n:  # bulks of at most 100, as the pools make them
        made += await world.neutron.create_ports([spec] * min(100, n - len(made)))
    return made


def _lists(world: World) -> int:
    return world.fake.requests.count(("GET", "/ports"))


def _watcher(world: World, changed: list[str], **kw: float) -> PortStatusWatcher:
    return PortStatusWatcher(world.neutron, changed.append, **kw)


def _watch_down(watcher: PortStatusWatcher, ports: list[NeutronPort]) -> None:
    """As the reconciler does: the create's answer first, then watch until it changes."""
    for p in ports:
        watcher.seen(p.id, p.status)
        watcher.watch(p.id, f"ns/{p.id}")


async def test_many_ports_cost_one_list_and_each_change_is_told_once() -> None:
    world = make_world()
    ports = await _ports(world, 50)
    changed: list[str] = []
    watcher = _watcher(world, changed, interval=0)
    _watch_down(watcher, ports)
    before = len(world.fake.requests)
    assert await watcher.poll_once() == 0
    assert world.fake.requests[before:] == [("GET", "/ports")]  # one call for 50 ports
    assert changed == [] and watcher.watching == 50
    for p in ports[:2]:
        world.fake.ports[p.id]["status"] = "ACTIVE"
    assert await watcher.poll_once() == 2
    assert sorted(changed) == sorted(f"ns/{p.id}" for p in ports[:2])
    assert watcher.status(ports[0].id) == "ACTIVE" and watcher.status(ports[2].id) == "DOWN"
    assert watcher.watching == 48
    assert await watcher.poll_once() == 0
    assert len(changed) == 2  # told once, not at every poll
    assert world.fake.requests.count(("GET", f"/ports/{ports[0].id}")) == 0  # never per port


async def test_more_ports_than_a_chunk_are_listed_in_chunks() -> None:
    world = make_world(cidr="10.0.0.0/23")
    ports = await _ports(world, CHUNK + 5)
    watcher = _watcher(world, [], interval=0)
    _watch_down(watcher, ports)
    before = _lists(world)
    await watcher.poll_once()
    assert _lists(world) - before == 2


async def test_a_deleted_port_is_gone() -> None:
    world = make_world()
    doomed, kept = await _ports(world, 2)
    changed: list[str] = []
    watcher = _watcher(world, changed, interval=0)
    _watch_down(watcher, [doomed, kept])
    await world.neutron.delete_port(doomed.id)
    assert await watcher.poll_once() == 1
    assert changed == [f"ns/{doomed.id}"]
    assert watcher.status(doomed.id) == GONE and watcher.status(kept.id) == "DOWN"


async def test_polling_slows_down_after_fast_for() -> None:
    world = make_world()
    (p,) = await _ports(world, 1)
    fast = _watcher(world, [], interval=0, fast_for=3600, slow_interval=3600)
    slow = _watcher(world, [], interval=0, fast_for=0, slow_interval=3600)
    calls: list[int] = []
    for watcher in (fast, slow):
        _watch_down(watcher, [p])
        before = _lists(world)
        for _ in range(3):
            await watcher.poll_once()
        calls.append(_lists(world) - before)
    assert calls == [3, 1]  # young: due again at once (interval 0); old: not before 3600 s
    assert slow.watching == 1  # still watched


async def test_a_lazy_watch_waits_for_the_slow_interval_until_watched_eagerly() -> None:
    """Ports of pods not plugged yet are polled rarely; the daemon's report (the
    reconciler watches again, eagerly) makes them due at once and fast."""
    world = make_world()
    (p,) = await _ports(world, 1)
    changed: list[str] = []
    watcher = _watcher(world, changed, interval=0, slow_interval=3600)
    watcher.seen(p.id, p.status)
    watcher.watch(p.id, "ns/a", eager=False)
    before = _lists(world)
    assert await watcher.poll_once() == 0
    assert _lists(world) == before  # not due before the slow interval
    world.fake.ports[p.id]["status"] = "ACTIVE"
    watcher.watch(p.id, "ns/a", eager=False)  # watching lazily again changes nothing
    assert await watcher.poll_once() == 0 and _lists(world) == before
    watcher.watch(p.id, "ns/a")  # plugged: eager
    assert await watcher.poll_once() == 1 and changed == ["ns/a"]


async def test_nothing_watched_means_no_call_and_unwatch_or_forget_stop_it() -> None:
    world = make_world()
    a, b = await _ports(world, 2)
    watcher = _watcher(world, [], interval=0)
    before = len(world.fake.requests)
    assert await watcher.poll_once() == 0
    _watch_down(watcher, [a, b])
    watcher.unwatch(a.id)
    watcher.forget(b.id)
    assert watcher.status(b.id) is None and watcher.status(a.id) == "DOWN"
    assert await watcher.poll_once() == 0
    assert len(world.fake.requests) == before


async def test_a_status_seen_elsewhere_never_overrides_a_fresher_one() -> None:
    world = make_world()
    (p,) = await _ports(world, 1)
    watcher = _watcher(world, [], interval=0)
    _watch_down(watcher, [p])
    world.fake.ports[p.id]["status"] = "ACTIVE"
    await watcher.poll_once()
    watcher.seen(p.id, "DOWN")  # a stale copy of the port
    assert watcher.status(p.id) == "ACTIVE"


async def test_the_loop_tells_the_change_when_started() -> None:
    world = make_world()
    (p,) = await _ports(world, 1)
    told = asyncio.Event()
    watcher = PortStatusWatcher(world.neutron, lambda key: told.set(), interval=0.01)
    watcher.start()
    try:
        _watch_down(watcher, [p])
        world.fake.ports[p.id]["status"] = "ACTIVE"
        await asyncio.wait_for(told.wait(), 5)
        assert watcher.status(p.id) == "ACTIVE"
    finally:
        await watcher.stop()
    assert watcher.watching == 0
