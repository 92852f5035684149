"""Trunk calls of the adapter over the in-memory Neutron, whose trunks behave as Neutron
Zed ML2/OVN was measured to (``docs/design/nested.md``)."""

from __future__ import annotations

import pytest

from kuryr_k8s.openstack.neutron import (
    NeutronRejected,
    NotASubport,
    PortIsSubport,
    PortSpec,
    SubPort,
    TrunkNotFound,
    VlanConflict,
)
from kuryr_k8s.openstack.ports import SUBPORT_OWNER
from unit.openstack.world import PROJECT, World, make_world


async def _ports(world: World, n: int, device_id: str = "") -> list[str]:
    spec = PortSpec(world.network, world.subnet, PROJECT, (world.sg,), "", ("t",), "", device_id)
    return [p.id for p in await world.neutron.create_ports([spec] * n)]


def _trunk(world: World) -> tuple[str, str]:
    parent = world.fake.add_port(world.network, world.subnet, name="vm")
    return world.fake.add_trunk(parent["id"]), parent["id"]


async def test_attach_rewrites_device_owner_and_the_trunk_lists_the_vlan_ids() -> None:
    world = make_world()
    trunk, parent = _trunk(world)
    a, b = await _ports(world, 2)
    before = (await world.neutron.get_port(a)).revision_number  # type: ignore[union-attr]
    after = await world.neutron.add_subports(trunk, [SubPort(a, 7), SubPort(b, 8)])
    assert set(after) == {SubPort(a, 7), SubPort(b, 8)}
    assert set(await world.neutron.get_subports(trunk)) == set(after)
    port = await world.neutron.get_port(a)
    assert port is not None
    assert (port.device_owner, port.device_id, port.binding_host_id) == (SUBPORT_OWNER, "", "")
    assert port.revision_number == before + 1
    parent_port = await world.neutron.get_port(parent)
    assert parent_port is not None and parent_port.trunk_parent_of == trunk
    [listed] = await world.neutron.list_trunks([trunk])
    assert (listed.port_id, listed.vlan_of(b)) == (parent, 8)


async def test_attach_refusals_map_to_the_error_tree_and_change_nothing() -> None:
    world = make_world()
    trunk, _ = _trunk(world)
    a, b = await _ports(world, 2)
    [owned] = await _ports(world, 1, device_id="uid-1")
    await world.neutron.add_subports(trunk, [SubPort(a, 100)])
    with pytest.raises(VlanConflict):
        await world.neutron.add_subports(trunk, [SubPort(b, 101), SubPort(b, 100)])
    with pytest.raises(PortIsSubport):
        await world.neutron.add_subports(trunk, [SubPort(a, 102)])
    with pytest.raises(NeutronRejected, match="attached device uid-1"):
        await world.neutron.add_subports(trunk, [SubPort(owned, 103)])
    with pytest.raises(TrunkNotFound):
        await world.neutron.add_subports("nope", [SubPort(b, 1)])
    assert await world.neutron.get_subports(trunk) == (SubPort(a, 100),)


async def test_a_subport_is_deleted_only_after_it_is_detached() -> None:
    world = make_world()
    trunk, parent = _trunk(world)
    [a] = await _ports(world, 1)
    await world.neutron.add_subports(trunk, [SubPort(a, 5)])
    with pytest.raises(PortIsSubport):
        await world.neutron.delete_port(a)
    with pytest.raises(NeutronRejected, match="PortInUseAsTrunkParent|parent port"):
        await world.neutron.delete_port(parent)
    assert await world.neutron.detach(trunk, a) is True
    port = await world.neutron.get_port(a)
    assert port is not None and port.device_owner == ""
    assert await world.neutron.detach(trunk, a) is False
    with pytest.raises(NotASubport):
        await world.neutron.remove_subports(trunk, [a])
    assert await world.neutron.delete_port(a) is True


async def test_deleting_a_trunk_detaches_its_subports() -> None:
    world = make_world()
    trunk, _ = _trunk(world)
    [a] = await _ports(world, 1)
    await world.neutron.add_subports(trunk, [SubPort(a, 5)])
    assert world.fake("DELETE", f"/trunks/{trunk}")[0] == 204  # a human deleting it
    assert await world.neutron.get_trunk(trunk) is None
    port = await world.neutron.get_port(a)
    assert port is not None and port.device_owner == ""
    with pytest.raises(TrunkNotFound):
        await world.neutron.get_subports(trunk)
    assert await world.neutron.detach(trunk, a) is False
    assert await world.neutron.delete_port(a) is True


async def test_port_lookup_by_fixed_ip_and_extension_check() -> None:
    world = make_world()
    vm = world.fake.add_port(world.network, world.subnet)
    ip = vm["fixed_ips"][0]["ip_address"]
    found = await world.neutron.ports_with_ip(world.subnet, ip)
    assert [p.id for p in found] == [vm["id"]]
    assert await world.neutron.ports_with_ip(world.subnet, "10.0.0.250") == []
    assert await world.neutron.has_extension("trunk")
    world.fake.extensions.discard("trunk")
    assert not await world.neutron.has_extension("trunk")
