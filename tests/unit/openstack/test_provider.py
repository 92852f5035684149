"""The plain provider (pool disabled): create on demand with tags, delete on release; the
owner look-up is the ledger loaded at start (KuryrPort references, then marks)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import pytest

from kuryr_k8s.model.errors import PermanentError, ResourceNotReady
from kuryr_k8s.openstack.neutron import IpExhausted, PortSpec, QuotaExceeded
from kuryr_k8s.openstack.ports import DEVICE_OWNER
from kuryr_k8s.openstack.provider import (
    PlainPortProvider,
    PortTagging,
    find_owned,
    pool_digest,
    pool_key_of,
)
from unit.openstack.world import PROJECT, World, make_world


class Live:
    """What the KuryrPort cache would say: live pod uids and port id -> uid references."""

    def __init__(self, *uids: str, refs: dict[str, str] | None = None) -> None:
        self.uids = set(uids)
        self.refs = dict(refs or {})

    async def owners(self) -> Collection[str]:
        return set(self.uids)

    async def references(self) -> Mapping[str, str]:
        return dict(self.refs)


async def _plain(world: World, live: Live | None = None) -> PlainPortProvider:
    live = live or Live()
    provider = PlainPortProvider(
        world.neutron, world.tagging, live_owners=live.owners, live_refs=live.references
    )
    await provider.start()
    return provider


async def test_not_ready_until_started() -> None:
    world = make_world()
    provider = PlainPortProvider(world.neutron, world.tagging)
    with pytest.raises(ResourceNotReady):
        await provider.acquire(world.request(), "uid-1", "ns/pod")
    with pytest.raises(ResourceNotReady):
        await provider.release("x", "uid-1")
    assert world.fake.ports == {} and world.fake.requests == []
    await provider.start()
    assert provider.ready
    assert world.fake.requests == [("GET", "/ports")]  # one list, nothing per port
    await provider.stop()
    assert not provider.ready


async def test_acquire_creates_one_tagged_bound_port() -> None:
    world = make_world()
    provider = await _plain(world)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert port.tags == ("kuryr.cluster:c1", "kuryr.owner:uid-1", "extra")
    assert (port.binding_host_id, port.device_id, port.name) == ("node-a", "uid-1", "ns/pod")
    assert port.device_owner == DEVICE_OWNER
    assert port.security_groups == (world.sg,)
    assert len(world.fake.ports) == 1
    raw = world.fake.ports[port.id]  # marked in Neutron by the create itself
    assert (raw["device_id"], raw["name"], raw["tags"]) == ("uid-1", "ns/pod", list(port.tags))
    # the owner look-up is the ledger: one POST, no GET
    assert world.fake.requests == [("GET", "/ports"), ("POST", "/ports")]


async def test_acquire_is_idempotent_per_owner_even_across_instances() -> None:
    world = make_world()
    first = await (await _plain(world)).acquire(world.request(), "uid-1", "ns/pod")
    # the successor learns the port from the KuryrPort that names it ...
    named = await _plain(world, Live("uid-1", refs={first.id: "uid-1"}))
    assert (await named.acquire(world.request(), "uid-1", "ns/pod")).id == first.id
    # ... or, when the status write never happened, from the marks of a live owner
    marked = await _plain(world, Live("uid-1"))
    assert (await marked.acquire(world.request(), "uid-1", "ns/pod")).id == first.id
    assert len(world.fake.ports) == 1
    assert world.fake.requests.count(("POST", "/ports")) == 1


async def test_concurrent_acquires_of_one_owner_make_one_port() -> None:
    world = make_world()
    provider = await _plain(world)
    ports = await asyncio.gather(
        *(provider.acquire(world.request(), "uid-1", "ns/pod") for _ in range(5))
    )
    assert len({p.id for p in ports}) == 1
    assert len(world.fake.ports) == 1


async def test_start_adopts_a_predecessors_port_and_acquire_fixes_its_sgs() -> None:
    world = make_world()
    # A predecessor created the port for uid-1 and died before the status named it.
    spec = PortSpec(
        world.network, world.subnet, PROJECT, (world.sg,), "node-a",
        world.tagging.in_use("uid-1"), name="ns/pod", device_id="uid-1",
    )  # fmt: skip
    (half,) = await world.neutron.create_ports([spec])
    provider = await _plain(world, Live("uid-1"))
    assert provider.owns(half.id)
    port = await provider.acquire(world.request(sgs=(world.sg2,)), "uid-1", "ns/pod")
    assert port.id == half.id
    assert port.security_groups == (world.sg2,)  # security groups are never deferred
    assert world.fake.ports[half.id]["security_groups"] == [world.sg2]
    assert world.fake.requests.count(("POST", "/ports")) == 1  # the predecessor's only


async def test_start_leaves_ports_of_dead_owners_to_garbage_collection() -> None:
    world = make_world()
    dead = await (await _plain(world)).acquire(world.request(), "dead", "ns/dead")
    provider = await _plain(world, Live("alive"))
    assert not provider.owns(dead.id)
    assert await provider.find("dead") is None
    assert await provider.known(dead.id, "alive") is None  # another owner's marks
    fresh = await provider.acquire(world.request(), "alive", "ns/alive")
    assert fresh.id != dead.id
    assert dead.id in world.fake.ports  # garbage collection's business


async def test_release_deletes_only_the_owners_port_and_is_idempotent() -> None:
    world = make_world()
    provider = await _plain(world)
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    await provider.release(port.id, "someone-else")
    assert port.id in world.fake.ports
    await provider.release(port.id, "uid-1")
    await provider.release(port.id, "uid-1")
    assert world.fake.ports == {}
    assert not provider.owns(port.id)
    assert await provider.find("uid-1") is None
    assert await provider.get(port.id) is None
    assert await find_owned(world.neutron, world.tagging, "uid-1") is None


async def test_release_of_a_port_created_after_start_goes_by_its_marks() -> None:
    """A create of a predecessor that landed after our ledger was loaded: deleted when
    Neutron marks it with the releasing owner, never when it marks another one."""
    world = make_world()
    provider = await _plain(world)
    late = await (await _plain(world)).acquire(world.request(), "uid-1", "ns/pod")
    other = await (await _plain(world)).acquire(world.request(), "uid-2", "ns/other")
    await provider.release(other.id, "uid-1")
    assert other.id in world.fake.ports
    await provider.release(late.id, "uid-1")
    assert late.id not in world.fake.ports


async def test_known_adopts_a_port_marked_with_the_owner_and_refuses_others() -> None:
    world = make_world()
    provider = await _plain(world)
    late = await (await _plain(world)).acquire(world.request(), "uid-1", "ns/pod")
    assert await provider.known(late.id, "uid-2") is None
    adopted = await provider.known(late.id, "uid-1")
    assert adopted is not None and adopted.id == late.id
    gets = world.fake.requests.count(("GET", f"/ports/{late.id}"))
    assert (await provider.known(late.id, "uid-1")) == adopted  # now from the ledger
    assert world.fake.requests.count(("GET", f"/ports/{late.id}")) == gets
    assert await provider.known(late.id, "uid-2") is None
    provider.lost(late.id)
    assert not provider.owns(late.id)


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
    provider = await _plain(world)
    if "cidr" in world_kw:  # /30: one usable address after the gateway
        await provider.acquire(world.request(), "uid-0", "ns/first")
    with pytest.raises(expected, match=reason) as info:
        await provider.acquire(world.request(), "uid-1", "ns/pod")
    assert isinstance(info.value, PermanentError)


async def test_missing_subnet_is_permanent() -> None:
    world = make_world()
    del world.fake.subnets[world.subnet]
    with pytest.raises(PermanentError, match="Subnet .* could not be found"):
        await (await _plain(world)).acquire(world.request(), "uid-1", "ns/pod")


def test_pool_digest_is_stable_and_distinguishes_keys() -> None:
    key = ("node-a", "p", "net", ("sg1", "sg2"))
    assert pool_digest(key) == pool_digest(tuple(key))  # type: ignore[arg-type]
    assert pool_digest(key) != pool_digest(("node-b", "p", "net", ("sg1", "sg2")))
    assert len(pool_digest(key)) == 16


async def test_pool_key_of_a_port() -> None:
    world = make_world()
    port = await (await _plain(world)).acquire(world.request(), "uid-1", "ns/pod")
    assert pool_key_of(port) == world.request().pool_key


async def test_find_never_creates() -> None:
    world = make_world()
    provider = await _plain(world)
    assert await provider.find("uid-1") is None
    assert world.fake.ports == {}
    port = await provider.acquire(world.request(), "uid-1", "ns/pod")
    found = await provider.find("uid-1")
    assert found is not None and found.id == port.id


async def test_known_never_adopts_a_port_of_another_cluster() -> None:
    world = make_world()
    provider = await _plain(world)
    other = PortTagging("c2")
    spec = PortSpec(
        world.network, world.subnet, PROJECT, (world.sg,), "node-a",
        other.in_use("uid-1"), device_id="uid-1",
    )  # fmt: skip
    (theirs,) = await world.neutron.create_ports([spec])
    assert await provider.known(theirs.id, "uid-1") is None
    assert not provider.owns(theirs.id)
