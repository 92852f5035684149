"""The ``vlan`` binding driver, for real, inside a sandbox VM whose NIC is a trunk parent.

The driver needs a kernel with 8021q, which only the guest has. A script runs the driver
in the guest (the project's code is on the VM's app disk) against real subports of the
VM's trunk (created here with openstacksdk) and prints what it saw as JSON; the test
asserts on that and on Neutron. Cases: plug (device born in the pod netns with the VIF's
VLAN id, MAC, MTU, address; the pod reaches router1 through the subport), a repeated ADD,
CHECK, a stale device of ours for the same VLAN id (a previous pod's) replaced, a device
that is not ours refused with a clear error, a pod MTU above the NIC's refused, DEL twice,
and nothing left in the guest afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.sandbox import Sandbox

pytestmark = pytest.mark.functional

GUEST_SCRIPT = r"""
import json, subprocess, sys
from kuryr_k8s.cni.binding import Attachment, Plugged
from kuryr_k8s.cni.errors import HostError
from kuryr_k8s.cni.host import vlan
from kuryr_k8s.cni.vlan_binding import VlanBinding
from kuryr_k8s.model.vif import Vif

cfg = json.loads(sys.argv[1])
node = cfg["node"]
drv = VlanBinding(node, link_iface="eth0")
out = {}

def sh(cmd):
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr

def netns(name):
    sh(f"ip netns add {name}; ip netns exec {name} ip link set lo up")
    return f"/var/run/netns/{name}"

def att(cid, ns, pod):
    return Attachment(container_id=cid, ifname="eth0", netns=ns, pod_namespace="default",
                      pod_name=pod)

def err(fn):
    try:
        fn()
        return None
    except HostError as exc:
        return str(exc)

vif1, vif2, vif3 = (Vif.from_dict(v) for v in cfg["vifs"])
ns1, ns2, ns3 = netns("kt-p1"), netns("kt-p2"), netns("kt-p3")
a1 = att("c1" * 32, ns1, "p1")
drv.plug(a1, vif1)
out["link1"] = sh("ip netns exec kt-p1 ip -d -j link show eth0")[1]
out["addr1"] = sh("ip netns exec kt-p1 ip -j addr show eth0")[1]
out["ping1"] = sh(f"ip netns exec kt-p1 ping -c 2 -W 2 -w 30 {cfg['gateway']}")
drv.plug(a1, vif1)  # repeated ADD
out["check1"] = drv.check(a1, vif1)
out["plugged"] = [(p.container_id, p.ifname, p.netns, p.pod_key) for p in drv.plugged()]

# A previous pod's device for vif2's VLAN, left behind (daemon crash, no DEL).
stale = att("0d" * 32, netns("kt-old"), "old")
drv.plug(stale, vif2)
a2 = att("c2" * 32, ns2, "p2")
drv.plug(a2, vif2)
out["stale_gone"] = sh("ip netns exec kt-old ip link show eth0")[0] != 0
out["link2"] = sh("ip netns exec kt-p2 ip -d -j link show eth0")[1]

# Somebody else's device holds vif3's VLAN id on eth0.
sh(f"ip link add link eth0 name eth0.{vif3.vlan_id} type vlan id {vif3.vlan_id}")
a3 = att("c3" * 32, ns3, "p3")
out["foreign"] = err(lambda: drv.plug(a3, vif3))
out["foreign_left"] = sh("ip netns exec kt-p3 ip link show eth0")[0] == 0
sh(f"ip link del eth0.{vif3.vlan_id}")

# A pod network MTU above the NIC's.
big = Vif.from_dict({**cfg["vifs"][2], "mtu": 9000})
out["mtu"] = err(lambda: drv.plug(a3, big))
out["mtu_left"] = sh("ip netns exec kt-p3 ip link show eth0")[0] == 0

for a in (a1, a2, a1, a2):  # DEL twice
    drv.unplug(Plugged(a.container_id, a.ifname, "", a.netns))
out["after_del"] = [p.container_id for p in drv.plugged()]
for name in ("kt-p1", "kt-p2", "kt-p3", "kt-old"):
    sh(f"ip netns del {name}")
out["vlans_left"] = sh("ip -d -j link show type vlan")[1]
print(json.dumps(out))
"""


@pytest.fixture
def subports(vm_sandbox: Sandbox, worker: Any) -> Iterator[list[Any]]:
    """Three ports on net1 attached to the worker's trunk (VLAN ids 3001-3003)."""
    net = vm_sandbox.conn.network
    topo = vm_sandbox.topo
    tag = f"kt-vlan-{uuid.uuid4().hex[:6]}"
    made = []
    try:
        for _ in range(3):
            port = net.create_port(
                network_id=topo.net1_id,
                project_id=topo.project_id,
                security_group_ids=[topo.default_sg_id],
            )
            net.set_tags(port, [tag])
            made.append(port)
        net.add_trunk_subports(
            worker.info.trunk_id,
            [
                {"port_id": p.id, "segmentation_type": "vlan", "segmentation_id": 3001 + i}
                for i, p in enumerate(made)
            ],
        )
        yield [net.get_port(p.id) for p in made]
    finally:
        if made:
            net.delete_trunk_subports(worker.info.trunk_id, [{"port_id": p.id} for p in made])
        for port in made:
            net.delete_port(port)


def _vif(port: Any, vlan_id: int, subnet: Any, mtu: int) -> dict[str, Any]:
    return {
        "vifType": "vlan",
        "portId": port.id,
        "macAddress": port.mac_address,
        "networkId": port.network_id,
        "mtu": mtu,
        "vlanId": vlan_id,
        "active": True,
        "ips": [
            {
                "address": port.fixed_ips[0]["ip_address"],
                "cidr": subnet.cidr,
                "subnetId": subnet.id,
                "gateway": subnet.gateway_ip,
            }
        ],
    }


def test_vlan_driver_in_a_real_guest(vm_sandbox: Sandbox, worker: Any, subports: list[Any]) -> None:
    net = vm_sandbox.conn.network
    subnet = net.get_subnet(vm_sandbox.topo.subnet1_id)
    mtu = vm_sandbox.topo.mtu
    deadline = time.monotonic() + 60
    while any(net.get_port(p.id).status != "ACTIVE" for p in subports):
        assert time.monotonic() < deadline, "subports not ACTIVE with their parent plugged"
        time.sleep(0.5)
    cfg = {
        "node": f"kt-{worker.name}",
        "gateway": subnet.gateway_ip,
        "vifs": [_vif(p, 3001 + i, subnet, mtu) for i, p in enumerate(subports)],
    }
    proc = worker.exec(["python3", "-c", GUEST_SCRIPT, json.dumps(cfg)], timeout=300)
    assert proc.returncode == 0, proc.err[-3000:]
    out = json.loads(proc.out.strip().splitlines()[-1])

    (link1,) = json.loads(out["link1"])
    assert link1["linkinfo"]["info_kind"] == "vlan"
    assert link1["linkinfo"]["info_data"]["id"] == 3001
    assert link1["address"] == subports[0].mac_address
    assert link1["mtu"] == mtu
    (addr1,) = json.loads(out["addr1"])
    assert subports[0].fixed_ips[0]["ip_address"] in [a["local"] for a in addr1["addr_info"]]
    rc, text = out["ping1"]
    assert rc == 0, text
    assert out["check1"] == []
    assert [p[0] for p in out["plugged"]] == ["c1" * 32]
    assert out["plugged"][0][3] == "default/p1"

    assert out["stale_gone"], "the previous pod's device for the same VLAN id is still there"
    (link2,) = json.loads(out["link2"])
    assert link2["linkinfo"]["info_data"]["id"] == 3002

    assert out["foreign"] is not None and "kuryr did not create" in out["foreign"], out
    assert "VLAN 3003" in out["foreign"]
    assert not out["foreign_left"]
    assert out["mtu"] is not None and "MTU" in out["mtu"] and "9000" in out["mtu"], out
    assert not out["mtu_left"]

    assert out["after_del"] == []
    assert json.loads(out["vlans_left"] or "[]") == []
