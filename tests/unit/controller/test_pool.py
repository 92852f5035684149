"""Port pools over the in-memory Neutron: batches, claims, recycling, rebuild, races."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pytest

from kuryr_k8s.controller.pool import PoolCollector, PooledPortProvider, make_provider
from kuryr_k8s.controller.poolset import MAX_CANDIDATES
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import ResourceNotReady, TemporaryError
from kuryr_k8s.openstack.neutron import (
    IpExhausted,
    Neutron,
    NeutronUnavailable,
    PortSpec,
    QuotaExceeded,
)
from kuryr_k8s.openstack.provider import PlainPortProvider
from unit.openstack.world import PROJECT, World, make_world

SETTINGS = VifPoolSettings(
    enabled=True, ports_pool_min=2, ports_pool_batch=4, ports_pool_max=6,
    ports_pool_update_frequency=3600,
)  # fmt: skip


class Owners:
    """The live KuryrPort pod uids and the port ids their statuses name, as the reconcile
    side would report them."""

    def __init__(self) -> None:
        self.uids: set[str] = set()
        self.refs: dict[str, str] = {}

    async def __call__(self) -> Collection[str]:
        return set(self.uids)

    async def references(self) -> Mapping[str, str]:
        return dict(self.refs)

    def name(self, uid: str, port_id: str) -> None:
        """The KuryrPort of ``uid`` is live and its status names ``port_id``."""
        self.uids.add(uid)
        self.refs[port_id] = uid


async def _pool(
    world: World, owners: Owners | None = None, settings: VifPoolSettings = SETTINGS
) -> PooledPortProvider:
    owners = owners or Owners()
    provider = PooledPortProvider(
        world.neutron, world.tagging, settings, owners, live_refs=owners.references
    )
    await provider.rebuild()
    return provider


async def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (bounded) for background work that waits for quiet (``poolset.QUIET``)."""
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("background work did not happen")


def _writes(world: World, port_id: str) -> int:
    """Neutron writes to one port (updates and tag replacements)."""
    return sum(
        1 for m, path in world.fake.requests if m == "PUT" and path.startswith(f"/ports/{port_id}")
    )


async def _settle() -> None:
    """Let background refills run (they are plain tasks on this loop)."""
    for _ in range(20):
        await asyncio.sleep(0)


def _free(world: World) -> list[dict[str, Any]]:
    return [p for p in world.fake.ports.values() if not p["device_id"]]


async def test_not_ready_until_rebuilt() -> None:
    world = make_world()
    provider = PooledPortProvider(world.neutron, world.tagging, SETTINGS, Owners())
    with pytest.raises(ResourceNotReady):
        await provider.acquire(world.request(), "uid-1", "ns/pod")
    with pytest.raises(ResourceNotReady):
        await provider.release("x", "uid-1")
    await provider.start()
    try:
        assert provider.ready
    finally:
        await provider.stop()
    assert not provider.ready


async def test_first_acquire_creates_a_batch_in_one_bulk_call() -> None:
    world = make_world()
    provider = await _pool(world)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert world.fake.requests.count(("POST", "/ports")) == 1
    assert len(world.fake.ports) == SETTINGS.ports_pool_batch
    assert set(port.tags) == set(world.tagging.in_use("uid-1"))
    assert (port.device_id, port.name, port.binding_host_id) == ("uid-1", "ns/pod", "node-a")
    free = _free(world)
    assert len(free) == SETTINGS.ports_pool_batch - 1
    for p in free:
        assert set(p["tags"]) == set(world.tagging.free(world.request().pool_key))
        assert p["binding:host_id"] == "node-a"
    assert provider.sizes() == {world.request().pool_key: 3}


async def test_pool_refills_in_the_background_below_min_once_quiet() -> None:
    world = make_world()
    provider = await _pool(world)
    for i in range(3):
        await provider.acquire(world.request(), f"uid-{i}", f"ns/p{i}")
    await _settle()
    # 4 created, 3 taken -> 1 free < min 2; but pods were just served: the refill waits
    assert provider.busy()
    assert world.fake.requests.count(("POST", "/ports")) == 1
    key = world.request().pool_key
    await _until(lambda: provider.sizes()[key] == 5)  # then one more batch of 4
    assert not provider.busy()
    assert world.fake.requests.count(("POST", "/ports")) == 2


async def test_refills_follow_recent_demand() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 2, 4, 0, 3600))
    await asyncio.gather(
        *(provider.acquire(world.request(), f"uid-{i}", f"ns/p{i}") for i in range(12))
    )
    key = world.request().pool_key
    # 12 acquires in the window: the pool aims for 12 free ports, not ports_pool_min
    await _until(lambda: provider.sizes()[key] >= 12)
    assert provider.sizes()[key] == 12


async def test_acquire_is_idempotent_across_a_crash() -> None:
    world = make_world()
    owners = Owners()
    first = await (await _pool(world, owners)).acquire(world.request(), "uid-1", "ns/pod")
    owners.uids.add("uid-1")
    restarted = await _pool(world, owners)
    again = await restarted.acquire(world.request(), "uid-1", "ns/pod")
    assert again.id == first.id
    assert len([p for p in world.fake.ports.values() if p["device_id"]]) == 1


async def test_release_recycles_the_port_without_a_neutron_call() -> None:
    world = make_world()
    provider = await _pool(world)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    before = provider.sizes()[world.request().pool_key]
    calls = len(world.fake.requests)
    await provider.release(port.id, "uid-1")
    assert len(world.fake.requests) == calls  # in memory only
    assert provider.sizes()[world.request().pool_key] == before + 1
    assert await provider.find("uid-1") is None
    assert await provider.known(port.id, "uid-1") is not None  # a free port: adoptable
    await provider.release(port.id, "uid-1")  # idempotent (still the owner's: adopted)
    await provider.release(port.id, "uid-1")
    assert provider.sizes()[world.request().pool_key] == before + 1
    assert len(world.fake.requests) == calls
    # its marks are reset later, by the writer
    raw = world.fake.ports[port.id]
    assert raw["device_id"] == "uid-1"
    await provider.marks.flush()
    raw = world.fake.ports[port.id]
    assert (raw["device_id"], raw["name"]) == ("", "")
    assert set(raw["tags"]) == set(world.tagging.free(world.request().pool_key))
    # the recycled port serves the next pods (after the others: it is cooling down)
    taken = [await provider.acquire(world.request(), f"n{i}", "x") for i in range(before + 1)]
    assert [p.id for p in taken][-1] == port.id


async def test_a_released_port_goes_to_the_pool_of_the_sgs_it_has() -> None:
    world = make_world()
    provider = await _pool(world)
    await provider.acquire(world.request(), "warm", "x")
    borrowed = await provider.acquire(world.request(sgs=(world.sg2,)), "uid-1", "ns/pod")
    assert world.fake.ports[borrowed.id]["security_groups"] == [world.sg2]  # never deferred
    sg1_key, sg2_key = world.request().pool_key, world.request(sgs=(world.sg2,)).pool_key
    before = provider.sizes()
    calls = len(world.fake.requests)
    await provider.release(borrowed.id, "uid-1")
    assert len(world.fake.requests) == calls  # no reset of its SGs
    assert provider.sizes()[sg2_key] == before.get(sg2_key, 0) + 1
    assert provider.sizes()[sg1_key] == before[sg1_key]
    # the next pod asking for sg2 gets it as it is: no SG update
    again = await provider.acquire(world.request(sgs=(world.sg2,)), "uid-2", "ns/other")
    assert again.id == borrowed.id and again.security_groups == (world.sg2,)
    assert _writes(world, borrowed.id) == 1  # the borrow's SG update only
    await provider.marks.flush()
    assert world.fake.ports[borrowed.id]["security_groups"] == [world.sg2]
    assert world.fake.ports[borrowed.id]["device_id"] == "uid-2"


async def test_release_above_max_deletes() -> None:
    world = make_world()
    settings = VifPoolSettings(True, 0, 2, 2, 3600)
    provider = await _pool(world, settings=settings)
    ports = [await provider.acquire(world.request(), f"u{i}", "x") for i in range(4)]
    assert provider.sizes()[world.request().pool_key] == 0
    for i, port in enumerate(ports):
        await provider.release(port.id, f"u{i}")
    assert provider.sizes()[world.request().pool_key] == 2
    assert len(world.fake.ports) == 2


async def test_rebuild_finds_free_ports_and_skips_used_ones() -> None:
    world = make_world()
    owners = Owners()
    provider = await _pool(world, owners, settings=VifPoolSettings(True, 0, 6, 0, 3600))
    await provider.acquire(world.request(), "warm", "x")  # a batch of 6
    named = await provider.acquire(world.request(), "alive", "ns/a")
    marked = await provider.acquire(world.request(), "marked", "ns/m")
    gone = await provider.acquire(world.request(), "gone", "ns/g")
    crashed = await provider.acquire(world.request(), "crashed", "ns/c")
    owners.name("warm", (await provider.find("warm")).id)  # type: ignore[union-attr]
    owners.name("alive", named.id)
    owners.uids.add("marked")  # live, but its status write never happened
    await provider.marks.flush()  # marks of all four claims are in Neutron now
    crash = world.fake.ports[crashed.id]  # ... except the last one (crash before marks)
    crash.update(device_id="", name="", tags=list(world.tagging.free(world.request().pool_key)))
    owners.uids.add("crashed")
    free_ids = {p["id"] for p in _free(world)}
    assert crashed.id in free_ids and named.id not in free_ids
    calls = len(world.fake.requests)
    restarted = await _pool(world, owners)
    assert world.fake.requests[calls:] == [("GET", "/ports")]  # one list, no writes
    key = world.request().pool_key
    assert restarted.sizes() == {key: len(free_ids)}
    assert (await restarted.find("alive")).id == named.id  # type: ignore[union-attr]
    assert (await restarted.find("marked")).id == marked.id  # type: ignore[union-attr]
    assert await restarted.find("gone") is None and await restarted.find("crashed") is None
    assert restarted.owns(named.id) and restarted.owns(marked.id) and not restarted.owns(gone.id)
    taken = {
        (await restarted.acquire(world.request(), f"new-{i}", "x")).id for i in range(len(free_ids))
    }
    assert taken == free_ids
    assert named.id not in taken and marked.id not in taken and gone.id not in taken
    assert world.fake.ports[gone.id]["device_id"] == "gone"  # an orphan: GC's business


async def test_rebuild_trusts_the_kuryrport_over_stale_marks() -> None:
    """Marks lag the ledger: a port claimed (status written) but whose marks still say
    free, or still name its previous (dead) owner, is the KuryrPort's pod's."""
    world = make_world()
    owners = Owners()
    provider = await _pool(world, owners)
    await provider.acquire(world.request(), "warm", "x")
    await provider.marks.flush()
    unmarked = await provider.acquire(world.request(), "a", "ns/a")
    assert world.fake.ports[unmarked.id]["device_id"] == ""  # marks not written yet
    previous = (await provider.find("warm")).id  # type: ignore[union-attr]
    await provider.release(previous, "warm")  # dead now; its marks are still in Neutron
    relabelled = await provider.known(previous, "b")  # b's status names it
    assert relabelled is not None
    assert world.fake.ports[previous]["device_id"] == "warm"
    owners.name("a", unmarked.id)
    owners.name("b", previous)
    restarted = await _pool(world, owners)
    assert (await restarted.find("a")).id == unmarked.id  # type: ignore[union-attr]
    assert (await restarted.find("b")).id == previous  # type: ignore[union-attr]
    taken = [await restarted.acquire(world.request(), f"n{i}", "x") for i in range(2)]
    assert {unmarked.id, previous}.isdisjoint(p.id for p in taken)
    await restarted.marks.flush()
    assert world.fake.ports[unmarked.id]["device_id"] == "a"
    assert world.fake.ports[previous]["device_id"] == "b"


async def test_rebuild_repairs_half_flipped_ports() -> None:
    world = make_world()
    owners = Owners()
    owners.uids.add("live")
    key = world.request().pool_key

    def spec(tags: tuple[str, ...], device_id: str = "", name: str = "") -> PortSpec:
        return PortSpec(
            world.network, world.subnet, PROJECT, (world.sg,), "node-a", tags, name, device_id
        )

    mid_release_dead, mid_release_live, unnamed = await world.neutron.create_ports(
        [
            spec(world.tagging.in_use("dead"), name="ns/dead"),
            spec(world.tagging.in_use("live"), name="ns/live"),
            spec((world.tagging.cluster_tag,)),
        ]
    )
    calls = len(world.fake.requests)
    provider = await _pool(world, owners)
    assert world.fake.requests[calls:] == [("GET", "/ports")]  # repairs are marks: later
    assert provider.sizes() == {key: 2}
    assert (await provider.find("live")).id == mid_release_live.id  # type: ignore[union-attr]
    await provider.marks.flush()
    for port in (mid_release_dead, unnamed):
        raw = world.fake.ports[port.id]
        assert set(raw["tags"]) == set(world.tagging.free(key))
        assert raw["name"] == ""
    raw = world.fake.ports[mid_release_live.id]
    assert set(raw["tags"]) == set(world.tagging.in_use("live"))
    assert raw["device_id"] == "live"


async def test_the_ledger_never_hands_one_port_to_two_owners() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 3, 0, 3600))
    held: dict[str, str] = {}
    for round_ in range(4):
        ports = await asyncio.gather(
            *(provider.acquire(world.request(), f"u{round_}-{i}", "x") for i in range(6))
        )
        for i, port in enumerate(ports):
            assert port.id not in held, f"{port.id} handed to {held.get(port.id)} and again"
            held[port.id] = f"u{round_}-{i}"
        # release half of them: they go back and are handed out again, never shared
        for i, port in enumerate(ports[::2]):
            await provider.release(port.id, f"u{round_}-{2 * i}")
            del held[port.id]
    for port_id, uid in held.items():
        assert provider.ledger.owner_of(port_id) == uid
        assert (await provider.known(port_id, "intruder")) is None
    assert len({p for p in held}) == len(held) == 12
    await provider.marks.flush()
    assert {world.fake.ports[pid]["device_id"] for pid in held} == set(held.values())


async def test_a_port_named_by_two_kuryrports_goes_to_one() -> None:
    world = make_world()
    owners = Owners()
    provider = await _pool(world, owners)
    port = await provider.acquire(world.request(), "first", "x")
    owners.name("first", port.id)
    owners.uids.add("second")  # its status names the same port (a hand edit, a bug)
    restarted = await _pool(world, owners)
    assert (await restarted.known(port.id, "second")) is None
    mine = await restarted.known(port.id, "first")
    assert mine is not None and mine.id == port.id
    other = await restarted.acquire(world.request(), "second", "y")
    assert other.id != port.id
    # a free port named by two statuses written after the rebuild: the first asker only
    free = (await restarted.acquire(world.request(), "third", "z")).id
    await restarted.release(free, "third")
    assert (await restarted.known(free, "fourth")) is not None
    assert (await restarted.known(free, "fifth")) is None


async def test_a_claim_ignores_neutron_bumping_the_revision() -> None:
    world = make_world()
    provider = await _pool(world)
    await provider.acquire(world.request(), "first", "x")
    free = [p["id"] for p in _free(world)]
    for pid in free:
        world.fake.touch(pid)  # binding completed after we read them
    calls = len(world.fake.requests)
    port = await provider.acquire(world.request(), "second", "x")
    assert port.id in free
    assert len(world.fake.requests) == calls  # a warm acquire: no Neutron call at all
    await provider.marks.flush()
    assert world.fake.ports[port.id]["device_id"] == "second"


async def test_concurrent_acquires_never_share_a_port() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 4, 0, 3600))
    ports = await asyncio.gather(
        *(provider.acquire(world.request(), f"uid-{i}", f"ns/p{i}") for i in range(20))
    )
    assert len({p.id for p in ports}) == 20
    assert len({p.fixed_ips[0].ip_address for p in ports}) == 20
    assert {p.device_id for p in ports} == {f"uid-{i}" for i in range(20)}
    # waiters are batched together: far fewer bulk creates than pods
    assert world.fake.requests.count(("POST", "/ports")) <= 3


async def test_a_sibling_pool_with_other_sgs_lends_a_port() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 1, 0, 3600))
    port = await provider.acquire(world.request(), "a", "x")
    await provider.release(port.id, "a")
    other = await provider.acquire(world.request(sgs=(world.sg2,)), "b", "y")
    assert other.id == port.id
    assert other.security_groups == (world.sg2,)
    assert world.fake.requests.count(("POST", "/ports")) == 1


async def test_ip_exhaustion_reaches_the_caller_and_keeps_the_pool_usable() -> None:
    world = make_world(cidr="10.0.0.0/29")  # 5 addresses
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 3, 0, 3600))
    ports = [await provider.acquire(world.request(), f"u{i}", "x") for i in range(5)]
    # the second batch of 3 did not fit in the 2 addresses left: each pod got its own
    assert len({p.fixed_ips[0].ip_address for p in ports}) == 5
    with pytest.raises(IpExhausted, match="No more IP addresses"):
        await provider.acquire(world.request(), "u5", "x")
    await provider.release(ports[0].id, "u0")
    assert (await provider.acquire(world.request(), "u5", "x")).id == ports[0].id


async def test_quota_smaller_than_a_batch_still_serves_pods() -> None:
    world = make_world(port_quota=2)
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 5, 0, 3600))
    a = await provider.acquire(world.request(), "a", "x")
    b = await provider.acquire(world.request(), "b", "x")
    assert a.id != b.id
    with pytest.raises(QuotaExceeded, match="Quota exceeded"):
        await provider.acquire(world.request(), "c", "x")


async def test_failed_refill_is_counted_not_raised() -> None:
    world = make_world()
    provider = await _pool(world)
    await provider.acquire(world.request(), "a", "x")
    await provider.acquire(world.request(), "b", "x")
    world.fake.fail_next("POST", "/ports", 503)
    await provider.acquire(world.request(), "c", "x")  # 1 free < 3 (demand): refill
    await _until(lambda: provider.refill_errors == 1)
    assert world.fake.requests.count(("POST", "/ports")) == 2  # the batch and the failure
    await provider.maintain_once()
    assert provider.sizes()[world.request().pool_key] >= SETTINGS.ports_pool_min


async def test_temporary_error_while_borrowing_keeps_the_port_in_a_pool() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 2, 0, 3600))
    await provider.acquire(world.request(), "a", "x")
    (spare,) = [p["id"] for p in _free(world)]
    world.fake.fail_next("PUT", "/ports/", 503)  # the SG update of the borrowed port
    with pytest.raises(NeutronUnavailable):
        await provider.acquire(world.request(sgs=(world.sg2,)), "b", "x")
    assert await provider.find("b") is None
    assert provider.owns(spare)  # still free in a pool, not lost
    assert sum(provider.sizes().values()) == 1
    port = await provider.acquire(world.request(sgs=(world.sg2,)), "b", "x")
    assert (port.id, port.device_id, port.security_groups) == (spare, "b", (world.sg2,))
    assert world.fake.requests.count(("POST", "/ports")) == 1


async def test_maintenance_trims_to_max_and_forgets_deleted_ports() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 1, 8, 3, 3600))
    port = await provider.acquire(world.request(), "a", "x")
    assert provider.sizes()[world.request().pool_key] == 7
    await provider.maintain_once()
    assert provider.sizes()[world.request().pool_key] == 3
    assert len(world.fake.ports) == 4
    free = [p["id"] for p in _free(world)]
    provider.forget(free[0])
    assert provider.sizes()[world.request().pool_key] == 2
    assert set(provider.forget_node("node-a")) == set(free[1:])
    assert provider.sizes() == {}
    assert port.id in world.fake.ports


async def test_pool_sizes_are_exported() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    world = make_world()
    provider = await _pool(world)
    await provider.acquire(world.request(), "a", "x")
    registry = CollectorRegistry()
    registry.register(PoolCollector(provider))
    text = generate_latest(registry).decode()
    assert f'kuryr_port_pool_free{{network="{world.network}",node="node-a"}} 3.0' in text


async def test_pool_disabled_is_the_plain_provider() -> None:
    world = make_world()
    off = make_provider(world.neutron, world.tagging, VifPoolSettings(), Owners())
    on = make_provider(world.neutron, world.tagging, SETTINGS, Owners())
    assert isinstance(off, PlainPortProvider) and not off.ready
    assert isinstance(on, PooledPortProvider) and not on.ready
    await off.start()
    assert off.ready


async def test_ports_deleted_behind_our_back_are_dropped_when_borrowed() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 3, 0, 3600))
    await provider.acquire(world.request(), "first", "x")
    stale = [p["id"] for p in _free(world)]
    for pid in stale:  # deleted outside the controller
        del world.fake.ports[pid]
    port = await provider.acquire(world.request(sgs=(world.sg2,)), "second", "x")
    assert port.id not in stale and port.id in world.fake.ports
    assert not any(provider.owns(pid) for pid in stale)


async def test_a_pool_of_vanished_ports_ends_in_a_temporary_error() -> None:
    world = make_world()
    settings = VifPoolSettings(True, 0, MAX_CANDIDATES + 1, 0, 3600)
    provider = await _pool(world, settings=settings)
    await provider.acquire(world.request(), "first", "x")
    stale = [p["id"] for p in _free(world)]
    assert len(stale) == MAX_CANDIDATES
    for pid in stale:
        del world.fake.ports[pid]
    with pytest.raises(TemporaryError, match="could be claimed"):
        await provider.acquire(world.request(sgs=(world.sg2,)), "second", "x")
    assert not any(provider.owns(pid) for pid in stale)
    assert await provider.find("second") is None
    assert len(world.fake.ports) == 1


async def test_find_never_takes_or_creates_a_port() -> None:
    world = make_world()
    provider = await _pool(world)
    assert await provider.find("nobody") is None
    assert world.fake.ports == {}
    port = await provider.acquire(world.request(), "uid-1", "x")
    found = await provider.find("uid-1")
    assert found is not None and found.id == port.id


async def test_a_bulk_never_asks_for_more_addresses_than_are_left() -> None:
    world = make_world(cidr="10.0.0.0/29")  # 5 addresses
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 4, 0, 3600))
    await provider.acquire(world.request(), "a", "x")  # bulk of 4
    for uid in "bcd":
        await provider.acquire(world.request(), uid, "x")
    failed_before = world.neutron.stats.errors[("create_ports", "IpExhausted")]
    await provider.acquire(world.request(), "e", "x")  # 1 left: a bulk of 1, not of 4
    assert world.neutron.stats.errors[("create_ports", "IpExhausted")] == failed_before == 0
    assert len(world.fake.ports) == 5


async def test_where_ip_availability_is_forbidden_pools_create_one_port_per_post() -> None:
    # no free count: no bulk can be sized safely, so none is sent (addresses.py)
    world = make_world()
    provider = await _pool(world)
    world.fake.fail_next(
        "GET", "/network-ip-availabilities", 403, "PolicyNotAuthorized", times=1000
    )
    port = await provider.acquire(world.request(), "a", "x")
    assert port.device_id == "a"
    await provider.acquire(world.request(), "b", "x")
    await provider.stop()
    assert len(world.fake.ports) >= 2
    assert world.fake.requests.count(("POST", "/ports")) == len(world.fake.ports)


async def test_warm_fills_a_nodes_pool_before_its_first_pod() -> None:
    world = make_world()
    provider = await _pool(world)
    assert await provider.warm(world.request(node="node-b")) == SETTINGS.ports_pool_batch
    assert await provider.warm(world.request(node="node-b")) == SETTINGS.ports_pool_batch
    assert world.fake.requests.count(("POST", "/ports")) == 1
    port = await provider.acquire(world.request(node="node-b"), "a", "x")
    assert port.binding_host_id == "node-b"
    assert world.fake.requests.count(("POST", "/ports")) == 1


async def test_marks_follow_a_claim_after_the_burst_not_during_it() -> None:
    """The claim is in memory; Neutron's marks follow once pods stop waiting (or at a
    flush), and a release that follows at once ends with the pool's marks, written at
    most once (here: never, Neutron already shows them)."""
    world = make_world()
    provider = PooledPortProvider(world.neutron, world.tagging, SETTINGS, Owners(), mark_delay=3600)
    await provider.start()
    try:
        await provider.acquire(world.request(), "warm", "x")  # fills the pool
        await provider.marks.flush()
        port = await provider.acquire(world.request(), "uid-1", "ns/pod")
        assert set(port.tags) == set(world.tagging.in_use("uid-1"))
        assert (port.device_id, port.name) == ("uid-1", "ns/pod")
        await _settle()
        assert provider.busy()
        assert world.fake.ports[port.id]["device_id"] == ""  # not while pods are served
        assert _writes(world, port.id) == 0

        quick = await provider.acquire(world.request(), "uid-2", "ns/quick")
        await provider.release(quick.id, "uid-2")
        await provider.marks.flush()
        raw = world.fake.ports[port.id]
        assert (raw["device_id"], raw["name"]) == ("uid-1", "ns/pod")
        assert set(raw["tags"]) == set(world.tagging.in_use("uid-1"))
        raw = world.fake.ports[quick.id]
        assert raw["device_id"] == ""
        assert set(raw["tags"]) == set(world.tagging.free(world.request().pool_key))
        assert _writes(world, quick.id) == 0
    finally:
        await provider.stop()


async def test_stop_flushes_the_marks() -> None:
    world = make_world()
    provider = PooledPortProvider(world.neutron, world.tagging, SETTINGS, Owners(), mark_delay=3600)
    await provider.start()
    await provider.acquire(world.request(), "warm", "x")
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert world.fake.ports[port.id]["device_id"] == ""
    await provider.stop()
    assert world.fake.ports[port.id]["device_id"] == "uid-1"
    assert provider.marks.backlog == 0


async def test_known_never_adopts_a_port_outside_our_cluster() -> None:
    """A hand-edited status naming someone else's free port (no owner marks), or a free
    port of another cluster on the same Neutron, never makes it the pod's."""
    world = make_world()
    provider = await _pool(world)
    foreign = world.fake.add_port(world.network, world.subnet, name="a user's port")
    other_cluster = await world.neutron.create_ports(
        [
            PortSpec(
                world.network, world.subnet, PROJECT, (world.sg,), "node-a", ("kuryr.cluster:c2",)
            )
        ]
    )
    for pid in (foreign["id"], other_cluster[0].id):
        assert await provider.known(pid, "uid-1") is None
        assert not provider.owns(pid)
    assert await provider.find("uid-1") is None


def _slow_bulks(world: World, batch: int = 2) -> PooledPortProvider:
    """A provider whose Neutron calls run in threads and whose bulk creates take 50 ms,
    so pods that arrive during a bulk queue behind it (as on a real, busy Neutron)."""
    world.fake.on_request = lambda m, p: time.sleep(0.05) if (m, p) == ("POST", "/ports") else None
    return PooledPortProvider(
        Neutron(world.fake), world.tagging, VifPoolSettings(True, 0, batch, 0, 3600), Owners()
    )


async def test_a_cold_burst_makes_the_waiting_pods_ports_with_their_marks() -> None:
    """Pods that queue on an empty pool while a bulk runs get ports made for them by the
    next bulk (device_id, name and owner tags in the create): no claim, no mark write."""
    world = make_world()
    provider = _slow_bulks(world)
    await provider.rebuild()
    uids = [f"uid-{i}" for i in range(8)]
    tasks = []
    for uid in uids:
        tasks.append(asyncio.ensure_future(provider.acquire(world.request(), uid, f"ns/{uid}")))
        await asyncio.sleep(0.01)
    ports = await asyncio.gather(*tasks)
    assert len({p.id for p in ports}) == 8
    marked_at_create = [
        uid
        for uid, port in zip(uids, ports, strict=True)
        if world.fake.ports[port.id]["device_id"] == uid
    ]
    # the first bulk (batch 2) was made for uid-0 plus one free port (uid-1's, claimed
    # and marked later); every later pod's port was made for it
    assert len(marked_at_create) >= 6
    assert world.fake.requests.count(("POST", "/ports")) <= 3


async def test_a_waiter_cancelled_while_its_port_is_made_leaves_it_to_the_pool() -> None:
    world = make_world()
    provider = _slow_bulks(world, batch=1)
    await provider.rebuild()
    pool = provider._pool_for(world.request().pool_key, world.request().subnet_id)
    blocker = asyncio.ensure_future(provider.acquire(world.request(), "uid-0", "ns/0"))
    await asyncio.sleep(0.01)  # uid-0's bulk (of 1) is running; a and b queue behind it
    first = asyncio.ensure_future(provider.acquire(world.request(), "uid-a", "ns/a"))
    second = asyncio.ensure_future(provider.acquire(world.request(), "uid-b", "ns/b"))
    await blocker
    await asyncio.sleep(0.01)  # uid-a's bulk, made for uid-a and uid-b, is running
    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second
    await first
    assert pool.reserved == {}
    (made_for_b,) = [p for p in world.fake.ports.values() if p["name"] == "ns/b"]
    assert made_for_b["id"] in {p.id for p in pool.free}
    assert provider.ledger.port_of("uid-b") is None
    await provider.marks.flush()
    assert world.fake.ports[made_for_b["id"]]["device_id"] == ""  # its marks reset


async def test_a_refill_waiting_on_neutron_never_blocks_pods_from_free_ports() -> None:
    """Seen under load: a background refill held the pool while Neutron took 47 s (then
    said quota exceeded), and 50 pods waited although 50 ports were free."""
    world = make_world()
    world.fake.on_request = lambda m, p: time.sleep(0.3) if (m, p) == ("POST", "/ports") else None
    provider = PooledPortProvider(
        Neutron(world.fake), world.tagging, VifPoolSettings(True, 2, 2, 0, 3600), Owners()
    )
    await provider.rebuild()
    await provider.warm(world.request())  # 2 free
    pool = provider._pool_for(world.request().pool_key, world.request().subnet_id)
    provider.settings = VifPoolSettings(True, 6, 2, 0, 3600)  # now the pool wants more
    refill = asyncio.ensure_future(provider._refill(pool, wait_quiet=False))
    await asyncio.sleep(0.05)  # the refill's bulk is in Neutron
    assert pool.refill_lock.locked()
    port = await provider.acquire(world.request(), "uid-1", "ns/one")
    assert not refill.done()  # served from the free ports while the bulk still ran
    await refill
    assert provider.ledger.port_of("uid-1") == port


async def test_pools_filling_one_subnet_at_once_never_overflow_it() -> None:
    # 29 addresses, three pools (nodes) of ports_pool_min 20 warmed concurrently: bulks
    # of 20 would overflow and, as on Neutron Zed (the fake too), leak; the shared budget
    # sizes them (the last ones are single creates), so every address ends in a port
    world = make_world(cidr="10.0.0.0/27")
    settings = VifPoolSettings(True, 20, 20, 0, 3600)
    provider = await _pool(world, settings=settings)
    requests = [world.request(node=f"node-{c}") for c in "abc"]
    await asyncio.gather(*(provider.warm(r) for r in requests))
    assert world.fake.lost_ips == {}
    assert provider.budget.stats.refused_bulks == 0
    assert len(world.fake.ports) == 29
    assert sum(provider.sizes().values()) == 29
