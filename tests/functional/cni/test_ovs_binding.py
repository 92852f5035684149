"""The OVS binding driver on the real host: netlink, the sandbox's OVS (netdev) and OVN."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from fixtures.sandbox import ACTIVE_TIMEOUT, NeutronTracker
from functional.cni.conftest import HostScope, VifFactory
from functional.traffic import ping
from kuryr_k8s.cni.binding import Attachment, Plugged
from kuryr_k8s.cni.errors import BridgeMissing, HostError, UnknownContainer
from kuryr_k8s.cni.host import links
from kuryr_k8s.cni.host.ovs import Ovsdb
from kuryr_k8s.cni.ovs_binding import OvsBinding

pytestmark = pytest.mark.functional


def attachment(netns: str, container: str = "cont-1", ifname: str = "eth0") -> Attachment:
    return Attachment(container, ifname, netns, "ns", "pod-a", "uid-1")


def wait_ready(driver: OvsBinding, att: Attachment, vif: object) -> None:
    deadline = time.monotonic() + ACTIVE_TIMEOUT
    while driver.ready_many([(att, vif)]) != [True]:  # type: ignore[list-item]
        assert time.monotonic() < deadline, "ovn-installed never appeared"
        time.sleep(0.05)


def test_plug_check_traffic_unplug(
    host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory, neutron: NeutronTracker
) -> None:
    driver = OvsBinding(ovsdb, host.node)
    vif = neutron_vif()
    att = attachment(host.netns())
    driver.plug(att, vif)
    driver.plug(att, vif)  # a repeated ADD changes nothing

    link = links.pod_link(att.netns, "eth0")
    assert link is not None
    assert (link.mac, link.mtu, link.up) == (vif.mac_address, vif.mtu, True)
    assert vif.ips[0].interface in link.addresses
    assert link.default_gateway == vif.default_gateway
    assert not links.tx_checksum_on(att.netns, "eth0")
    iface = ovsdb.interface(vif.host_ifname)
    assert iface is not None and iface.bridge == "br-int"
    ids = iface.external_ids
    assert ids["iface-id"] == vif.port_id and ids["attached-mac"] == vif.mac_address
    assert (ids["iface-status"], ids["vm-uuid"]) == ("active", "uid-1")
    assert [p.container_id for p in driver.plugged()] == ["cont-1"]
    assert driver.check(att, vif) == []

    wait_ready(driver, att, vif)
    neutron.wait_port_status(vif.port_id, "ACTIVE")
    assert vif.default_gateway
    result = ping(Path(att.netns).name, vif.default_gateway)
    assert result.returncode == 0, result.stdout + result.stderr

    driver.unplug(Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns))
    driver.unplug(Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns))
    assert driver.plugged() == []
    assert links.pod_link(att.netns, "eth0") is None
    assert driver.check(att, vif) == [f"eth0 is missing in {att.netns}"]


def test_check_reports_what_differs(host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory) -> None:
    driver = OvsBinding(ovsdb, host.node)
    vif = neutron_vif()
    att = attachment(host.netns())
    driver.plug(att, vif)
    name = Path(att.netns).name
    subprocess.run(["ip", "-n", name, "addr", "flush", "dev", "eth0"], check=True)
    ovsdb.delete_port(vif.host_ifname)
    problems = driver.check(att, vif)
    assert any("lacks address" in p for p in problems)
    assert any("OVS has no interface" in p for p in problems)
    driver.unplug(Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns))


def test_missing_bridge_leaves_nothing(
    host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory
) -> None:
    driver = OvsBinding(ovsdb, host.node)
    vif = neutron_vif(bridge="br-kuryr-missing")
    with pytest.raises(BridgeMissing, match="br-kuryr-missing"):
        driver.plug(attachment(host.netns()), vif)
    assert driver.plugged() == []
    assert host.residue().keys() <= {"netns"}


def test_missing_netns_leaves_nothing(
    host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory, tmp_path: Path
) -> None:
    driver = OvsBinding(ovsdb, host.node)
    with pytest.raises(UnknownContainer, match="does not exist"):
        driver.plug(attachment(str(tmp_path / "no-such-netns")), neutron_vif())
    assert driver.plugged() == []
    assert not (tmp_path / "no-such-netns").exists()


def test_taken_ifname_in_the_pod_leaves_nothing(
    host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory
) -> None:
    driver = OvsBinding(ovsdb, host.node)
    vif = neutron_vif()
    att = attachment(host.netns())
    name = Path(att.netns).name
    subprocess.run(  # no dummy module on this host: a veth inside the netns
        ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"],
        check=True,
    )
    with pytest.raises(HostError, match="already exists"):
        driver.plug(att, vif)
    assert driver.plugged() == []
    assert vif.host_ifname not in links.host_aliases()


def test_newer_sandbox_of_the_pod_replaces_the_stale_one(
    host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory
) -> None:
    driver = OvsBinding(ovsdb, host.node)
    vif = neutron_vif()
    old, new = attachment(host.netns("old"), "old-c"), attachment(host.netns("new"), "new-c")
    driver.plug(old, vif)
    driver.plug(new, vif)
    assert [p.container_id for p in driver.plugged()] == ["new-c"]
    assert links.pod_link(old.netns, "eth0") is None
    assert driver.check(new, vif) == []
    driver.unplug(Plugged(new.container_id, new.ifname, vif.host_ifname, new.netns))


def test_half_made_veth_is_found_and_removed(host: HostScope, ovsdb: Ovsdb) -> None:
    driver = OvsBinding(ovsdb, host.node)
    netns = host.netns()
    name = "tapkctesthalf"
    host.host_ifnames.add(name)
    links.ensure_veth(
        name,
        "eth0",
        netns,
        mac="fa:16:3e:00:00:99",
        mtu=1400,
        alias=links.alias_for(host.node, "crashed", "eth0"),
    )
    (found,) = driver.plugged()
    assert (found.container_id, found.host_ifname, found.netns) == ("crashed", name, "")
    driver.unplug(found)
    assert driver.plugged() == []


def test_stamps_and_a_vanished_veth_is_plugged_again(
    host: HostScope, ovsdb: Ovsdb, neutron_vif: VifFactory, neutron: NeutronTracker
) -> None:
    """The row and the veth carry cluster id and network; after the host veth is deleted
    by hand the row is reported without its link, and plugging again restores traffic."""
    driver = OvsBinding(ovsdb, host.node, cluster_id="cluster-x")
    vif = neutron_vif()
    att = Attachment("cont-1", "eth0", host.netns(), "ns", "pod-a", "uid-1", network="kuryr")
    driver.plug(att, vif)
    iface = ovsdb.interface(vif.host_ifname)
    assert iface is not None
    ids = iface.external_ids
    assert (ids["kuryr-cluster"], ids["kuryr-network"]) == ("cluster-x", "kuryr")
    alias = links.parse_alias(links.link_alias(vif.host_ifname) or "")
    assert alias is not None and (alias.cluster, alias.network) == ("cluster-x", "kuryr")
    (found,) = driver.plugged()
    assert (found.cluster, found.network, found.host_link) == ("cluster-x", "kuryr", True)
    assert driver.lost(att, vif) is None
    wait_ready(driver, att, vif)
    neutron.wait_port_status(vif.port_id, "ACTIVE")
    assert vif.default_gateway
    assert ping(Path(att.netns).name, vif.default_gateway).returncode == 0

    subprocess.run(["ip", "link", "del", vif.host_ifname], check=True)
    (found,) = driver.plugged()
    assert (found.host_link, found.netns, found.port_id) == (False, att.netns, vif.port_id)
    assert links.pod_link(att.netns, "eth0") is None, "the pod end went with the veth"
    why = driver.lost(att, vif)
    assert why is not None and vif.host_ifname in why

    driver.plug(att, vif)
    assert driver.lost(att, vif) is None and driver.check(att, vif) == []
    wait_ready(driver, att, vif)
    deadline = time.monotonic() + ACTIVE_TIMEOUT
    while (out := ping(Path(att.netns).name, vif.default_gateway)).returncode != 0:
        assert time.monotonic() < deadline, out.stdout + out.stderr
    driver.unplug(Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns))
    assert driver.plugged() == []
