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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kuryr_k8s.model.errors import PermanentError

VifType = Literal["ovs", "vlan"]
VIF_TYPES: tuple[VifType, ...] = ("ovs", "vlan")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


ADOPTED_FROM = "kuryr-kubernetes"
"""``adoptedFrom`` of a VIF converted from upstream's os-vif primitive."""


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
    host_name: str | None = None
    """Host-side device name when it is not ours (``hostIfname``): set on VIFs adopted from
    upstream kuryr-kubernetes, whose veths are named ``tap`` + the first 11 characters
    of the port id, dash included (:func:`from_os_vif`)."""
    adopted: bool = False
    """Converted from upstream's os-vif primitive (``adoptedFrom``): the attachment on the
    node was made by upstream and carries no kuryr stamp of ours."""

    @property
    def host_ifname(self) -> str:
        """Host-side device name: Linux allows 15 characters; stable per port."""
        return self.host_name or ("tap" + self.port_id.replace("-", ""))[:14]

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
        if self.host_name is not None:
            out["hostIfname"] = self.host_name
        if self.adopted:
            out["adoptedFrom"] = ADOPTED_FROM
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
        host_name = d.get("hostIfname")
        if host_name is not None and not (isinstance(host_name, str) and _IFNAME.match(host_name)):
            raise InvalidVif(f"vif.hostIfname: {host_name!r} is not a Linux interface name")
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
            host_name=host_name,
            adopted=d.get("adoptedFrom") == ADOPTED_FROM,
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


# -- upstream kuryr-kubernetes (os-vif versioned-object primitives) ----------------------

_OS_VIF_KINDS: dict[str, VifType] = {
    # ``versioned_object.name``; the namespace is ``os_vif`` for both (upstream's own
    # VIFVlanNested inherits it)
    "VIFOpenVSwitch": "ovs",
    "VIFVlanNested": "vlan",
}
_REFUSED_OS_VIF = {
    "VIFBridge": "hybrid plug (a Linux bridge between veth and OVS, iptables firewall); "
    "ML2/OVN has none",
    "VIFMacvlanNested": "macvlan pods are not supported (see [kubernetes] pod_vif_driver)",
    "VIFDPDKNested": "DPDK pods are not supported",
    "VIFVHostUser": "vhost-user pods are not supported",
}


def is_os_vif_primitive(data: Any) -> bool:
    """An os-vif/oslo.versionedobjects primitive (upstream's ``status.vifs[*].vif``)."""
    return isinstance(data, dict) and "versioned_object.data" in data


def _ovo(data: Any, where: str, *names: str) -> dict[str, Any]:
    """The ``versioned_object.data`` of a primitive whose name is one of ``names``."""
    if not is_os_vif_primitive(data):
        raise InvalidVif(f"{where}: not an os-vif versioned-object primitive")
    name = data.get("versioned_object.name")
    if names and name not in names:
        raise InvalidVif(f"{where}: {name!r} where {' or '.join(names)} was expected")
    return _mapping(data["versioned_object.data"], f"{where}.versioned_object.data")


def _ovo_list(data: Any, where: str, name: str) -> list[Any]:
    objs = _ovo(data, where, name).get("objects", [])
    if not isinstance(objs, list):
        raise InvalidVif(f"{where}.objects: must be a list")
    return objs


def from_os_vif(primitive: Any, subnet_ids: Mapping[str, str]) -> Vif:
    """Our VIF for one of upstream's ``status.vifs[<ifname>].vif`` primitives.

    Pure: ``subnet_ids`` maps each fixed IP address to its Neutron subnet id (the port's
    ``fixed_ips``; os-vif subnets carry no id). The result names the host device upstream
    made (``hostIfname``) and is marked ``adoptedFrom``, so the node can find and unplug
    an attachment that has no stamp of ours. Raises :class:`InvalidVif` naming the field
    for a kind we cannot serve (hybrid plug, macvlan, DPDK, vhost-user) or a malformed
    primitive."""
    where = "vif"
    if not is_os_vif_primitive(primitive):
        raise InvalidVif(f"{where}: not an os-vif versioned-object primitive")
    kind = (
        str(primitive.get("versioned_object.namespace")),
        str(primitive.get("versioned_object.name")),
    )
    if kind[1] in _REFUSED_OS_VIF:
        raise InvalidVif(f"{where}: {kind[1]} cannot be adopted: {_REFUSED_OS_VIF[kind[1]]}")
    vif_type = _OS_VIF_KINDS.get(kind[1]) if kind[0] == "os_vif" else None
    if vif_type is None:
        raise InvalidVif(f"{where}: unknown os-vif object {kind[0]}.{kind[1]}")
    data = _ovo(primitive, where, kind[1])
    network = _ovo(data.get("network"), f"{where}.network", "Network")
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, str]] = []
    dns: list[str] = []
    subnets = _ovo_list(network.get("subnets"), f"{where}.network.subnets", "SubnetList")
    for i, raw in enumerate(subnets):
        sw = f"{where}.network.subnets[{i}]"
        subnet = _ovo(raw, sw, "Subnet")
        cidr = _str(subnet, "cidr", sw)
        gateway = subnet.get("gateway")
        for j, raw_ip in enumerate(_ovo_list(subnet.get("ips"), f"{sw}.ips", "FixedIPList")):
            address = _str(_ovo(raw_ip, f"{sw}.ips[{j}]", "FixedIP"), "address", f"{sw}.ips[{j}]")
            subnet_id = subnet_ids.get(address)
            if not subnet_id:
                raise InvalidVif(f"{sw}.ips[{j}]: no Neutron subnet known for {address}")
            ips.append(
                {
                    "address": address,
                    "cidr": cidr,
                    "subnetId": subnet_id,
                    **({"gateway": gateway} if isinstance(gateway, str) and gateway else {}),
                }
            )
        for k, raw_route in enumerate(
            _ovo_list(subnet.get("routes", _EMPTY_ROUTES), f"{sw}.routes", "RouteList")
        ):
            route = _ovo(raw_route, f"{sw}.routes[{k}]", "Route")
            routes.append(
                {
                    "destination": _str(route, "cidr", f"{sw}.routes[{k}]"),
                    "gateway": _str(route, "gateway", f"{sw}.routes[{k}]"),
                }
            )
        dns += [x for x in subnet.get("dns") or [] if isinstance(x, str)]
    ours: dict[str, Any] = {
        "vifType": vif_type,
        "portId": data.get("id"),
        "macAddress": data.get("address"),
        "networkId": network.get("id"),
        "mtu": network.get("mtu"),
        "active": bool(data.get("active", False)),
        "ips": ips,
        "routes": routes,
        "dnsNameservers": dns,
        "adoptedFrom": ADOPTED_FROM,
    }
    if vif_type == "ovs":
        ours["bridge"] = data.get("bridge_name") or network.get("bridge")
        ours["hostIfname"] = data.get("vif_name")
    else:
        ours["vlanId"] = data.get("vlan_id")
    return Vif.from_dict(ours)


_EMPTY_ROUTES = {
    "versioned_object.name": "RouteList",
    "versioned_object.data": {"objects": []},
}


def _primitive(name: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "versioned_object.name": name,
        "versioned_object.namespace": "os_vif",
        "versioned_object.version": version,
        "versioned_object.data": data,
    }


def to_os_vif(vif: Vif, *, network_label: str = "") -> dict[str, Any]:
    """Upstream's os-vif primitive for one of our VIFs (the rollback, inverse of
    :func:`from_os_vif` up to what os-vif cannot hold: subnet ids). The host device is
    the one the node made (``vif_name`` = :attr:`Vif.host_ifname`), so upstream's daemon
    unplugs the right veth at DEL. Versions are those upstream 10.0.0 (os-vif 5.3) writes."""
    by_cidr: dict[str, list[IpConfig]] = {}
    for ip in vif.ips:
        by_cidr.setdefault(ip.cidr, []).append(ip)
    subnets = []
    for cidr, ips in by_cidr.items():
        data: dict[str, Any] = {
            "cidr": cidr,
            "dns": list(vif.dns_nameservers),
            "ips": _primitive(
                "FixedIPList",
                "1.0",
                {"objects": [_primitive("FixedIP", "1.0", {"address": i.address}) for i in ips]},
            ),
            "routes": _primitive(
                "RouteList",
                "1.0",
                {
                    "objects": [
                        _primitive("Route", "1.0", {"cidr": r.destination, "gateway": r.gateway})
                        for r in vif.routes
                    ]
                },
            ),
        }
        if ips[0].gateway:
            data["gateway"] = ips[0].gateway
        subnets.append(_primitive("Subnet", "1.0", data))
    network: dict[str, Any] = {
        "id": vif.network_id,
        "label": network_label,
        "mtu": vif.mtu,
        "multi_host": False,
        "should_provide_bridge": False,
        "should_provide_vlan": False,
        "subnets": _primitive("SubnetList", "1.0", {"objects": subnets}),
    }
    common: dict[str, Any] = {
        "id": vif.port_id,
        "address": vif.mac_address,
        "active": vif.active,
        "has_traffic_filtering": True,
        "preserve_on_delete": False,
    }
    if vif.vif_type == "ovs":
        network["bridge"] = vif.bridge
        return _primitive(
            "VIFOpenVSwitch",
            "1.0",
            {
                **common,
                "network": _primitive("Network", "1.1", network),
                "bridge_name": vif.bridge,
                "plugin": "ovs",
                "vif_name": vif.host_ifname,
                "port_profile": _primitive(
                    "VIFPortProfileOpenVSwitch", "1.4", {"interface_id": vif.port_id}
                ),
            },
        )
    raise InvalidVif(
        f"vif {vif.port_id}: a {vif.vif_type} VIF cannot be rolled back to upstream "
        "(nested pods: delete them before the rollback)"
    )
