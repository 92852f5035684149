"""The address budget sizes bulk creates so none runs a subnet dry, learns addresses an
earlier refused bulk leaked, and costs one availability read per subnet per TTL.

The fake Neutron leaks like Zed's ML2 ``create_port_bulk`` (first test), so "no address
lost" below is a state a missing guard would break."""

from __future__ import annotations

import asyncio

import pytest

from kuryr_k8s.openstack.addresses import AddressBudget
from kuryr_k8s.openstack.neutron import IpExhausted, PortSpec
from kuryr_k8s.openstack.provider import spec_for
from unit.openstack.world import World, make_world


class Ticks:
    """Monotonic clock under the test's control."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _spec(world: World) -> PortSpec:
    return spec_for(world.request(), world.tagging.free(world.request().pool_key))


def _reads(world: World) -> int:
    return sum(1 for m, p in world.fake.requests if p.startswith("/network-ip-availabilities"))


async def _free(world: World) -> int:
    free = await world.neutron.free_ips(world.network, world.subnet)
    assert free is not None
    return free


async def _create(budget: AddressBudget, world: World, wanted: int) -> int:
    async with budget.bulk(world.network, world.subnet, wanted) as n:
        await world.neutron.create_ports([_spec(world)] * n)
    return n


async def test_the_fake_leaks_a_refused_bulk_like_neutron_zed() -> None:
    # reproduced on the sandbox's Neutron 21.0.0: a /29 with 2 free, a bulk of 3 refused,
    # then singles refused while network-ip-availabilities calls 2 addresses free
    world = make_world(cidr="10.0.0.0/29")  # 5 addresses
    await world.neutron.create_ports([_spec(world)] * 3)
    with pytest.raises(IpExhausted):
        await world.neutron.create_ports([_spec(world)] * 3)
    assert len(world.fake.lost_ips[world.subnet]) == 2
    assert await _free(world) == 2
    with pytest.raises(IpExhausted):
        await world.neutron.create_ports([_spec(world)])


async def test_a_bulk_is_granted_what_leaves_the_margin_free() -> None:
    world = make_world(cidr="10.0.0.0/28")  # 13 addresses
    budget = AddressBudget(world.neutron, margin=4)
    assert await _create(budget, world, 20) == 9
    assert await _free(world) == 4
    # no room for a bulk: one create at a time, until Neutron has none
    assert [await _create(budget, world, 5) for _ in range(4)] == [1, 1, 1, 1]
    with pytest.raises(IpExhausted):
        await _create(budget, world, 5)
    assert world.fake.lost_ips == {} and budget.stats.refused_bulks == 0


async def test_one_read_per_ttl_decremented_by_what_we_create() -> None:
    world = make_world()  # 253 addresses
    ticks = Ticks()
    budget = AddressBudget(world.neutron, margin=4, ttl=2.0, clock=ticks)
    assert await _create(budget, world, 20) == 20
    assert await _create(budget, world, 20) == 20
    assert _reads(world) == 1 and budget.room(world.subnet) == 253 - 40
    world.fake.add_port(world.network, world.subnet)  # someone else: seen at the next read
    ticks.now = 2.5
    assert await _create(budget, world, 20) == 20
    assert _reads(world) == 2 and budget.room(world.subnet) == 253 - 61
    assert await _create(budget, world, 1) == 1  # a single asks nothing
    assert _reads(world) == 2


async def test_concurrent_bulks_share_the_room_not_both_take_it() -> None:
    world = make_world(cidr="10.0.0.0/27")  # 29 addresses: room for 25
    budget = AddressBudget(world.neutron, margin=4)
    sizes = await asyncio.gather(*(_create(budget, world, 20) for _ in range(3)))
    assert sorted(sizes) == [1, 5, 20]
    assert len(world.fake.ports) == 26 and world.fake.lost_ips == {}


async def test_addresses_leaked_before_are_learned_and_left_out() -> None:
    # another client's refused bulk already leaked 4 addresses: Neutron calls them free
    world = make_world(cidr="10.0.0.0/28")  # 13 addresses
    await world.neutron.create_ports([_spec(world)] * 9)
    with pytest.raises(IpExhausted):
        await world.neutron.create_ports([_spec(world)] * 5)
    lost = len(world.fake.lost_ips[world.subnet])
    assert lost == 4 and await _free(world) == 4
    ticks = Ticks()
    budget = AddressBudget(world.neutron, margin=0, clock=ticks)
    with pytest.raises(IpExhausted):  # it could not know yet: a single, which loses nothing
        await _create(budget, world, 1)
    assert budget.lost(world.subnet) == 4 and budget.room(world.subnet) == 0
    # ports deleted: their addresses are really free, the lost ones stay out of the sum
    for port_id in list(world.fake.ports)[:6]:
        await world.neutron.delete_port(port_id)
    ticks.now = 10.0  # past the TTL: read again
    assert await _create(budget, world, 10) == 6
    assert len(world.fake.lost_ips[world.subnet]) == lost  # nothing more lost
    assert budget.stats.refused_bulks == 0


async def test_a_cloud_that_hides_availability_gets_single_creates() -> None:
    world = make_world()
    world.fake.fail_next("GET", "/network-ip-availabilities", 403, "PolicyNotAuthorized", times=9)
    ticks = Ticks()
    budget = AddressBudget(world.neutron, clock=ticks)
    assert await _create(budget, world, 10) == 1
    assert await _create(budget, world, 10) == 1
    assert _reads(world) == 1  # the answer "not told" is cached too


def test_budget_limits_are_checked() -> None:
    world = make_world()
    with pytest.raises(ValueError):
        AddressBudget(world.neutron, margin=-1)
