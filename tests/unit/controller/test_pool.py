"""Port pools over the in-memory Neutron: batches, claims, recycling, rebuild, races."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest

from kuryr_k8s.controller.pool import PoolCollector, PooledPortProvider, make_provider
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import ResourceNotReady, TemporaryError
from kuryr_k8s.openstack.neutron import IpExhausted, NeutronUnavailable, PortSpec, QuotaExceeded
from kuryr_k8s.openstack.provider import PlainPortProvider
from unit.openstack.world import PROJECT, World, make_world

SETTINGS = VifPoolSettings(
    enabled=True, ports_pool_min=2, ports_pool_batch=4, ports_pool_max=6,
    ports_pool_update_frequency=3600,
)  # fmt: skip


class Owners:
    """The live KuryrPort pod uids, as the reconcile side would report them."""

    def __init__(self) -> None:
        self.uids: set[str] = set()

    async def __call__(self) -> Collection[str]:
        return set(self.uids)


async def _pool(
    world: World, owners: Owners | None = None, settings: VifPoolSettings = SETTINGS
) -> PooledPortProvider:
    provider = PooledPortProvider(world.neutron, world.tagging, settings, owners or Owners())
    await provider.rebuild()
    return provider


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


async def test_pool_refills_in_the_background_below_min() -> None:
    world = make_world()
    provider = await _pool(world)
    for i in range(3):
        await provider.acquire(world.request(), f"uid-{i}", f"ns/p{i}")
    await _settle()
    # 4 created, 3 taken -> 1 free < min 2 -> one more batch of 4
    assert provider.sizes()[world.request().pool_key] == 5
    assert world.fake.requests.count(("POST", "/ports")) == 2


async def test_acquire_is_idempotent_across_a_crash() -> None:
    world = make_world()
    owners = Owners()
    first = await (await _pool(world, owners)).acquire(world.request(), "uid-1", "ns/pod")
    owners.uids.add("uid-1")
    restarted = await _pool(world, owners)
    again = await restarted.acquire(world.request(), "uid-1", "ns/pod")
    assert again.id == first.id
    assert len([p for p in world.fake.ports.values() if p["device_id"]]) == 1


async def test_release_resets_and_recycles_the_port() -> None:
    world = make_world()
    provider = await _pool(world)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    before = provider.sizes()[world.request().pool_key]
    await provider.release(port.id, "uid-1")
    raw = world.fake.ports[port.id]
    assert (raw["device_id"], raw["name"]) == ("", "")
    assert set(raw["tags"]) == set(world.tagging.free(world.request().pool_key))
    assert provider.sizes()[world.request().pool_key] == before + 1
    await provider.release(port.id, "uid-1")  # idempotent
    assert provider.sizes()[world.request().pool_key] == before + 1
    # the recycled port serves the next pod
    taken = [await provider.acquire(world.request(), f"n{i}", "x") for i in range(before + 1)]
    assert port.id in {p.id for p in taken}


async def test_release_restores_the_security_groups_of_the_origin_pool() -> None:
    world = make_world()
    provider = await _pool(world)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    await world.neutron.update_port(port.id, security_groups=[world.sg, world.sg2])
    await provider.release(port.id, "uid-1")
    assert world.fake.ports[port.id]["security_groups"] == [world.sg]


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
    provider = await _pool(world, owners)
    used = await provider.acquire(world.request(), "alive", "ns/a")
    owners.uids.add("alive")
    gone = await provider.acquire(world.request(), "gone", "ns/g")
    await _settle()
    free_ids = {p["id"] for p in _free(world)}
    restarted = await _pool(world, owners)
    key = world.request().pool_key
    assert restarted.sizes() == {key: len(free_ids)}
    taken = {
        (await restarted.acquire(world.request(), f"new-{i}", "x")).id for i in range(len(free_ids))
    }
    assert taken == free_ids
    assert used.id not in taken and gone.id not in taken
    assert world.fake.ports[gone.id]["device_id"] == "gone"  # an orphan: GC's business


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
    provider = await _pool(world, owners)
    assert provider.sizes() == {key: 2}
    for port in (mid_release_dead, unnamed):
        raw = world.fake.ports[port.id]
        assert set(raw["tags"]) == set(world.tagging.free(key))
        assert raw["name"] == ""
    assert "kuryr.owner:live" in world.fake.ports[mid_release_live.id]["tags"]


async def test_a_port_taken_behind_our_back_is_never_shared() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 2, 0, 3600))
    await provider.acquire(world.request(), "first", "x")
    (victim,) = [p["id"] for p in _free(world)]

    def steal(method: str, path: str) -> None:
        if method == "PUT" and path == f"/ports/{victim}" and world.fake.on_request:
            world.fake.on_request = None
            world.fake.ports[victim]["device_id"] = "intruder"
            world.fake.touch(victim)

    world.fake.on_request = steal
    port = await provider.acquire(world.request(), "second", "x")
    assert port.id != victim
    assert world.fake.ports[victim]["device_id"] == "intruder"
    assert world.fake.ports[port.id]["device_id"] == "second"


async def test_claim_survives_neutron_bumping_the_revision() -> None:
    world = make_world()
    provider = await _pool(world)
    await provider.acquire(world.request(), "first", "x")
    free = [p["id"] for p in _free(world)]
    for pid in free:
        world.fake.touch(pid)  # binding completed after we read them
    port = await provider.acquire(world.request(), "second", "x")
    assert port.id in free
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
    await provider.acquire(world.request(), "c", "x")
    await _settle()
    assert provider.refill_errors == 1
    await provider.maintain_once()
    assert provider.sizes()[world.request().pool_key] >= SETTINGS.ports_pool_min


async def test_temporary_error_during_claim_keeps_the_port_in_the_pool() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 2, 0, 3600))
    await provider.acquire(world.request(), "a", "x")
    world.fake.fail_next("PUT", "/ports/", 503)
    with pytest.raises(NeutronUnavailable):
        await provider.acquire(world.request(), "b", "x")
    assert provider.sizes()[world.request().pool_key] == 1
    assert (await provider.acquire(world.request(), "b", "x")).device_id == "b"


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


def test_pool_disabled_is_the_plain_provider() -> None:
    world = make_world()
    off = make_provider(world.neutron, world.tagging, VifPoolSettings(), Owners())
    on = make_provider(world.neutron, world.tagging, SETTINGS, Owners())
    assert isinstance(off, PlainPortProvider) and off.ready
    assert isinstance(on, PooledPortProvider) and not on.ready


async def test_a_port_that_never_stops_changing_ends_in_a_temporary_error() -> None:
    world = make_world()
    provider = await _pool(world, settings=VifPoolSettings(True, 0, 2, 0, 3600))
    await provider.acquire(world.request(), "first", "x")
    (restless,) = [p["id"] for p in _free(world)]

    def churn(method: str, path: str) -> None:
        if method == "PUT" and path == f"/ports/{restless}":
            world.fake.touch(restless)

    world.fake.on_request = churn
    with pytest.raises(TemporaryError, match="could be claimed"):
        await provider.acquire(world.request(), "second", "x")
    assert world.fake.ports[restless]["device_id"] == ""
    assert provider.sizes()[world.request().pool_key] == 1  # kept for later


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


async def test_pools_work_where_ip_availability_is_forbidden() -> None:
    world = make_world()
    provider = await _pool(world)
    world.fake.fail_next("GET", "/network-ip-availabilities", 403, "PolicyNotAuthorized")
    port = await provider.acquire(world.request(), "a", "x")
    assert port.device_id == "a"
    assert len(world.fake.ports) == SETTINGS.ports_pool_batch


async def test_warm_fills_a_nodes_pool_before_its_first_pod() -> None:
    world = make_world()
    provider = await _pool(world)
    assert await provider.warm(world.request(node="node-b")) == SETTINGS.ports_pool_batch
    assert await provider.warm(world.request(node="node-b")) == SETTINGS.ports_pool_batch
    assert world.fake.requests.count(("POST", "/ports")) == 1
    port = await provider.acquire(world.request(node="node-b"), "a", "x")
    assert port.binding_host_id == "node-b"
    assert world.fake.requests.count(("POST", "/ports")) == 1


async def test_claimed_port_gets_owner_tags_after_acquire_returns() -> None:
    """The tag flip is off the critical path, but it lands, and a release that follows at
    once still ends with the pool's tags (never the owner's)."""
    world = make_world()
    provider = await _pool(world)
    await provider.acquire(world.request(), "warm", "x")  # fills the pool
    await provider.release((await provider.find("warm")).id, "warm")  # type: ignore[union-attr]
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert set(port.tags) == set(world.tagging.in_use("uid-1"))
    assert world.fake.ports[port.id]["device_id"] == "uid-1"  # owned before tags flip
    await _settle()
    assert set(world.fake.ports[port.id]["tags"]) == set(world.tagging.in_use("uid-1"))

    quick = await provider.acquire(world.request(), "uid-2", "ns/quick")
    await provider.release(quick.id, "uid-2")  # before its tag flip had a chance to run
    await _settle()
    raw = world.fake.ports[quick.id]
    assert raw["device_id"] == ""
    assert set(raw["tags"]) == set(world.tagging.free(world.request().pool_key))
