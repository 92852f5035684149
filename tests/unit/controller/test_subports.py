"""Subport pools over the in-memory Neutron (trunks as measured): VLAN ids from the trunk,
never duplicated under concurrency, conflict retry, nothing left behind on failure,
release paths, rebuild cases, the pool-less variant, GC of subports and mixed routing."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Collection
from typing import Any

import pytest

from kuryr_k8s.controller.gc import GarbageCollector
from kuryr_k8s.controller.pool import PooledPortProvider
from kuryr_k8s.controller.settings import GcSettings, VifPoolSettings
from kuryr_k8s.controller.subports import SubportProvider, free_vlans
from kuryr_k8s.controller.targets import TargetedPorts
from kuryr_k8s.model.errors import PermanentError, TemporaryError
from kuryr_k8s.openstack.neutron import Neutron, PortSpec, TrunkNotFound
from kuryr_k8s.openstack.ports import PortRequest
from unit.openstack.world import PROJECT, World, make_world

SETTINGS = VifPoolSettings(
    enabled=True, ports_pool_min=2, ports_pool_batch=4, ports_pool_max=6,
    ports_pool_update_frequency=3600,
)  # fmt: skip
NOOP = VifPoolSettings(enabled=False)


class Owners:
    def __init__(self, *uids: str) -> None:
        self.uids = set(uids)

    async def __call__(self) -> Collection[str]:
        return set(self.uids)


def _trunk(world: World) -> str:
    parent = world.fake.add_port(world.network, world.subnet, name="vm")
    return world.fake.add_trunk(parent["id"])


def _req(world: World, trunk: str, sgs: tuple[str, ...] | None = None) -> PortRequest:
    return PortRequest("vm1", PROJECT, world.network, world.subnet, sgs or (world.sg,), trunk)


async def _provider(
    world: World, owners: Owners | None = None, settings: VifPoolSettings = SETTINGS, **kw: Any
) -> SubportProvider:
    provider = SubportProvider(world.neutron, world.tagging, settings, owners or Owners(), **kw)
    if provider.pooled:
        await provider.rebuild()
    return provider


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def _subports(world: World, trunk: str) -> dict[str, int]:
    return {sp["port_id"]: sp["segmentation_id"] for sp in world.fake.trunks[trunk]["sub_ports"]}


def _assert_consistent(world: World, trunk: str) -> None:
    """Every port tagged for the trunk is attached once, VLAN ids unique."""
    subs = _subports(world, trunk)
    assert len(set(subs.values())) == len(subs), f"duplicate VLAN ids: {subs}"
    tagged = {p["id"] for p in world.ports(f"kuryr.trunk:{trunk}")}
    assert tagged == set(subs), f"tagged {tagged} vs attached {set(subs)}"


def test_free_vlans_are_the_lowest_unused() -> None:
    assert free_vlans([1, 2, 4], 3) == [3, 5, 6]
    assert len(free_vlans(range(1, 4094), 5)) == 1


async def test_first_acquire_creates_one_bulk_attaches_it_in_one_call_and_claims() -> None:
    world = make_world()
    trunk = _trunk(world)
    provider = await _provider(world)
    port = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert world.fake.requests.count(("POST", "/ports")) == 1
    assert world.fake.requests.count(("PUT", f"/trunks/{trunk}/add_subports")) == 1
    subs = _subports(world, trunk)
    assert len(subs) == SETTINGS.ports_pool_batch
    assert port.vlan_id == subs[port.id] and port.trunk_id == trunk
    raw = world.fake.ports[port.id]
    assert (raw["device_id"], raw["name"], raw["device_owner"]) == (
        "uid-1",
        "ns/pod",
        "trunk:subport",
    )
    assert "binding:host_id" not in raw or raw["binding:host_id"] == ""
    assert set(raw["tags"]) == set(world.tagging.in_use("uid-1", trunk))
    key = _req(world, trunk).pool_key
    assert provider.sizes() == {key: SETTINGS.ports_pool_batch - 1}
    for p in world.ports(f"kuryr.trunk:{trunk}"):
        if p["id"] != port.id:
            assert set(p["tags"]) == set(world.tagging.free(key, trunk)) and not p["device_id"]
    _assert_consistent(world, trunk)


async def test_concurrent_acquires_on_one_trunk_never_share_a_vlan_id() -> None:
    world = make_world()
    trunk = _trunk(world)
    provider = await _provider(world)
    ports = await asyncio.gather(
        *(provider.acquire(_req(world, trunk), f"uid-{i}", f"ns/p{i}") for i in range(30))
    )
    await _settle()
    assert len({p.id for p in ports}) == 30
    vlans = [p.vlan_id for p in ports]
    assert len(set(vlans)) == 30
    subs = _subports(world, trunk)
    assert all(subs[p.id] == p.vlan_id for p in ports)
    _assert_consistent(world, trunk)


async def test_two_controllers_on_one_trunk_retry_vlan_conflicts() -> None:
    world = make_world()
    trunk = _trunk(world)
    a = await _provider(world, settings=NOOP)
    b = await _provider(world, settings=NOOP)
    ports = await asyncio.gather(
        *(
            (a if i % 2 else b).acquire(_req(world, trunk), f"uid-{i}", f"ns/p{i}")
            for i in range(12)
        )
    )
    assert len({p.vlan_id for p in ports}) == 12
    _assert_consistent(world, trunk)


async def test_a_vlan_id_taken_by_another_writer_is_picked_again() -> None:
    world = make_world()
    trunk = _trunk(world)
    foreign = world.fake.add_port(world.network, world.subnet, name="human")
    provider = await _provider(world, settings=NOOP)

    def human(method: str, path: str) -> None:
        if path.endswith("/add_subports") and world.fake.on_request is not None:
            world.fake.on_request = None  # once: a human attaches with VLAN 1 in between
            world.fake("PUT", f"/trunks/{trunk}/add_subports",
                       body={"sub_ports": [{"port_id": foreign["id"], "segmentation_type": "vlan",
                                            "segmentation_id": 1}]})  # fmt: skip

    world.fake.on_request = human
    port = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert port.vlan_id == 2
    assert world.fake.requests.count(("PUT", f"/trunks/{trunk}/add_subports")) == 3
    assert _subports(world, trunk) == {foreign["id"]: 1, port.id: 2}


async def test_an_attach_that_fails_for_good_deletes_the_new_ports() -> None:
    world = make_world()
    trunk = _trunk(world)
    gone: list[str] = []
    provider = await _provider(world, on_trunk_gone=gone.append)
    world.fake.fail_next("PUT", f"/trunks/{trunk}/add_subports", 404, "TrunkNotFound", "gone")
    with pytest.raises(TrunkNotFound):
        await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert world.ports(f"kuryr.trunk:{trunk}") == []
    assert gone == [trunk]


async def test_release_keeps_the_subport_attached_in_its_pool_until_max() -> None:
    world = make_world()
    trunk = _trunk(world)
    settings = VifPoolSettings(True, 0, 2, 2, 3600)
    provider = await _provider(world, settings=settings)
    ports = [await provider.acquire(_req(world, trunk), f"u{i}", "x") for i in range(4)]
    key = _req(world, trunk).pool_key
    assert provider.sizes()[key] == 0
    for i, port in enumerate(ports):
        await provider.release(port.id, f"u{i}")
    assert provider.sizes()[key] == 2
    kept = {p.id: p.vlan_id for p in ports[:2]}
    assert _subports(world, trunk) == kept  # same VLAN ids, still attached
    for pid in kept:
        raw = world.fake.ports[pid]
        assert (raw["device_id"], raw["name"]) == ("", "")
        assert set(raw["tags"]) == set(world.tagging.free(key, trunk))
    assert set(world.fake.ports) - {world.fake.trunks[trunk]["port_id"]} == set(kept)
    again = await provider.acquire(_req(world, trunk), "u9", "y")
    assert again.id in kept and again.vlan_id == kept[again.id]
    await provider.release(again.id, "someone-else")  # not the owner's: untouched
    assert world.fake.ports[again.id]["device_id"] == "u9"


async def test_pool_less_creates_attaches_and_deletes_per_pod() -> None:
    world = make_world()
    trunk = _trunk(world)
    provider = await _provider(world, settings=NOOP)
    port = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert provider.ready and _subports(world, trunk) == {port.id: 1}
    assert world.fake.ports[port.id]["device_id"] == "uid-1"
    assert (await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")).id == port.id
    await provider.release(port.id, "uid-1")
    assert _subports(world, trunk) == {} and port.id not in world.fake.ports


async def test_a_crash_between_create_and_claim_is_finished_by_the_next_acquire() -> None:
    world = make_world()
    trunk = _trunk(world)
    key = _req(world, trunk).pool_key
    spec = PortSpec(world.network, world.subnet, PROJECT, (world.sg,), "",
                    world.tagging.in_use("uid-1", trunk), "ns/pod")  # fmt: skip
    (made,) = await world.neutron.create_ports([spec])  # created, never attached nor claimed
    provider = await _provider(world, Owners("uid-1"))
    assert provider.sizes().get(key, 0) == 0
    assert (await provider.find("uid-1")).id == made.id  # type: ignore[union-attr]
    port = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert port.id == made.id and port.vlan_id == 1
    assert world.fake.ports[made.id]["device_id"] == "uid-1"
    assert world.fake.requests.count(("POST", "/ports")) == 1


async def test_a_detached_owned_port_is_attached_again_on_acquire() -> None:
    world = make_world()
    trunk = _trunk(world)
    provider = await _provider(world, settings=NOOP)
    port = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    await world.neutron.remove_subports(trunk, [port.id])  # a human detached it
    assert (await provider.get(port.id)).vlan_id is None  # type: ignore[union-attr]
    again = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert again.id == port.id and again.vlan_id is not None
    assert world.fake.ports[port.id]["device_id"] == "uid-1"
    assert _subports(world, trunk) == {port.id: again.vlan_id}


async def test_rebuild_sorts_subports_by_what_neutron_says() -> None:
    world = make_world()
    trunk, dead_trunk = _trunk(world), _trunk(world)
    owners = Owners("alive")
    first = await _provider(world, owners)
    alive = await first.acquire(_req(world, trunk), "alive", "ns/a")
    orphan = await first.acquire(_req(world, trunk), "dead", "ns/d")
    await _settle()
    free_attached = {p["id"] for p in world.ports(f"kuryr.trunk:{trunk}") if not p["device_id"]}
    key = _req(world, trunk).pool_key

    def spec(trunk_id: str, tags: tuple[str, ...], name: str = "") -> PortSpec:
        return PortSpec(world.network, world.subnet, PROJECT, (world.sg,), "", tags, name)

    loose, half, stale = await world.neutron.create_ports(
        [
            spec(trunk, world.tagging.free(key, trunk)),  # crash before the attach
            spec(trunk, world.tagging.in_use("gone-pod", trunk), "ns/gone"),  # dead, no claim
            spec(dead_trunk, world.tagging.free(_req(world, dead_trunk).pool_key, dead_trunk)),
        ]
    )
    world.fake("DELETE", f"/trunks/{dead_trunk}")
    restarted = await _provider(world, owners)
    assert restarted.sizes() == {key: len(free_attached) + 2}
    subs = _subports(world, trunk)
    assert loose.id in subs and half.id in subs and alive.id in subs and orphan.id in subs
    assert set(world.fake.ports[half.id]["tags"]) == set(world.tagging.free(key, trunk))
    assert stale.id not in world.fake.ports
    assert world.fake.ports[orphan.id]["device_id"] == "dead"  # GC's business
    _assert_consistent(world, trunk)


async def test_gc_detaches_before_deleting_orphans_and_stranded_subports() -> None:
    world = make_world()
    trunk, vm_gone = _trunk(world), _trunk(world)
    provider = await _provider(world, settings=NOOP)
    kept = await provider.acquire(_req(world, trunk), "alive", "x")
    orphan = await provider.acquire(_req(world, trunk), "dead", "x")
    pooled = await _provider(world, settings=VifPoolSettings(True, 0, 3, 0, 3600))
    stranded = await pooled.acquire(_req(world, vm_gone), "alive2", "y")
    await pooled.release(stranded.id, "alive2")
    dropped: list[str] = []
    gc = GarbageCollector(
        world.neutron, world.tagging, GcSettings(1.0, 600.0), Owners("alive"),
        now=world.clock, live_trunks=Owners(trunk), on_trunk_gone=dropped.append,
    )  # fmt: skip
    assert (await gc.run_once()).waiting == 4  # orphan + 3 free subports of vm_gone
    world.clock.advance(601)
    result = await gc.run_once()
    assert result.deleted_orphans == [orphan.id]
    assert len(result.deleted_stranded) == 3 and set(dropped) == {vm_gone}
    assert _subports(world, vm_gone) == {} and _subports(world, trunk) == {kept.id: kept.vlan_id}
    assert {p["id"] for p in world.ports(world.tagging.cluster_tag)} == {kept.id}


async def test_mixed_routing_by_request_and_by_the_ports_trunk_tag() -> None:
    world = make_world()
    trunk = _trunk(world)
    bare = PooledPortProvider(world.neutron, world.tagging, SETTINGS, Owners())
    nested = SubportProvider(world.neutron, world.tagging, SETTINGS, Owners())
    ports = TargetedPorts(world.neutron, bare, nested)
    await ports.start()
    try:
        metal = await ports.acquire(world.request("node-a"), "m", "ns/m")
        vm = await ports.acquire(_req(world, trunk), "v", "ns/v")
        assert (metal.vlan_id, metal.binding_host_id, metal.trunk_id) == (None, "node-a", "")
        assert vm.vlan_id == _subports(world, trunk)[vm.id]
        assert (await ports.get(vm.id)).vlan_id == vm.vlan_id  # type: ignore[union-attr]
        assert (await ports.find("v")).id == vm.id  # type: ignore[union-attr]
        await ports.release(vm.id, "v")
        await ports.release(metal.id, "m")
        assert world.fake.ports[vm.id]["device_id"] == "" and vm.id in _subports(world, trunk)
        # the bare-metal port is free in the ledger at once (whatever its marks still
        # say), its marks follow
        assert bare.owns(metal.id) and await ports.find("m") is None
        await bare.marks.flush()
        assert world.fake.ports[metal.id]["device_id"] == ""
        kinds = Counter(bool(p["binding:host_id"]) for p in world.ports(world.tagging.cluster_tag))
        assert kinds[True] == SETTINGS.ports_pool_batch
    finally:
        await ports.stop()
    only_nested = TargetedPorts(world.neutron, None, nested)
    with pytest.raises(PermanentError, match="nested-vlan has no bare-metal ports"):
        await only_nested.acquire(world.request("node-a"), "m2", "x")


async def test_release_deletes_when_the_trunk_is_gone() -> None:
    world = make_world()
    trunk = _trunk(world)
    provider = await _provider(world)
    port = await provider.acquire(_req(world, trunk), "uid-1", "x")
    world.fake("DELETE", f"/trunks/{trunk}")
    await provider.release(port.id, "uid-1")
    assert port.id not in world.fake.ports


async def test_a_pool_of_a_deleted_trunk_is_not_handed_out_and_is_deleted() -> None:
    world = make_world()
    trunk = _trunk(world)
    gone: list[str] = []
    provider = await _provider(world, on_trunk_gone=gone.append)
    await provider.acquire(_req(world, trunk), "uid-1", "x")
    free = {p["id"] for p in world.ports(f"kuryr.trunk:{trunk}") if not p["device_id"]}
    world.fake("DELETE", f"/trunks/{trunk}")  # detaches every subport
    with pytest.raises(TrunkNotFound):
        await provider.acquire(_req(world, trunk), "uid-2", "y")
    await _settle()
    assert gone and set(gone) == {trunk}
    assert provider.sizes() == {}
    remaining = [p for p in world.ports(f"kuryr.trunk:{trunk}")]
    assert [p["device_id"] for p in remaining] == ["uid-1"]  # released when its pod goes
    assert not {p["id"] for p in remaining} & free


async def test_gc_deletes_free_ports_never_attached_after_the_grace_period() -> None:
    world = make_world()
    trunk = _trunk(world)
    key = _req(world, trunk).pool_key
    spec = PortSpec(world.network, world.subnet, PROJECT, (world.sg,), "",
                    world.tagging.free(key, trunk))  # fmt: skip
    (late,) = await world.neutron.create_ports([spec])  # a dead controller's bulk, landed late
    gc = GarbageCollector(
        world.neutron, world.tagging, GcSettings(1.0, 600.0), Owners(),
        now=world.clock, live_trunks=Owners(trunk),
    )  # fmt: skip
    assert (await gc.run_once()).waiting == 1
    world.clock.advance(601)
    assert (await gc.run_once()).deleted_stranded == [late.id]


async def test_gc_leaves_ports_of_a_trunk_being_attached_alone() -> None:
    world = make_world()
    trunk = _trunk(world)
    neutron = Neutron(world.fake, max_concurrency=4)  # threads: an attach can be held
    provider = SubportProvider(
        neutron, world.tagging, VifPoolSettings(True, 0, 3, 0, 3600), Owners()
    )
    await provider.rebuild()
    gc = GarbageCollector(
        neutron, world.tagging, GcSettings(1.0, 60.0), Owners("uid-1"),
        now=world.clock, live_trunks=Owners(trunk), busy_trunks=provider.busy_trunks,
    )  # fmt: skip
    held, release = threading.Event(), threading.Event()

    def hold_the_attach(method: str, path: str) -> None:
        if path.endswith("/add_subports") and not held.is_set():
            held.set()
            release.wait(30)

    world.fake.on_request = hold_the_attach
    try:
        acquiring = asyncio.ensure_future(provider.acquire(_req(world, trunk), "uid-1", "x"))
        assert await asyncio.to_thread(held.wait, 30)
        world.clock.advance(3600)  # the new port, unattached, is far past the grace period
        assert provider.busy_trunks() == {trunk}
        result = await gc.run_once()
        release.set()
        port = await acquiring
    finally:
        release.set()
        neutron.close(wait=True)
    assert (result.deleted_stranded, result.waiting) == ([], 0)
    assert provider.busy_trunks() == set()
    assert set(_subports(world, trunk)) == {p["id"] for p in world.ports(world.tagging.cluster_tag)}
    assert len(_subports(world, trunk)) == 3 and port.vlan_id is not None


async def test_a_port_deleted_before_its_attach_is_a_temporary_error_and_nothing_stays() -> None:
    world = make_world()
    trunk = _trunk(world)
    provider = await _provider(world, settings=NOOP)

    def delete_it(method: str, path: str) -> None:
        if path.endswith("/add_subports") and world.fake.on_request is not None:
            world.fake.on_request = None
            victim = next(p for p in world.ports(f"kuryr.trunk:{trunk}"))
            world.fake("DELETE", f"/ports/{victim['id']}")

    world.fake.on_request = delete_it
    with pytest.raises(TemporaryError, match="trying again with new ports"):
        await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert world.ports(f"kuryr.trunk:{trunk}") == []
    port = await provider.acquire(_req(world, trunk), "uid-1", "ns/pod")
    assert _subports(world, trunk) == {port.id: 1}
