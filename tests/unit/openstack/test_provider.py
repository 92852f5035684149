"""The plain provider (pool disabled): create on demand with tags, delete on release."""

from __future__ import annotations

import asyncio

import pytest

from kuryr_k8s.model.errors import PermanentError
from kuryr_k8s.openstack.neutron import IpExhausted, PortSpec, QuotaExceeded
from kuryr_k8s.openstack.ports import DEVICE_OWNER
from kuryr_k8s.openstack.provider import (
    PlainPortProvider,
    find_owned,
    pool_digest,
    pool_key_of,
)
from unit.openstack.world import PROJECT, make_world


async def test_acquire_creates_one_tagged_bound_port() -> None:
    world = make_world()
    provider = PlainPortProvider(world.neutron, world.tagging)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert port.tags == ("kuryr.cluster:c1", "kuryr.owner:uid-1", "extra")
    assert (port.binding_host_id, port.device_id, port.name) == ("node-a", "uid-1", "ns/pod")
    assert port.device_owner == DEVICE_OWNER
    assert port.security_groups == (world.sg,)
    assert len(world.fake.ports) == 1


async def test_acquire_is_idempotent_per_owner_even_across_instances() -> None:
    world = make_world()
    first = await PlainPortProvider(world.neutron, world.tagging).acquire(
        world.request(), "uid-1", "ns/pod"
    )
    again = await PlainPortProvider(world.neutron, world.tagging).acquire(
        world.request(), "uid-1", "ns/pod"
    )
    assert again.id == first.id
    assert len(world.fake.ports) == 1


async def test_concurrent_acquires_of_one_owner_make_one_port() -> None:
    world = make_world()
    provider = PlainPortProvider(world.neutron, world.tagging)
    ports = await asyncio.gather(
        *(provider.acquire(world.request(), "uid-1", "ns/pod") for _ in range(5))
    )
    assert len({p.id for p in ports}) == 1
    assert len(world.fake.ports) == 1


async def test_acquire_finishes_a_claim_a_crash_interrupted() -> None:
    world = make_world()
    # Crash after the claim set device_id but before the tags flipped.
    spec = PortSpec(
        world.network, world.subnet, PROJECT, (world.sg,), "node-a",
        world.tagging.free(world.request().pool_key), device_id="uid-1",
    )  # fmt: skip
    (half,) = await world.neutron.create_ports([spec])
    port = await PlainPortProvider(world.neutron, world.tagging).acquire(
        world.request(sgs=(world.sg2,)), "uid-1", "ns/pod"
    )
    assert port.id == half.id
    assert set(port.tags) == set(world.tagging.in_use("uid-1"))
    assert (port.name, port.security_groups) == ("ns/pod", (world.sg2,))


async def test_release_deletes_only_the_owners_port_and_is_idempotent() -> None:
    world = make_world()
    provider = PlainPortProvider(world.neutron, world.tagging)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    await provider.release(port.id, "someone-else")
    assert port.id in world.fake.ports
    await provider.release(port.id, "uid-1")
    await provider.release(port.id, "uid-1")
    assert world.fake.ports == {}
    assert await provider.get(port.id) is None
    assert await find_owned(world.neutron, world.tagging, "uid-1") is None


@pytest.mark.parametrize(
    ("world_kw", "expected", "reason"),
    [
        ({"port_quota": 0}, QuotaExceeded, "Quota exceeded"),
        ({"cidr": "10.0.0.0/30"}, IpExhausted, "No more IP addresses"),
    ],
)
async def test_neutron_refusals_are_permanent_with_the_reason(
    world_kw: dict[str, object], expected: type, reason: str
) -> None:
    world = make_world(**world_kw)  # type: ignore[arg-type]
    provider = PlainPortProvider(world.neutron, world.tagging)
    if "cidr" in world_kw:  # /30: one usable address after the gateway
        await provider.acquire(world.request(), "uid-0", "ns/first")
    with pytest.raises(expected, match=reason) as info:
        await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert isinstance(info.value, PermanentError)


async def test_missing_subnet_is_permanent() -> None:
    world = make_world()
    del world.fake.subnets[world.subnet]
    with pytest.raises(PermanentError, match="Subnet .* could not be found"):
        await PlainPortProvider(world.neutron, world.tagging).acquire(
            world.request(), "uid-1", "ns/pod"
        )


def test_pool_digest_is_stable_and_distinguishes_keys() -> None:
    key = ("node-a", "p", "net", ("sg1", "sg2"))
    assert pool_digest(key) == pool_digest(tuple(key))  # type: ignore[arg-type]
    assert pool_digest(key) != pool_digest(("node-b", "p", "net", ("sg1", "sg2")))
    assert len(pool_digest(key)) == 16


async def test_pool_key_of_a_port() -> None:
    world = make_world()
    port = await PlainPortProvider(world.neutron, world.tagging).acquire(
        world.request(), "uid-1", "ns/pod"
    )
    assert pool_key_of(port) == world.request().pool_key


async def test_find_never_creates() -> None:
    world = make_world()
    provider = PlainPortProvider(world.neutron, world.tagging)
    assert await provider.find("uid-1") is None
    assert world.fake.ports == {}
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    found = await provider.find("uid-1")
    assert found is not None and found.id == port.id
