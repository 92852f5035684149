"""DEL of a nested pod upstream kuryr-kubernetes plugged, in a real guest (8021q).

After the takeover the pod's VIF is adopted (``adoptedFrom``) and its VLAN device is
upstream's: made on the VM's NIC under a temporary name, moved into the pod's namespace,
renamed ``eth0``, no alias (upstream 10.0.0 ``cni/binding/nested.py``). A script runs the
``vlan`` driver's ``unplug_adopted`` in the guest on devices made that way and prints what
it saw; the test asserts that only the VIF's device goes: not one with another VLAN id,
not one carrying an alias, not for a VIF that was not adopted, not a device that is no
VLAN. No Neutron port is needed (the DEL never talks to Neutron); the guest's namespaces
are deleted at the end.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from fixtures.sandbox import Sandbox

pytestmark = pytest.mark.functional

GUEST_SCRIPT = r"""
import json, subprocess, sys
from kuryr_k8s.cni.binding import Attachment
from kuryr_k8s.cni.vlan_binding import VlanBinding
from kuryr_k8s.model.vif import Vif

cfg = json.loads(sys.argv[1])
drv = VlanBinding("kt-node", link_iface="eth0", cluster_id="kt-cluster")
adopted, plain = Vif.from_dict(cfg["adopted"]), Vif.from_dict(cfg["plain"])

def sh(cmd):
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr

def upstreams(ns, vlan, alias=""):
    # as upstream's nested driver: born on the NIC as vif_name, moved, renamed eth0
    sh(f"ip netns add {ns}")
    sh(f"ip link add link eth0 name kttmp{vlan} type vlan id {vlan}")
    sh(f"ip link set kttmp{vlan} netns {ns}")
    sh(f"ip netns exec {ns} ip link set kttmp{vlan} name eth0")
    if alias:
        sh(f"ip netns exec {ns} ip link set eth0 alias '{alias}'")
    return Attachment("c" * 64, "eth0", f"/var/run/netns/{ns}", "default", ns)

def there(ns):
    return sh(f"ip netns exec {ns} ip link show eth0")[0] == 0

out = {}
a = upstreams("kt-up1", 3101)
out["made"] = sh("ip netns exec kt-up1 ip -d -j link show eth0")[1]
out["removed"] = drv.unplug_adopted(a, adopted)
out["gone"] = not there("kt-up1")
out["again"] = drv.unplug_adopted(a, adopted)
out["other_vlan"] = drv.unplug_adopted(upstreams("kt-up2", 3102), adopted)
out["other_vlan_left"] = there("kt-up2")
out["stamped"] = drv.unplug_adopted(upstreams("kt-up3", 3101, "made by hand"), adopted)
out["stamped_left"] = there("kt-up3")
out["not_adopted"] = drv.unplug_adopted(upstreams("kt-up4", 3104), plain)
out["not_adopted_left"] = there("kt-up4")
sh("ip netns add kt-up5; ip netns exec kt-up5 ip link add eth0 type dummy")
dummy = Attachment("c" * 64, "eth0", "/var/run/netns/kt-up5", "default", "kt-up5")
out["not_vlan"] = drv.unplug_adopted(dummy, adopted)
out["not_vlan_left"] = there("kt-up5")
for n in range(1, 6):
    sh(f"ip netns del kt-up{n}")
out["vlans_left"] = sh("ip -d -j link show type vlan")[1]
print(json.dumps(out))
"""


def _vif(vlan_id: int, *, adopted: bool) -> dict[str, Any]:
    vif: dict[str, Any] = {
        "vifType": "vlan",
        "portId": str(uuid.uuid4()),
        "macAddress": "fa:16:3e:00:31:01",
        "networkId": str(uuid.uuid4()),
        "mtu": 1400,
        "vlanId": vlan_id,
        "ips": [{"address": "10.99.0.5", "cidr": "10.99.0.0/24", "subnetId": "s1"}],
    }
    if adopted:
        vif["adoptedFrom"] = "kuryr-kubernetes"
    return vif


def test_del_removes_only_upstreams_device_of_the_adopted_vif(
    vm_sandbox: Sandbox, worker: Any
) -> None:
    cfg = {"adopted": _vif(3101, adopted=True), "plain": _vif(3104, adopted=False)}
    proc = worker.exec(["python3", "-c", GUEST_SCRIPT, json.dumps(cfg)], timeout=300)
    assert proc.returncode == 0, proc.err[-3000:]
    out = json.loads(proc.out.strip().splitlines()[-1])
    (made,) = json.loads(out["made"])
    assert made["linkinfo"]["info_kind"] == "vlan" and made["linkinfo"]["info_data"]["id"] == 3101
    assert not made.get("ifalias")
    assert out["removed"] is True and out["gone"], out
    assert out["again"] is False  # a repeated DEL finds nothing
    assert (out["other_vlan"], out["other_vlan_left"]) == (False, True)
    assert (out["stamped"], out["stamped_left"]) == (False, True)
    assert (out["not_adopted"], out["not_adopted_left"]) == (False, True)
    assert (out["not_vlan"], out["not_vlan_left"]) == (False, True)
    assert json.loads(out["vlans_left"] or "[]") == []
