"""Nested pods against the real sandbox Neutron: the controller (a subprocess, private
Kubernetes API) in ``nested-vlan``/``mixed`` mode gives pods VLAN subports of a trunk.

A "VM" here is what Neutron and Kubernetes see of one: a parent port on net0 with a
trunk, and a Node whose InternalIP is that port's address (``vm_factory``). One test
also plugs the parent into br-int from a network namespace, as the VM's tap would be, so
the subports go ACTIVE. Everything is tagged with the test's tag and cluster id and
deleted at teardown (``world``, ``neutron`` fixtures); tests also assert on leaks.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.controller.conftest import World
from functional.controller.harness import (
    Obj,
    Ports,
    allocated,
    converged,
    port_id_of,
    unique_name,
    wait_for,
)
from functional.controller.test_controller_crash import burst, kill_until

pytestmark = pytest.mark.functional


@dataclass(frozen=True)
class Vm:
    node: str
    port_id: str
    ip: str
    trunk_id: str


@pytest.fixture
def vm_factory(
    world: World, neutron: NeutronTracker, sandbox: Sandbox
) -> Iterator[Callable[..., Vm]]:
    made: list[str] = []

    def make(*, trunk: bool = True) -> Vm:
        name = unique_name("vm")
        port = neutron.port(sandbox.topo.net0_id, name=name)
        trunk_id = neutron.trunk(port.id, name=name).id if trunk else ""
        ip = port.fixed_ips[0]["ip_address"]
        world.kube.node(name, ip)
        made.append(name)
        return Vm(name, port.id, ip, trunk_id)

    yield make
    for name in made:
        world.kube.delete_node(name)


def _nested(world: World, sandbox: Sandbox, driver: str = "nested-vlan", **kw: Any) -> Any:
    kw.setdefault("pool_batch", 5)  # Neutron here makes ~2 ports/s: keep batches small
    ctl = world.start_controller(
        pod_vif_driver=driver, worker_subnets=(sandbox.topo.subnet0_id,), **kw
    )
    ctl.wait_role("leader")
    return ctl


def subports(sandbox: Sandbox, trunk_id: str) -> dict[str, int]:
    trunk = sandbox.conn.network.get_trunk(trunk_id)
    return {sp["port_id"]: int(sp["segmentation_id"]) for sp in trunk.sub_ports}


def vif(kp: Obj) -> Obj:
    value: Obj = kp["status"]["vifs"]["eth0"]["vif"]
    return value


def kps_by_name(world: World) -> dict[str, Obj]:
    return {k["metadata"]["name"]: k for k in world.kube.kuryrports()}


def failed_reason(kp: Obj | None) -> tuple[str, str]:
    """(reason, message) of a Failed KuryrPort's Allocated condition, else ("", "")."""
    status = (kp or {}).get("status") or {}
    if status.get("state") != "Failed":
        return "", ""
    cond = next(c for c in status.get("conditions", []) if c["type"] == "Allocated")
    return cond["reason"], cond["message"]


@pytest.mark.parametrize("pool", [True, False], ids=["pooled", "pool-less"])
def test_nested_pods_get_distinct_vlan_ids_of_the_trunk_and_give_them_back(
    world: World, sandbox: Sandbox, vm_factory: Callable[..., Vm], netns_factory: Any, pool: bool
) -> None:
    vm = vm_factory()
    _nested(world, sandbox, pool=pool)
    names = {f"nested-{i}" for i in range(5)}
    for name in sorted(names):
        world.kube.create_pod(name, vm.node)
    wait_for("5 nested pods allocated", lambda: converged(world.kube, names))

    kps = kps_by_name(world)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.kube.pods()}
    on_trunk = subports(sandbox, vm.trunk_id)
    vlans = {}
    for name, kp in kps.items():
        v = vif(kp)
        assert v["vifType"] == "vlan" and "bridge" not in v, v
        assert on_trunk[v["portId"]] == v["vlanId"], (name, v, on_trunk)
        vlans[name] = v["vlanId"]
        port = sandbox.conn.network.get_port(v["portId"])
        assert port.device_id == uids[name]
        assert port.device_owner == "trunk:subport" and not port.binding_host_id
        assert f"kuryr.trunk:{vm.trunk_id}" in port.tags
    assert len(set(vlans.values())) == 5

    if pool:  # the VM's NIC is plugged: its subports go ACTIVE, the pods' ports too
        subnet0 = sandbox.conn.network.get_subnet(sandbox.topo.subnet0_id)
        netns_factory(sandbox.conn.network.get_port(vm.port_id), subnet0)
        wait_for(
            "nested KuryrPorts Active",
            lambda: all(
                (k.get("status") or {}).get("state") == "Active" for k in world.kube.kuryrports()
            ),
        )

    gone = sorted(names)[:2]
    gone_ports = {port_id_of(kps[n]): vlans[n] for n in gone}
    for name in gone:
        world.kube.delete_pod(name)
    wait_for("deleted pods released", lambda: converged(world.kube, names - set(gone)))
    on_trunk = subports(sandbox, vm.trunk_id)
    ours = {p.id: p for p in world.ports.all()}
    for port_id, vlan in gone_ports.items():
        if pool:  # back in the trunk's pool: still attached, same VLAN, no owner
            assert on_trunk.get(port_id) == vlan
            assert Ports.owner(ours[port_id]) == ""
        else:  # detached and deleted
            assert port_id not in on_trunk and port_id not in ours
    # every port we made for the trunk is attached to it; nothing else is on it
    assert {pid for pid, p in ours.items() if Ports.trunk(p) == vm.trunk_id} == set(on_trunk)


def test_nodes_that_are_not_vms_on_trunks_fail_clearly_and_leak_nothing(
    world: World, sandbox: Sandbox, vm_factory: Callable[..., Vm]
) -> None:
    outside = unique_name("metal")
    world.kube.node(outside, "192.0.2.10")  # in no worker-nodes subnet
    no_trunk = vm_factory(trunk=False)
    _nested(world, sandbox)
    world.kube.create_pod("on-metal", outside)
    world.kube.create_pod("on-plain-vm", no_trunk.node)

    def both_failed() -> bool:
        kps = kps_by_name(world)
        return all(failed_reason(kps.get(n))[0] for n in ("on-metal", "on-plain-vm"))

    wait_for("both KuryrPorts Failed", both_failed)
    kps = kps_by_name(world)
    reason, message = failed_reason(kps["on-metal"])
    assert reason == "NodeNotNested"
    assert f"node {outside}: InternalIP(s) 192.0.2.10 are in none of" in message
    assert sandbox.topo.subnet0_id in message
    reason, message = failed_reason(kps["on-plain-vm"])
    assert reason == "NodeNotNested"
    assert f"its port {no_trunk.port_id} (address {no_trunk.ip}" in message
    assert f"openstack network trunk create --parent-port {no_trunk.port_id}" in message
    warned = {
        e["involvedObject"]["name"]
        for e in world.kube.events()
        if e["reason"] == "PortAllocationFailed" and e["type"] == "Warning"
    }
    assert warned >= {"on-metal", "on-plain-vm"}
    assert world.ports.all() == []
    world.kube.delete_pod("on-metal")
    world.kube.delete_pod("on-plain-vm")
    wait_for("pods gone", lambda: world.kube.pods() == [] and world.kube.kuryrports() == [])
    world.kube.delete_node(outside)
    assert world.ports.all() == []


def test_a_deleted_trunk_fails_new_pods_and_its_subports_are_deleted(
    world: World, sandbox: Sandbox, vm_factory: Callable[..., Vm]
) -> None:
    vm = vm_factory()
    _nested(world, sandbox)
    world.kube.create_pod("before", vm.node)
    wait_for("first pod allocated", lambda: converged(world.kube, {"before"}))
    assert len(subports(sandbox, vm.trunk_id)) > 1  # the pod's port and a warm pool
    sandbox.conn.network.delete_trunk(vm.trunk_id)  # parent unbound: Neutron detaches all
    world.kube.create_pod("after", vm.node)

    def after_failed() -> bool:
        return failed_reason(kps_by_name(world).get("after"))[0] == "NodeNotNested"

    wait_for("the new pod Failed", after_failed)
    _, message = failed_reason(kps_by_name(world)["after"])
    assert "is not the parent port of a trunk" in message
    assert f"--parent-port {vm.port_id}" in message
    for name in ("before", "after"):
        world.kube.delete_pod(name)
    wait_for("pods gone", lambda: world.kube.pods() == [] and world.kube.kuryrports() == [])
    wait_for("every port of the gone trunk deleted", lambda: world.ports.all() == [], 60)


def test_one_controller_serves_bare_metal_and_vm_nodes(
    world: World, sandbox: Sandbox, vm_factory: Callable[..., Vm]
) -> None:
    vm = vm_factory()
    _nested(world, sandbox, driver="mixed")
    world.kube.create_pod("metal", world.node)  # the sandbox host: no worker-subnet address
    world.kube.create_pod("nested", vm.node)
    wait_for("both pods allocated", lambda: converged(world.kube, {"metal", "nested"}))
    kps = kps_by_name(world)
    metal, nested = vif(kps["metal"]), vif(kps["nested"])
    assert (metal["vifType"], metal["bridge"]) == ("ovs", "br-int") and "vlanId" not in metal
    assert sandbox.conn.network.get_port(metal["portId"]).binding_host_id == world.node
    assert nested["vifType"] == "vlan" and "bridge" not in nested
    assert subports(sandbox, vm.trunk_id)[nested["portId"]] == nested["vlanId"]
    for name in ("metal", "nested"):
        world.kube.delete_pod(name)
    wait_for("released", lambda: converged(world.kube, set()))
    ours = world.ports.all()
    assert all(Ports.owner(p) == "" for p in ours)
    on_trunk = subports(sandbox, vm.trunk_id)
    assert {p.id for p in ours if Ports.trunk(p)} == set(on_trunk)


def test_the_subports_of_a_vm_that_leaves_the_cluster_are_collected(
    world: World, sandbox: Sandbox, vm_factory: Callable[..., Vm]
) -> None:
    vm = vm_factory()
    _nested(world, sandbox, gc_grace=5.0, pool_batch=3)
    world.kube.create_pod("short", vm.node)
    wait_for("pod allocated", lambda: converged(world.kube, {"short"}))
    world.kube.delete_pod("short")
    wait_for("pod released", lambda: converged(world.kube, set()))
    assert len(subports(sandbox, vm.trunk_id)) >= 3  # the trunk's warm pool
    world.kube.delete_node(vm.node)
    wait_for("the gone VM's subports detached and deleted", lambda: world.ports.all() == [], 120)
    assert subports(sandbox, vm.trunk_id) == {}


NESTED_PODS = 24
NESTED_KILLS = 3


@pytest.mark.parametrize("seed", [20261127])
def test_sigkill_during_a_nested_burst_leaves_one_subport_per_pod_and_no_orphans(
    world: World, sandbox: Sandbox, vm_factory: Callable[..., Vm], seed: int
) -> None:
    rng = random.Random(seed)
    vm = vm_factory()
    ctl = _nested(world, sandbox, gc_grace=20.0)
    live: set[str] = set()
    done = threading.Event()
    producer = threading.Thread(
        target=burst,
        args=(world, rng, live, done),
        kwargs={"node": vm.node, "pods": NESTED_PODS},
        daemon=True,
    )
    producer.start()
    kills = kill_until(ctl, rng, done, NESTED_KILLS, pause=(0.3, 2.5), after_leading=True)
    producer.join()
    ctl.wait_role("leader")

    def settled() -> bool:
        if not converged(world.kube, live):
            return False
        uids = {p["metadata"]["uid"] for p in world.kube.pods()}
        ports = world.ports.all()
        owners = Counter(Ports.owner(p) for p in ports if Ports.owner(p))
        on_trunk = subports(sandbox, vm.trunk_id)
        return (
            set(owners) == uids
            and set(owners.values()) == {1}
            and {p.id for p in ports} == set(on_trunk)  # nothing unattached, nothing foreign
        )

    wait_for("convergence after the nested burst", settled)
    kps = kps_by_name(world)
    pods = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.kube.pods()}
    ports = {p.id: p for p in world.ports.all()}
    on_trunk = subports(sandbox, vm.trunk_id)
    assert set(pods) == live and set(kps) == live
    vlans = [vif(kps[n])["vlanId"] for n in live]
    assert len(vlans) == len(set(vlans)), "two pods with one VLAN id"
    assert len(set(on_trunk.values())) == len(on_trunk), "duplicate VLAN id on the trunk"
    for name, uid in pods.items():
        v = vif(kps[name])
        assert allocated(kps[name]) and v["vifType"] == "vlan"
        assert Ports.owner(ports[v["portId"]]) == uid
        assert on_trunk[v["portId"]] == v["vlanId"]
    free = [p for p in ports.values() if not Ports.owner(p)]
    assert all(any(t.startswith("kuryr.pool:") for t in p.tags) for p in free)
    ips = [ip["ip_address"] for p in ports.values() for ip in p.fixed_ips]
    assert len(ips) == len(set(ips)), "duplicate IPs"
    assert ctl.starts == kills + 1
