"""The KuryrPort reconciler in nested modes: ``vlan`` VIFs for pods on VM nodes, ``ovs``
for bare metal, and a node that is not a VM on a trunk fails the KuryrPort with reason
``NodeNotNested`` and a Warning Event (in-memory API and provider, as test_reconcilers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kuryr_k8s.controller.kuryrports import KuryrPortReconciler
from kuryr_k8s.controller.nodes import BareMetal, NodeNotNested, NodeTarget, TrunkTarget
from kuryr_k8s.openstack.neutron import TrunkNotFound
from unit.controller import test_reconcilers as rec
from unit.controller.test_reconcilers import NETWORK, NS, World, condition, vif_of

world = rec.world  # the same fixture: in-memory API, informers, FakePorts

TRUNK = "7a0c0c3e-0000-4000-8000-00000000000a"


@dataclass
class Targets:
    """Node name -> what the resolver says (an exception is raised)."""

    by_node: dict[str, NodeTarget | Exception] = field(default_factory=dict)

    async def resolve(self, node_name: str) -> NodeTarget:
        got = self.by_node.get(node_name, BareMetal(node_name))
        if isinstance(got, Exception):
            raise got
        return got


def _nested(world: World, targets: Targets) -> None:
    world.kp_rec = KuryrPortReconciler(
        world.client, world.pods.store, world.kps.store, world.ports, NETWORK, world.events,
        nodes=targets,
    )  # fmt: skip


async def test_vm_nodes_get_vlan_vifs_and_bare_metal_nodes_ovs(world: World) -> None:
    targets = Targets({"vm1": TrunkTarget("vm1", TRUNK, "parent", "10.10.0.5")})
    _nested(world, targets)
    nested_uid = await world.add_pod("nested", node="vm1")
    metal_uid = await world.add_pod("metal", node="node1")
    assert await world.converge(f"{NS}/nested", f"{NS}/metal") == []
    nested, metal = world.kp("nested"), world.kp("metal")
    assert nested is not None and metal is not None
    vif = vif_of(nested)
    [port] = world.ports.owned_by(nested_uid)
    assert (vif.vif_type, vif.vlan_id, vif.bridge) == ("vlan", port.vlan_id, None)
    raw = nested["status"]["vifs"]["eth0"]["vif"]
    assert raw["vlanId"] == port.vlan_id and "bridge" not in raw
    assert (vif_of(metal).vif_type, vif_of(metal).bridge) == ("ovs", "br-int")
    assert world.ports.owned_by(metal_uid)[0].vlan_id is None
    assert any("VLAN" in m for _, _, r, m in world.events.emitted if r == "PortAllocated")


async def test_a_node_that_is_not_nested_fails_the_kuryrport_with_a_clear_reason(
    world: World,
) -> None:
    why = NodeNotNested(
        "node vm2: its port p1 (address 10.10.0.9 ...) is not the parent port of a trunk; "
        "create one: openstack network trunk create ..."
    )
    _nested(world, Targets({"vm2": why}))
    await world.add_pod("stuck", node="vm2")
    errors = await world.converge(f"{NS}/stuck")
    assert errors and all(isinstance(e, NodeNotNested) for e in errors)
    kp = world.kp("stuck")
    assert kp is not None
    assert kp["status"]["state"] == "Failed"
    allocated = condition(kp, "Allocated")
    assert (allocated["status"], allocated["reason"]) == ("False", "NodeNotNested")
    assert "trunk create" in allocated["message"]
    warnings = [(t, r, m) for k, t, r, m in world.events.emitted if k == f"{NS}/stuck"]
    assert warnings[0][:2] == ("Warning", "PortAllocationFailed")
    assert warnings[0][2].startswith("NodeNotNested: node vm2")
    assert world.ports.ports == {}


async def test_a_trunk_deleted_under_a_node_is_reported_as_the_node_not_nested(
    world: World,
) -> None:
    targets = Targets({"vm1": TrunkTarget("vm1", TRUNK, "parent", "10.10.0.5")})
    _nested(world, targets)
    world.ports.faults.append(TrunkNotFound(f"Neutron get_subports: Trunk {TRUNK} not found"))

    async def after_the_provider_dropped_the_cache(node_name: str) -> NodeTarget:
        if world.ports.calls:  # the resolver is asked again once acquire failed
            raise NodeNotNested(
                f"node {node_name}: its port parent is not the parent port of a trunk"
            )
        return TrunkTarget("vm1", TRUNK, "parent", "10.10.0.5")

    targets.resolve = after_the_provider_dropped_the_cache  # type: ignore[method-assign]
    await world.add_pod("orphaned", node="vm1")
    errors = await world.converge(f"{NS}/orphaned")
    assert errors and isinstance(errors[0], NodeNotNested)
    kp = world.kp("orphaned")
    assert kp is not None and kp["status"]["state"] == "Failed"
    assert condition(kp, "Allocated")["reason"] == "NodeNotNested"
    warnings = [m for k, t, r, m in world.events.emitted if k == f"{NS}/orphaned"]
    assert warnings == [f"NodeNotNested: {errors[0]}"]  # once, with the node's reason
