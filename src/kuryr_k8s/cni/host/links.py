"""Links through netlink (pyroute2): the veth pair and the pod end's L3 configuration.

The pod end is created *inside* the pod's namespace (the veth peer gets ``net_ns_fd``),
never created on the host and moved. Netlink and ioctl sockets inside a pod namespace
come from :func:`~kuryr_k8s.cni.host.netns.netns_socket` (no fork, never creates a
missing namespace, unlike ``IPRoute(netns=...)``). The host
end carries an ``ifalias`` naming its attachment, so a crash between "veth made" and "OVS
row written" still leaves something we recognise and clean up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kuryr_k8s.cni.binding import parse_alias_words, render_alias
from kuryr_k8s.cni.errors import HostError, UnknownContainer
from kuryr_k8s.cni.host.netns import check_netns, netns_socket
from kuryr_k8s.model.vif import IpConfig, Route, Vif

ALIAS_PREFIX = "kuryr-cni "
"""Host ends are tagged ``kuryr-cni <node> <container id> <ifname> <cluster> <network>``
in their ifalias (``-`` for an empty value); the three-word form without cluster and
network is what daemons wrote before ownership stamps (legacy, cluster ``None``)."""

_NETLINK_ROUTE = 0
_SIOCETHTOOL = 0x8946
_ETHTOOL_GTXCSUM = 0x16
_ETHTOOL_STXCSUM = 0x17


@dataclass(frozen=True)
class PodLink:
    """What CHECK compares: the pod end as the kernel sees it."""

    mac: str
    mtu: int
    up: bool
    addresses: frozenset[str]
    """``address/prefix`` strings."""
    default_gateway: str | None


@dataclass(frozen=True)
class HostAlias:
    """What a host end's ifalias says about its attachment."""

    node: str
    container_id: str
    ifname: str
    cluster: str | None = None
    """``None``: a legacy alias without ownership stamps."""
    network: str = ""

    def render(self) -> str:
        words = [self.node, self.container_id, self.ifname]
        return render_alias(ALIAS_PREFIX, words, self.cluster, self.network)


def alias_for(
    node: str, container_id: str, ifname: str, cluster: str | None = None, network: str = ""
) -> str:
    return HostAlias(node, container_id, ifname, cluster, network).render()


def parse_alias(alias: str) -> HostAlias | None:
    """The attachment of a host end we made, else ``None``."""
    parsed = parse_alias_words(ALIAS_PREFIX, alias, 3)
    if parsed is None:
        return None
    (node, container_id, ifname), cluster, network = parsed
    return HostAlias(node, container_id, ifname, cluster, network)


@contextlib.contextmanager
def _netns_iproute(path: str) -> Iterator[Any]:
    sock = netns_socket(path, socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
    try:
        ipr = IPRoute(use_socket=sock)
    except OSError as exc:
        sock.close()
        raise UnknownContainer(f"cannot use network namespace {path}: {exc}") from exc
    try:
        yield ipr
    finally:
        ipr.close()
        sock.close()


def host_aliases() -> dict[str, str]:
    """Host-side links we made: name → ifalias."""
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            alias = link.get_attr("IFLA_IFALIAS") or ""
            if parse_alias(alias):
                out[link.get_attr("IFLA_IFNAME")] = alias
    return out


def link_alias(name: str) -> str | None:
    """The ifalias of host link ``name`` ("" if none), ``None`` if there is no such link."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        return str(link.get_attr("IFLA_IFALIAS") or "")


def delete_link(name: str) -> bool:
    """Delete host link ``name`` (its veth peer goes with it); ``False`` if already gone."""
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise HostError(f"cannot delete link {name}: {exc}") from exc
    return True


def ensure_veth(
    host_ifname: str, pod_ifname: str, netns: str, *, mac: str, mtu: int, alias: str
) -> None:
    """A veth pair: ``host_ifname`` (up, tagged) and ``pod_ifname`` inside ``netns``.

    An existing host end with our alias and its pod end in place is kept (repeated ADD).
    """
    current = link_alias(host_ifname)
    if current == alias and pod_link(netns, pod_ifname) is not None:
        return
    if current is not None:  # a half-made or another attachment's pair (fresh ADDs: none)
        delete_link(host_ifname)
    check_netns(netns)
    fd = os.open(netns, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            peer = {"ifname": pod_ifname, "net_ns_fd": fd, "address": mac, "mtu": mtu}
            try:
                ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, peer=peer)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise HostError(
                        f"cannot create {pod_ifname} in {netns}: an interface of that name "
                        f"(or host link {host_ifname}) already exists"
                    ) from exc
                raise HostError(f"cannot create veth {host_ifname}/{pod_ifname}: {exc}") from exc
            idx = ipr.link_lookup(ifname=host_ifname)[0]
            ipr.link("set", index=idx, ifalias=alias, state="up")
    finally:
        os.close(fd)


def ensure_pod_l3(
    netns: str, ifname: str, ips: tuple[IpConfig, ...], routes: tuple[Route, ...]
) -> None:
    """``lo`` and ``ifname`` up, the VIF's addresses, its default route and extra routes."""
    with _netns_iproute(netns) as ipr:
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")
        idx = _index(ipr, netns, ifname)
        for ip in ips:
            try:
                ipr.addr("add", index=idx, address=ip.address, prefixlen=ip.prefix_length)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise HostError(f"cannot add {ip.interface} to {ifname}: {exc}") from exc
        ipr.link("set", index=idx, state="up")
        for ip in ips:
            if ip.gateway:
                dst = "0.0.0.0/0" if ip.version == 4 else "::/0"
                _replace_route(ipr, idx, dst, ip.gateway, ip.version)
        for route in routes:
            version = ipaddress.ip_network(route.destination).version
            _replace_route(ipr, idx, route.destination, route.gateway, version)


def _replace_route(ipr: Any, idx: int, dst: str, gateway: str, version: int) -> None:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        ipr.route("replace", dst=dst, gateway=gateway, oif=idx, family=family)
    except NetlinkError as exc:
        raise HostError(f"cannot add route {dst} via {gateway}: {exc}") from exc


def _index(ipr: Any, netns: str, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise HostError(f"{ifname} is missing in {netns}")
    return int(found[0])


def pod_link(netns: str, ifname: str) -> PodLink | None:
    """The pod end as it is now, ``None`` if the namespace or the link is missing."""
    try:
        with _netns_iproute(netns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return None
            link = ipr.get_links(found[0])[0]
            addrs = frozenset(
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.get_addr(index=found[0])
            )
            gateway = None
            for route in ipr.get_routes(family=socket.AF_INET, oif=found[0]):
                if route["dst_len"] == 0 and route.get_attr("RTA_GATEWAY"):
                    gateway = route.get_attr("RTA_GATEWAY")
            return PodLink(
                mac=str(link.get_attr("IFLA_ADDRESS")),
                mtu=int(link.get_attr("IFLA_MTU")),
                up=bool(link["flags"] & 1),
                addresses=addrs,
                default_gateway=gateway,
            )
    except UnknownContainer:
        return None


def pod_link_present(netns: str, ifname: str) -> bool:
    """Whether the pod end exists (one look-up; :func:`pod_link` also reads its addresses
    and routes)."""
    try:
        with _netns_iproute(netns) as ipr:
            return bool(ipr.link_lookup(ifname=ifname))
    except UnknownContainer:
        return False


def check_pod_link(netns: str, ifname: str, vif: Vif) -> list[str]:
    """What differs between the pod's interface and the VIF (CHECK); empty when all is well."""
    link = pod_link(netns, ifname)
    if link is None:
        return [f"{ifname} is missing in {netns}"]
    problems = []
    if link.mac.lower() != vif.mac_address:
        problems.append(f"{ifname} has MAC {link.mac}, the VIF says {vif.mac_address}")
    if link.mtu != vif.mtu:
        problems.append(f"{ifname} has MTU {link.mtu}, the VIF says {vif.mtu}")
    if not link.up:
        problems.append(f"{ifname} is down")
    for ip in vif.ips:
        if ip.interface not in link.addresses:
            problems.append(f"{ifname} lacks address {ip.interface}")
    gateway = vif.default_gateway
    if gateway and link.default_gateway != gateway:
        problems.append(f"default route via {link.default_gateway}, the VIF says {gateway}")
    return problems


def _ethtool(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    import ctypes

    buf = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf))
    fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    return int(struct.unpack("II", buf.raw)[1])


def ensure_tx_checksum_off(netns: str, ifname: str) -> None:
    """``ethtool -K ifname tx off`` inside ``netns`` (an ioctl on a socket made there).

    The userspace (netdev) OVS datapath never fills in the partial checksums a veth
    hands it, so TCP from the pod would silently fail.
    """
    sock = netns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if _ethtool(sock, ifname, _ETHTOOL_GTXCSUM):
            _ethtool(sock, ifname, _ETHTOOL_STXCSUM, 0)
    except OSError as exc:
        raise HostError(f"cannot turn TX checksum offload off on {ifname}: {exc}") from exc
    finally:
        sock.close()


def tx_checksum_on(netns: str, ifname: str) -> bool:
    sock = netns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return bool(_ethtool(sock, ifname, _ETHTOOL_GTXCSUM))
    finally:
        sock.close()
