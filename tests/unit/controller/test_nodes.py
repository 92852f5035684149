"""Node → bare metal or trunk target, from the node's InternalIP and Neutron, over the
in-memory Neutron; errors name the node, the address, the port and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from kuryr_k8s.controller.nodes import BareMetal, NodeNotNested, NodeResolver, TrunkTarget
from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.openstack.neutron import NeutronSubnet
from unit.openstack.world import World, make_world


class Nodes:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, name: str, *ips: str) -> None:
        addresses = [{"type": "InternalIP", "address": ip} for ip in ips]
        addresses.append({"type": "Hostname", "address": name})
        self.nodes[name] = {"metadata": {"name": name}, "status": {"addresses": addresses}}

    def __call__(self, name: str) -> dict[str, Any] | None:
        return self.nodes.get(name)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def _resolver(world: World, nodes: Nodes, clock: Clock, *, require: bool) -> NodeResolver:
    sub = world.fake.subnets[world.subnet]
    subnet = NeutronSubnet(sub["id"], sub["network_id"], sub["project_id"], sub["cidr"], 4, None)
    return NodeResolver(world.neutron, [subnet], nodes, require_trunk=require, clock=clock)


def _vm(world: World, *, trunk: bool = True) -> tuple[str, str, str]:
    port = world.fake.add_port(world.network, world.subnet, name="vm")
    trunk_id = world.fake.add_trunk(port["id"]) if trunk else ""
    return port["id"], port["fixed_ips"][0]["ip_address"], trunk_id


async def test_a_vm_node_resolves_to_its_trunk_and_is_cached_for_a_minute() -> None:
    world, nodes, clock = make_world(), Nodes(), Clock()
    port, ip, trunk = _vm(world)
    nodes.add("vm1", "192.168.9.9", ip)
    resolver = _resolver(world, nodes, clock, require=True)
    assert await resolver.resolve("vm1") == TrunkTarget("vm1", trunk, port, ip)
    calls = len(world.fake.requests)
    clock.t = 59
    await resolver.resolve("vm1")
    assert len(world.fake.requests) == calls
    clock.t = 61
    await resolver.resolve("vm1")
    assert len(world.fake.requests) == calls + 1
    resolver.forget_trunk(trunk)
    await resolver.resolve("vm1")
    assert len(world.fake.requests) == calls + 2


async def test_an_address_in_no_worker_subnet_is_bare_metal_in_mixed_mode_only() -> None:
    world, nodes, clock = make_world(), Nodes(), Clock()
    nodes.add("metal", "192.168.1.5", "not-an-address")
    assert await _resolver(world, nodes, clock, require=False).resolve("metal") == BareMetal(
        "metal"
    )
    with pytest.raises(NodeNotNested) as err:
        await _resolver(world, nodes, clock, require=True).resolve("metal")
    assert "node metal: InternalIP(s) 192.168.1.5, not-an-address are in none of" in str(err.value)
    assert world.subnet in str(err.value) and "10.0.0.0/24" in str(err.value)


async def test_a_vm_port_without_a_trunk_names_the_port_and_the_fix() -> None:
    world, nodes, clock = make_world(), Nodes(), Clock()
    port, ip, _ = _vm(world, trunk=False)
    nodes.add("vm2", ip)
    with pytest.raises(NodeNotNested) as err:
        await _resolver(world, nodes, clock, require=False).resolve("vm2")
    message = str(err.value)
    assert f"node vm2: its port {port} (address {ip}" in message
    assert f"openstack network trunk create --parent-port {port}" in message


async def test_an_address_no_port_holds_and_an_unknown_node() -> None:
    world, nodes, clock = make_world(), Nodes(), Clock()
    nodes.add("ghost", "10.0.0.200")
    resolver = _resolver(world, nodes, clock, require=False)
    with pytest.raises(NodeNotNested, match="no Neutron port holds its address 10.0.0.200"):
        await resolver.resolve("ghost")
    with pytest.raises(ResourceNotReady, match="node nope"):
        await resolver.resolve("nope")


async def test_a_deleted_trunk_is_noticed_once_the_cache_entry_expires() -> None:
    world, nodes, clock = make_world(), Nodes(), Clock()
    _port, ip, trunk = _vm(world)
    nodes.add("vm1", ip)
    resolver = _resolver(world, nodes, clock, require=True)
    await resolver.resolve("vm1")
    world.fake("DELETE", f"/trunks/{trunk}")
    clock.t = 100
    with pytest.raises(NodeNotNested, match="not the parent port of a trunk"):
        await resolver.resolve("vm1")
    assert resolver.cached_trunks() == set()
