"""The ``vlan`` driver's own logic: attachment tags, and which drivers a node runs.

The driver's netlink work needs a kernel with 8021q, which only the sandbox VM has: it is
exercised for real by ``tests/functional/vm/test_vlan_binding_in_vm.py`` and the hybrid
e2e test.
"""

from __future__ import annotations

import pytest

from kuryr_k8s.cni.binding import Drivers
from kuryr_k8s.cni.daemon.main import DaemonSettings, node_drivers
from kuryr_k8s.cni.errors import UnsupportedVif
from kuryr_k8s.cni.host import links, vlan
from kuryr_k8s.cni.host.ovs import Ovsdb
from kuryr_k8s.cni.vlan_binding import VlanAlias
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.model.vif import Vif

pytestmark = pytest.mark.unit

VLAN_VIF = {
    "vifType": "vlan",
    "portId": "0ccc9c23-e19e-4f39-9137-b23ce7a2ead4",
    "macAddress": "fa:16:3e:00:00:01",
    "networkId": "n1",
    "mtu": 1442,
    "vlanId": 101,
    "ips": [{"address": "10.20.0.5", "cidr": "10.20.0.0/20", "subnetId": "s1"}],
}


def test_alias_round_trips_and_rejects_foreign_aliases() -> None:
    alias = VlanAlias("vm-1", "c" * 64, "eth0", "default/pod-a")
    assert VlanAlias.parse(alias.render()) == alias
    assert VlanAlias.parse("kuryr-cni vm-1 abc eth0") is None  # the ovs driver's veth tag
    assert VlanAlias.parse("") is None
    assert VlanAlias.parse("kuryr-vlan only three parts") is None


def test_alias_carries_cluster_and_network_and_reads_legacy_ones() -> None:
    stamped = VlanAlias("vm-1", "c" * 64, "eth0", "default/pod-a", "cluster-a", "kuryr")
    assert stamped.render().endswith(" default/pod-a cluster-a kuryr")
    assert VlanAlias.parse(stamped.render()) == stamped
    no_network = VlanAlias("vm-1", "c1", "eth0", "default/pod-a", "cluster-a", "")
    assert VlanAlias.parse(no_network.render()) == no_network
    legacy = VlanAlias.parse("kuryr-vlan vm-1 c1 eth0 default/pod-a")
    assert legacy is not None and legacy.cluster is None


def test_veth_alias_carries_cluster_and_network_and_reads_legacy_ones() -> None:
    stamped = links.parse_alias(links.alias_for("n1", "c1", "eth0", "cluster-a", "kuryr"))
    assert stamped == links.HostAlias("n1", "c1", "eth0", "cluster-a", "kuryr")
    legacy = links.parse_alias("kuryr-cni n1 c1 eth0")
    assert legacy == links.HostAlias("n1", "c1", "eth0") and legacy.cluster is None
    assert links.parse_alias("kuryr-cni n1 c1") is None
    assert links.parse_alias("kuryr-vlan n1 c1 eth0 ns/p") is None


def test_link_iface_comes_from_the_binding_section() -> None:
    conf = ConfigFile.from_text(
        "[cni_daemon]\novsdb_connection =\n[binding]\nlink_iface = ens3\n"
        "driver = kuryr.lib.binding.drivers.vlan\n"
    )
    settings = DaemonSettings.from_config(conf)
    assert settings.link_iface == "ens3"
    assert settings.ovsdb_connection == ""


def test_a_node_without_ovsdb_and_without_8021q_refuses_to_start() -> None:
    if vlan.vlan_supported():
        pytest.skip("this kernel has 8021q: the daemon would run the vlan driver")
    settings = DaemonSettings(node_name="n", ovsdb_connection="")
    with pytest.raises(ConfigError, match="can bind nothing"):
        node_drivers(settings, None)


def test_a_vlan_vif_on_a_node_without_the_vlan_driver_is_unsupported() -> None:
    if vlan.vlan_supported():
        pytest.skip("this kernel has 8021q")
    settings = DaemonSettings(node_name="n")
    drivers = Drivers(node_drivers(settings, Ovsdb("unix:/nonexistent")))
    assert [d.vif_type for d in drivers.all()] == ["ovs"]
    with pytest.raises(UnsupportedVif, match="nested pods"):
        drivers.for_vif(Vif.from_dict(VLAN_VIF))
