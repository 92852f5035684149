"""The VIF: everything a node needs to plug one pod interface, and nothing from Neutron.

The controller writes it into ``KuryrPort.status.vifs[<ifname>].vif``; the CNI daemon
reads it from there (it never talks to Neutron). The JSON form is camelCase like the rest
of the Kubernetes API. ``vifType`` picks the binding driver: ``ovs`` (a veth into
``br-int``, side-by-side) or ``vlan`` (a VLAN device on the VM's NIC, nested).

Parsing is strict: a hand-edited or truncated VIF raises :class:`InvalidVif` naming the
field, so a pod is never plugged from data we do not understand.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kuryr_k8s.model.errors import PermanentError

VifType = Literal["ovs", "vlan"]
VIF_TYPES: tuple[VifType, ...] = ("ovs", "vlan")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class InvalidVif(PermanentError):
    """A VIF document is malformed; the message names the field."""


@dataclass(frozen=True)
class IpConfig:
    """One address of the interface, with its subnet."""

    address: str
    prefix_length: int
    cidr: str
    subnet_id: str
    gateway: str | None = None

    @property
    def interface(self) -> str:
        """``address/prefix`` as ``ip addr add`` takes it."""
        return f"{self.address}/{self.prefix_length}"

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class Route:
    destination: str
    gateway: str


@dataclass(frozen=True)
class Vif:
    """One pod interface as the node must plug it."""

    vif_type: VifType
    port_id: str
    mac_address: str
    network_id: str
    mtu: int
    ips: tuple[IpConfig, ...]
    routes: tuple[Route, ...] = ()
    bridge: str | None = None
    """OVS bridge for ``ovs`` VIFs (``br-int``)."""
    vlan_id: int | None = None
    """802.1Q id of the trunk subport for ``vlan`` VIFs."""
    active: bool = False
    """True once Neutron reports the port ACTIVE."""
    dns_nameservers: tuple[str, ...] = field(default=())

    @property
    def host_ifname(self) -> str:
        """Host-side device name: Linux allows 15 characters; stable per port."""
        return ("tap" + self.port_id.replace("-", ""))[:14]

    @property
    def default_gateway(self) -> str | None:
        return next((ip.gateway for ip in self.ips if ip.gateway), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vifType": self.vif_type,
            "portId": self.port_id,
            "macAddress": self.mac_address,
            "networkId": self.network_id,
            "mtu": self.mtu,
            "active": self.active,
            "ips": [
                {
                    "address": ip.address,
                    "prefixLength": ip.prefix_length,
                    "cidr": ip.cidr,
                    "subnetId": ip.subnet_id,
                    **({"gateway": ip.gateway} if ip.gateway else {}),
                }
                for ip in self.ips
            ],
            "routes": [{"destination": r.destination, "gateway": r.gateway} for r in self.routes],
        }
        if self.bridge is not None:
            out["bridge"] = self.bridge
        if self.vlan_id is not None:
            out["vlanId"] = self.vlan_id
        if self.dns_nameservers:
            out["dnsNameservers"] = list(self.dns_nameservers)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Vif:
        """Parse and validate; raises :class:`InvalidVif` naming the bad field."""
        d = _mapping(data, "vif")
        vif_type = _str(d, "vifType")
        if vif_type not in VIF_TYPES:
            raise InvalidVif(f"vif.vifType: {vif_type!r} is not one of {', '.join(VIF_TYPES)}")
        port_id = _str(d, "portId")
        if not _UUID.match(port_id):
            raise InvalidVif(f"vif.portId: {port_id!r} is not a Neutron port id (UUID)")
        mac = _str(d, "macAddress").lower()
        if not _MAC.match(mac):
            raise InvalidVif(f"vif.macAddress: {mac!r} is not a MAC address")
        mtu = d.get("mtu")
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 576 <= mtu <= 9216:
            raise InvalidVif(f"vif.mtu: {mtu!r} must be an integer from 576 to 9216")
        raw_ips = d.get("ips")
        if not isinstance(raw_ips, list) or not raw_ips:
            raise InvalidVif("vif.ips: must be a non-empty list")
        ips = tuple(_ip(item, i) for i, item in enumerate(raw_ips))
        raw_routes = d.get("routes", [])
        if not isinstance(raw_routes, list):
            raise InvalidVif("vif.routes: must be a list")
        routes = tuple(_route(item, i) for i, item in enumerate(raw_routes))
        bridge = d.get("bridge")
        vlan_id = d.get("vlanId")
        if vif_type == "ovs" and not (isinstance(bridge, str) and bridge):
            raise InvalidVif("vif.bridge: required for vifType 'ovs'")
        if vif_type == "vlan" and not (
            isinstance(vlan_id, int) and not isinstance(vlan_id, bool) and 1 <= vlan_id <= 4094
        ):
            raise InvalidVif(f"vif.vlanId: {vlan_id!r} must be an integer from 1 to 4094")
        dns = d.get("dnsNameservers", [])
        if not isinstance(dns, list) or not all(isinstance(x, str) for x in dns):
            raise InvalidVif("vif.dnsNameservers: must be a list of strings")
        return cls(
            vif_type=vif_type,
            port_id=port_id,
            mac_address=mac,
            network_id=_str(d, "networkId"),
            mtu=mtu,
            ips=ips,
            routes=routes,
            bridge=bridge if isinstance(bridge, str) else None,
            vlan_id=vlan_id if isinstance(vlan_id, int) else None,
            active=bool(d.get("active", False)),
            dns_nameservers=tuple(dns),
        )


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidVif(f"{where}: must be an object, got {type(data).__name__}")
    return data


def _str(d: dict[str, Any], key: str, where: str = "vif") -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidVif(f"{where}.{key}: required string, got {value!r}")
    return value


def _ip(item: Any, i: int) -> IpConfig:
    where = f"vif.ips[{i}]"
    d = _mapping(item, where)
    address = _str(d, "address", where)
    cidr = _str(d, "cidr", where)
    try:
        addr = ipaddress.ip_address(address)
        net = ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise InvalidVif(f"{where}: {exc}") from exc
    if addr not in net:
        raise InvalidVif(f"{where}.address: {address} is not in {cidr}")
    prefix = d.get("prefixLength", net.prefixlen)
    if prefix != net.prefixlen:
        raise InvalidVif(f"{where}.prefixLength: {prefix!r} does not match {cidr}")
    gateway = d.get("gateway")
    if gateway is not None:
        try:
            ipaddress.ip_address(gateway)
        except ValueError as exc:
            raise InvalidVif(f"{where}.gateway: {exc}") from exc
    return IpConfig(address, net.prefixlen, cidr, _str(d, "subnetId", where), gateway)


def _route(item: Any, i: int) -> Route:
    where = f"vif.routes[{i}]"
    d = _mapping(item, where)
    dest, gw = _str(d, "destination", where), _str(d, "gateway", where)
    try:
        ipaddress.ip_network(dest)
        ipaddress.ip_address(gw)
    except ValueError as exc:
        raise InvalidVif(f"{where}: {exc}") from exc
    return Route(dest, gw)
