"""Upstream kuryr-kubernetes's os-vif primitives (status.vifs[*].vif) to our VIF.

Inputs are real upstream output: ``os-vif-primitives-generated.json`` was produced by
upstream 10.0.0's own ``os_vif_util`` (os-vif 5.3.0), and ``kuryrport-recorded.json``
(when present) is a KuryrPort upstream wrote on the sandbox.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from kuryr_k8s.model.kuryrport import convert_upstream_vifs, parse_vifs, upstream_vifs, vifs_status
from kuryr_k8s.model.vif import ADOPTED_FROM, InvalidVif, Vif, from_os_vif, to_os_vif

DATA = Path(__file__).parents[2] / "fixtures" / "upstream"
GENERATED: dict[str, Any] = json.loads((DATA / "os-vif-primitives-generated.json").read_text())
SUBNET = "3c01b96f-c65d-42d1-84f8-d911756b15a3"
SUBNETS = {"10.20.1.193": SUBNET}


def test_ovs_primitive_converts_to_an_equivalent_vif() -> None:
    vif = from_os_vif(GENERATED["ovs"], SUBNETS)
    assert vif.vif_type == "ovs"
    assert vif.port_id == "5f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    assert vif.mac_address == "fa:16:3e:12:34:56"
    assert vif.network_id == "9c4b0f55-3a0f-4d2c-8a6b-1f2e3d4c5b6a"
    assert vif.mtu == 1442
    assert vif.bridge == "br-int"
    assert vif.active is True
    assert [(ip.interface, ip.cidr, ip.subnet_id, ip.gateway) for ip in vif.ips] == [
        ("10.20.1.193/20", "10.20.0.0/20", SUBNET, "10.20.0.1")
    ]
    assert [(r.destination, r.gateway) for r in vif.routes] == [("192.168.0.0/16", "10.20.0.254")]
    assert vif.dns_nameservers == ("10.20.0.2",)
    # upstream's veth (kuryr-lib: "tap" + port id[:11], dash kept), not the name we'd pick
    assert vif.host_ifname == "tap5f1e2d3c-4b"
    assert vif.adopted


def test_converted_vif_round_trips_through_our_json() -> None:
    vif = from_os_vif(GENERATED["ovs"], SUBNETS)
    doc = vif.to_dict()
    assert doc["hostIfname"] == "tap5f1e2d3c-4b" and doc["adoptedFrom"] == ADOPTED_FROM
    assert Vif.from_dict(json.loads(json.dumps(doc))) == vif
    # our own VIFs keep our device name and are not marked adopted
    ours = Vif.from_dict({k: v for k, v in doc.items() if k not in ("hostIfname", "adoptedFrom")})
    assert ours.host_ifname == "tap5f1e2d3c4b5" and not ours.adopted


def test_nested_vlan_primitive_converts() -> None:
    vif = from_os_vif(GENERATED["vlan"], SUBNETS)
    assert (vif.vif_type, vif.vlan_id, vif.bridge, vif.host_name) == ("vlan", 101, None, None)
    assert vif.ips[0].address == "10.20.1.193"


def test_hybrid_plug_is_refused_by_name() -> None:
    with pytest.raises(InvalidVif, match="VIFBridge cannot be adopted: hybrid plug"):
        from_os_vif(GENERATED["hybrid"], {"10.20.1.194": SUBNET})


def test_unknown_subnet_and_malformed_primitives_name_the_field() -> None:
    with pytest.raises(InvalidVif, match=r"subnets\[0\].ips\[0\]: no Neutron subnet known"):
        from_os_vif(GENERATED["ovs"], {})
    broken = copy.deepcopy(GENERATED["ovs"])
    del broken["versioned_object.data"]["network"]["versioned_object.data"]["mtu"]
    with pytest.raises(InvalidVif, match="vif.mtu"):
        from_os_vif(broken, SUBNETS)
    broken = copy.deepcopy(GENERATED["ovs"])
    broken["versioned_object.data"]["network"] = {"id": "x"}
    with pytest.raises(InvalidVif, match="vif.network: not an os-vif"):
        from_os_vif(broken, SUBNETS)
    odd = dict(GENERATED["ovs"], **{"versioned_object.name": "VIFSomethingNew"})
    with pytest.raises(InvalidVif, match="unknown os-vif object os_vif.VIFSomethingNew"):
        from_os_vif(odd, SUBNETS)


def _kuryrport(vif: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"podUid": "u", "podNodeName": "n"},
        "status": {"vifs": {"eth0": {"default": True, "vif": vif}}},
    }


def test_kuryrport_conversion_keeps_interfaces_and_default() -> None:
    kp = _kuryrport(GENERATED["ovs"])
    assert set(upstream_vifs(kp)) == {"eth0"}
    with pytest.raises(InvalidVif):
        parse_vifs(kp)  # our strict parser never plugs from upstream's format
    entries = convert_upstream_vifs(kp, SUBNETS)
    converted = {"status": {"vifs": vifs_status(entries)}}
    assert upstream_vifs(converted) == {}
    assert parse_vifs(converted)["eth0"].default is True
    assert parse_vifs(converted)["eth0"].vif == from_os_vif(GENERATED["ovs"], SUBNETS)
    # converting ours again is a no-op (idempotent takeover)
    assert convert_upstream_vifs(converted, {}) == entries


def test_kuryrport_conversion_names_the_interface() -> None:
    with pytest.raises(InvalidVif, match=r"status.vifs.eth0: vif: VIFBridge"):
        convert_upstream_vifs(_kuryrport(GENERATED["hybrid"]), SUBNETS)


@pytest.mark.skipif(
    not (DATA / "kuryrport-recorded.json").is_file(), reason="no recorded upstream KuryrPort"
)
def test_recorded_upstream_kuryrport_converts() -> None:
    recorded = json.loads((DATA / "kuryrport-recorded.json").read_text())
    kp, port = recorded["kuryrport"], recorded["neutronPort"]
    subnets = {ip["ip_address"]: ip["subnet_id"] for ip in port["fixed_ips"]}
    entries = convert_upstream_vifs(kp, subnets)
    vif = entries["eth0"].vif
    assert entries["eth0"].default
    assert vif.port_id == port["id"] and vif.mac_address == port["mac_address"]
    assert [ip.address for ip in vif.ips] == [ip["ip_address"] for ip in port["fixed_ips"]]
    assert vif.host_ifname == ("tap" + port["id"])[:14]


def test_rollback_primitive_converts_back_to_the_same_vif() -> None:
    vif = from_os_vif(GENERATED["ovs"], SUBNETS)
    back = to_os_vif(vif, network_label="pod-net")
    assert back["versioned_object.name"] == "VIFOpenVSwitch"
    assert back["versioned_object.data"]["vif_name"] == "tap5f1e2d3c-4b"
    assert from_os_vif(back, SUBNETS) == vif
    # a VIF of ours: upstream's daemon must unplug the device our daemon made
    ours = dataclasses.replace(vif, host_name=None, adopted=False)
    assert to_os_vif(ours)["versioned_object.data"]["vif_name"] == "tap5f1e2d3c4b5"


def test_rollback_refuses_nested_vifs() -> None:
    vlan = from_os_vif(GENERATED["vlan"], SUBNETS)
    with pytest.raises(InvalidVif, match="vlan VIF cannot be rolled back"):
        to_os_vif(vlan)
