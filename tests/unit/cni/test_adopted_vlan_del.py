"""DEL of a nested pod upstream kuryr-kubernetes plugged, after our takeover: upstream's
VLAN device in the pod's namespace has no stamp of ours, so the ``vlan`` driver removes it
only when it is provably the adopted VIF's (the pod's interface, a VLAN on the node's NIC
with the VIF's VLAN id, no alias).

The netlink part needs a kernel with 8021q (only the sandbox VM has one); here: the rule
(:func:`upstreams_device`, the input is what ``vlan.vlan_device_named`` reads) and the
cases the driver decides before touching the host.
"""

from __future__ import annotations

import dataclasses

import pytest

from kuryr_k8s.cni.binding import Attachment
from kuryr_k8s.cni.host.vlan import VlanDevice
from kuryr_k8s.cni.vlan_binding import VlanAlias, VlanBinding, upstreams_device
from unit.cni.fakes import make_vif

pytestmark = pytest.mark.unit

NETNS = "/var/run/netns/cni-1234"
ADOPTED = dataclasses.replace(make_vif(vif_type="vlan"), adopted=True)  # VLAN 101


def _device(vlan_id: int = 101, alias: str = "") -> VlanDevice:
    return VlanDevice(NETNS, "eth0", vlan_id, alias)


def test_upstreams_unstamped_device_with_the_vifs_vlan_is_removed() -> None:
    assert upstreams_device(_device(), ADOPTED)


def test_anything_else_is_left_alone() -> None:
    ours = VlanAlias("vm1", "c" * 64, "eth0", "ns/pod", "cluster-a").render()
    left = {
        "not there, or not a VLAN on the node's NIC": (None, ADOPTED),
        "another VLAN id": (_device(vlan_id=102), ADOPTED),
        "stamped by our daemon": (_device(alias=ours), ADOPTED),
        "stamped by somebody else": (_device(alias="made by hand"), ADOPTED),
        "the VIF was not adopted": (_device(), dataclasses.replace(ADOPTED, adopted=False)),
    }
    for why, (device, vif) in left.items():
        assert not upstreams_device(device, vif), why


def test_the_driver_decides_without_the_host_when_it_cannot_prove_anything() -> None:
    att = Attachment("c1" * 32, "eth0", NETNS, "ns", "pod")
    driver = VlanBinding("vm1", link_iface="kt-no-such-nic", cluster_id="cluster-a")
    assert not driver.unplug_adopted(att, dataclasses.replace(ADOPTED, adopted=False))
    assert not driver.unplug_adopted(dataclasses.replace(att, netns=""), ADOPTED)
    assert not driver.unplug_adopted(att, ADOPTED)  # no such NIC: nothing is proven
