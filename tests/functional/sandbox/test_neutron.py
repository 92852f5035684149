"""The sandbox's Neutron is real: CRUD of networks, subnets, ports, trunks and subports,
ports plugged into br-int go ACTIVE, and traffic flows (same network and through
router1)."""

from __future__ import annotations

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.traffic import ping, tcp_echo
from kuryr_k8s.sandbox.openstack import hostplug

pytestmark = pytest.mark.functional


def test_network_subnet_port_create_and_delete(neutron: NeutronTracker) -> None:
    conn = neutron.conn
    net = neutron.network(name="kt-crud")
    sub = neutron.subnet(net.id, "192.0.2.0/24", name="kt-crud-sub")
    port = neutron.port(net.id, name="kt-crud-port")

    assert conn.network.get_network(net.id).subnet_ids == [sub.id]
    assert port.fixed_ips[0]["subnet_id"] == sub.id
    assert neutron.tag in conn.network.get_port(port.id).tags

    conn.network.delete_port(port)
    conn.network.delete_subnet(sub)
    conn.network.delete_network(net)
    assert conn.network.find_port(port.id) is None
    assert conn.network.find_subnet(sub.id) is None
    assert conn.network.find_network(net.id) is None


def test_trunk_with_vlan_subport(neutron: NeutronTracker, sandbox: Sandbox) -> None:
    conn = neutron.conn
    parent = neutron.port(sandbox.topo.net0_id, name="kt-parent")
    child = neutron.port(sandbox.topo.net1_id, name="kt-child")
    trunk = neutron.trunk(parent.id, name="kt-trunk")

    conn.network.add_trunk_subports(
        trunk, [{"port_id": child.id, "segmentation_type": "vlan", "segmentation_id": 101}]
    )
    subports = conn.network.get_trunk_subports(trunk)["sub_ports"]
    assert [(s["port_id"], s["segmentation_id"]) for s in subports] == [(child.id, 101)]
    assert conn.network.get_port(child.id).device_owner == "trunk:subport"

    conn.network.delete_trunk_subports(trunk, [{"port_id": child.id}])
    assert conn.network.get_trunk_subports(trunk)["sub_ports"] == []
    conn.network.delete_trunk(trunk)
    assert conn.network.find_trunk(trunk.id) is None


def _bound_port(neutron: NeutronTracker, sandbox: Sandbox, network_id: str, name: str) -> object:
    return neutron.port(
        network_id,
        name=name,
        device_owner="compute:kuryr",
        binding_host_id=sandbox.settings.hostname,
        security_group_ids=[sandbox.topo.default_sg_id],
    )


def test_plugged_port_goes_active(
    neutron: NeutronTracker, sandbox: Sandbox, netns_factory: object
) -> None:
    conn = neutron.conn
    port = _bound_port(neutron, sandbox, sandbox.topo.net1_id, "kt-active")
    assert conn.network.get_port(port.id).status == "DOWN"  # type: ignore[attr-defined]
    subnet = conn.network.get_subnet(sandbox.topo.subnet1_id)

    plugged = netns_factory(port, subnet)  # type: ignore[operator]

    neutron.wait_port_status(port.id, "ACTIVE")  # type: ignore[attr-defined]
    assert hostplug.ovn_installed(sandbox.ctx, plugged.host_ifname)


def test_two_netns_ping_and_tcp_on_one_network(
    neutron: NeutronTracker, sandbox: Sandbox, netns_factory: object
) -> None:
    subnet = neutron.conn.network.get_subnet(sandbox.topo.subnet1_id)
    a_port = _bound_port(neutron, sandbox, sandbox.topo.net1_id, "kt-a")
    b_port = _bound_port(neutron, sandbox, sandbox.topo.net1_id, "kt-b")
    a = netns_factory(a_port, subnet)  # type: ignore[operator]
    b = netns_factory(b_port, subnet)  # type: ignore[operator]
    for p in (a_port, b_port):
        neutron.wait_port_status(p.id, "ACTIVE")  # type: ignore[attr-defined]

    result = ping(a.netns, b.ip)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0% packet loss" in result.stdout
    # TCP both ways (fails silently if TX checksum offload were left on: pitfall 1).
    assert tcp_echo(b.netns, b.ip, a.netns, payload="a-to-b") == "echo:a-to-b"
    assert tcp_echo(a.netns, a.ip, b.netns, payload="b-to-a") == "echo:b-to-a"


def test_traffic_across_router1(
    neutron: NeutronTracker, sandbox: Sandbox, netns_factory: object
) -> None:
    conn = neutron.conn
    vm_port = _bound_port(neutron, sandbox, sandbox.topo.net0_id, "kt-vm")
    pod_port = _bound_port(neutron, sandbox, sandbox.topo.net1_id, "kt-pod")
    vm = netns_factory(vm_port, conn.network.get_subnet(sandbox.topo.subnet0_id))  # type: ignore[operator]
    pod = netns_factory(pod_port, conn.network.get_subnet(sandbox.topo.subnet1_id))  # type: ignore[operator]
    for p in (vm_port, pod_port):
        neutron.wait_port_status(p.id, "ACTIVE")  # type: ignore[attr-defined]

    for src, dst in ((pod, vm), (vm, pod)):
        result = ping(src.netns, dst.ip)
        assert result.returncode == 0, result.stdout + result.stderr
    assert tcp_echo(vm.netns, vm.ip, pod.netns, payload="pod-to-vm") == "echo:pod-to-vm"
