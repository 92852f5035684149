"""Concurrent pool-less acquires share bulk ``POST /ports`` requests sized by the subnet's
free addresses (a bulk that overflows leaks them, as on Neutron Zed: the fake does too),
and a refused or failed batch treats each pod as a single create would."""

from __future__ import annotations

import asyncio

import pytest

from kuryr_k8s.openstack.batching import CreateBatcher
from kuryr_k8s.openstack.neutron import IpExhausted, NeutronUnavailable, QuotaExceeded
from kuryr_k8s.openstack.ports import NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import PlainPortProvider
from unit.openstack.world import PROJECT, World, make_world


async def _plain(world: World) -> PlainPortProvider:
    provider = PlainPortProvider(world.neutron, world.tagging)
    await provider.start()
    return provider


def _posts(world: World) -> int:
    return sum(1 for r in world.fake.requests if r == ("POST", "/ports"))


async def _acquire_all(
    provider: PlainPortProvider, world: World, n: int
) -> list[NeutronPort | BaseException]:
    return await asyncio.gather(
        *(provider.acquire(world.request(), f"uid-{i}", f"ns/pod-{i}") for i in range(n)),
        return_exceptions=True,
    )


async def test_a_burst_of_creates_is_two_bulk_requests() -> None:
    world = make_world()
    provider = await _plain(world)
    got = await _acquire_all(provider, world, 20)
    ports = [p for p in got if isinstance(p, NeutronPort)]
    assert len(ports) == 20
    # the first is sent at once; the 19 that came while it was in flight go together
    assert _posts(world) == 2
    assert sorted(p.device_id for p in ports) == sorted(f"uid-{i}" for i in range(20))
    assert len({p.id for p in ports}) == 20 and len(world.fake.ports) == 20
    for i in range(20):
        port = provider.ledger.port_of(f"uid-{i}")
        assert port is not None and port.device_id == f"uid-{i}"
    # every port carries its own owner's marks (made by the bulk create itself)
    for raw in world.fake.ports.values():
        assert f"kuryr.owner:{raw['device_id']}" in raw["tags"]


async def test_a_single_create_waits_for_no_one() -> None:
    world = make_world()
    provider = await _plain(world)
    await provider.acquire(world.request(), "uid-1", "ns/pod")
    await provider.acquire(world.request(), "uid-2", "ns/pod2")
    assert _posts(world) == 2 and len(world.fake.ports) == 2


async def test_a_refused_batch_is_retried_one_create_at_a_time() -> None:
    # quota for 5: the batch of 7 after the first is refused as a whole, then 4 of its
    # creates fit alone and 3 get the quota error a single create would get
    world = make_world(port_quota=5)
    provider = await _plain(world)
    got = await _acquire_all(provider, world, 8)
    ports = [p for p in got if isinstance(p, NeutronPort)]
    refused = [e for e in got if isinstance(e, BaseException)]
    assert len(ports) == 5 and len(world.fake.ports) == 5
    assert len(refused) == 3 and all(isinstance(e, QuotaExceeded) for e in refused)
    assert provider.creates.stats.split == 1
    owners = {p.device_id for p in ports}
    assert {p["device_id"] for p in world.fake.ports.values()} == owners
    assert {o for o in (f"uid-{i}" for i in range(8)) if provider.ledger.port_of(o)} == owners


async def test_a_temporary_failure_reaches_every_create_of_the_batch() -> None:
    world = make_world()
    provider = await _plain(world)
    world.fake.fail_next("POST", "/ports", status=503, kind="", times=2)
    got = await _acquire_all(provider, world, 6)
    assert all(isinstance(e, NeutronUnavailable) for e in got)
    assert world.fake.ports == {} and _posts(world) == 2
    again = await _acquire_all(provider, world, 6)  # the reconcilers' retries
    assert all(isinstance(p, NeutronPort) for p in again) and len(world.fake.ports) == 6


async def test_the_ledger_has_the_port_even_when_its_caller_was_cancelled() -> None:
    world = make_world()
    provider = await _plain(world)
    task = asyncio.create_task(provider.acquire(world.request(), "uid-1", "ns/pod"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.creates.close()
    port = provider.ledger.port_of("uid-1")
    assert port is not None and list(world.fake.ports) == [port.id]
    assert await provider.acquire(world.request(), "uid-1", "ns/pod") == port
    assert _posts(world) == 1


def test_batch_limits_are_checked() -> None:
    world = make_world()
    with pytest.raises(ValueError):
        CreateBatcher(world.neutron, max_batch=0)


def _lost(world: World) -> int:
    return len(world.fake.lost_ips.get(world.subnet, ()))


async def test_a_burst_on_a_nearly_full_subnet_loses_no_address() -> None:
    # 5 addresses, 7 pods: a bulk of the 6 queued ones would be refused and, as on Neutron
    # Zed, leak the 5 addresses it got (then every pod fails); the budget sends singles
    world = make_world(cidr="10.0.0.0/29")
    provider = await _plain(world)
    got = await _acquire_all(provider, world, 7)
    ports = [p for p in got if isinstance(p, NeutronPort)]
    refused = [e for e in got if isinstance(e, BaseException)]
    assert len(ports) == 5 and len(world.fake.ports) == 5
    assert len(refused) == 2 and all(isinstance(e, IpExhausted) for e in refused)
    assert _lost(world) == 0
    assert max(provider.creates.stats.sizes) == 1
    assert provider.creates.budget.stats.refused_bulks == 0
    # the addresses come back with the ports: the two refused pods get theirs
    for port in ports[:2]:
        await provider.release(port.id, port.device_id)
    again = await asyncio.gather(
        *(provider.acquire(world.request(), f"late-{i}", f"ns/late-{i}") for i in range(2))
    )
    assert len(again) == 2 and len(world.fake.ports) == 5


async def test_a_bulk_keeps_the_margin_and_the_rest_goes_alone() -> None:
    # 13 addresses, 1 taken by a VM: the first pod goes alone, then the 11 queued: a
    # bulk of 12 - 1 - margin 4 = 7 and 4 singles
    world = make_world(cidr="10.0.0.0/28")
    world.fake.add_port(world.network, world.subnet, name="vm")
    provider = await _plain(world)
    got = await _acquire_all(provider, world, 12)
    assert all(isinstance(p, NeutronPort) for p in got)
    assert sorted(provider.creates.stats.sizes) == [1] * 5 + [7]
    assert len(world.fake.ports) == 13 and _lost(world) == 0


async def test_pods_on_two_subnets_share_a_round_one_bulk_each() -> None:
    world = make_world()
    other_subnet = world.fake.add_subnet(world.network, "10.1.0.0/24")
    provider = await _plain(world)

    def request(i: int) -> PortRequest:
        subnet = world.subnet if i % 2 else other_subnet
        return PortRequest("node-a", PROJECT, world.network, subnet, (world.sg,))

    got = await asyncio.gather(*(provider.acquire(request(i), f"u{i}", f"p{i}") for i in range(9)))
    assert sorted(provider.creates.stats.sizes) == [1, 4, 4]
    for i, port in enumerate(got):
        assert port.fixed_ips[0].subnet_id == request(i).subnet_id
