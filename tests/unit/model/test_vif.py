"""VIF documents round-trip, and malformed ones are refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kuryr_k8s.model.kuryrport import parse_vifs, vifs_status
from kuryr_k8s.model.vif import InvalidVif, IpConfig, Route, Vif

PORT = "3f0c5d1e-8a1b-4c2d-9e3f-0123456789ab"


def _vif(**over: Any) -> Vif:
    base: dict[str, Any] = {
        "vif_type": "ovs",
        "port_id": PORT,
        "mac_address": "fa:16:3e:00:00:01",
        "network_id": "net-1",
        "mtu": 1442,
        "ips": (IpConfig("10.20.0.5", 20, "10.20.0.0/20", "sub-1", "10.20.0.1"),),
        "routes": (Route("192.0.2.0/24", "10.20.0.254"),),
        "bridge": "br-int",
        "active": True,
    }
    base.update(over)
    return Vif(**base)


def test_round_trip_through_json() -> None:
    vif = _vif()
    assert Vif.from_dict(vif.to_dict()) == vif
    nested = _vif(vif_type="vlan", bridge=None, vlan_id=101)
    assert Vif.from_dict(nested.to_dict()) == nested


def test_derived_fields() -> None:
    vif = _vif()
    assert vif.host_ifname == "tap3f0c5d1e8a1"
    assert len(vif.host_ifname) <= 15
    assert vif.default_gateway == "10.20.0.1"
    assert vif.ips[0].interface == "10.20.0.5/20"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vifType", "macvtap", "vif.vifType: 'macvtap' is not one of ovs, vlan"),
        ("portId", "not-a-uuid", "vif.portId"),
        ("macAddress", "zz:16:3e:00:00:01", "vif.macAddress"),
        ("mtu", 100, "vif.mtu"),
        ("mtu", True, "vif.mtu"),
        ("ips", [], "vif.ips: must be a non-empty list"),
        ("bridge", None, "vif.bridge: required for vifType 'ovs'"),
        ("routes", [{"destination": "nope", "gateway": "10.0.0.1"}], "vif.routes[0]"),
    ],
)
def test_malformed_field_is_named(field: str, value: Any, message: str) -> None:
    doc = _vif().to_dict()
    doc[field] = value
    with pytest.raises(InvalidVif, match=message.replace("[", r"\[").replace("]", r"\]")):
        Vif.from_dict(doc)


def test_address_outside_its_cidr_is_refused() -> None:
    doc = _vif().to_dict()
    doc["ips"][0]["address"] = "10.99.0.5"
    with pytest.raises(InvalidVif, match=r"vif.ips\[0\].address: 10.99.0.5 is not in 10.20.0.0/20"):
        Vif.from_dict(doc)


def test_vlan_needs_an_id_in_range() -> None:
    doc = _vif(vif_type="vlan", bridge=None, vlan_id=5000).to_dict()
    with pytest.raises(InvalidVif, match="vif.vlanId: 5000"):
        Vif.from_dict(doc)


def test_kuryrport_status_vifs() -> None:
    kp: dict[str, Any] = {"status": {"vifs": {"eth0": {"default": True, "vif": _vif().to_dict()}}}}
    entries = parse_vifs(kp)
    assert entries["eth0"].default and entries["eth0"].vif == _vif()
    assert vifs_status(entries) == kp["status"]["vifs"]
    assert parse_vifs({"status": {}}) == {}
    with pytest.raises(InvalidVif, match="status.vifs"):
        parse_vifs({"status": {"vifs": ["eth0"]}})
