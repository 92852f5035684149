"""Plug a Neutron port into ``br-int`` from a network namespace, as a VM's tap would be.

This is the sandbox's stand-in for a VM (and the floor the benchmarks compare the CNI
against): netns + veth (peer created directly in the netns) + OVS port carrying
``iface-id``. It shells out to ``ip``/``ovs-vsctl`` on purpose: it is test and demo
plumbing, not the product's binding code (that lives in ``kuryr_k8s.cni``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.process import run


@dataclass(frozen=True)
class Plugged:
    netns: str
    host_ifname: str
    port_id: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str | None


def host_ifname(netns: str) -> str:
    """A stable, unique host-side name within Linux's 15 characters."""
    return "vm" + hashlib.sha1(netns.encode()).hexdigest()[:11]  # noqa: S324 - a name


def _ns(netns: str, *argv: str) -> None:
    run(["ip", "netns", "exec", netns, *argv])


def plug(
    ctx: Context, netns: str, port: Any, subnet: Any, *, mtu: int, ifname: str = "eth0"
) -> Plugged:
    """Create netns ``netns`` with ``ifname`` carrying the port's MAC and first IP."""
    fixed = port.fixed_ips[0]
    net = ipaddress.ip_network(subnet.cidr)
    host = host_ifname(netns)
    ensure_netns(netns)
    run(
        [
            "ip",
            "link",
            "add",
            host,
            "mtu",
            str(mtu),
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            netns,
            "address",
            port.mac_address,
            "mtu",
            str(mtu),
        ]
    )
    run(["ip", "link", "set", host, "up"])
    _ns(netns, "ip", "addr", "add", f"{fixed['ip_address']}/{net.prefixlen}", "dev", ifname)
    _ns(netns, "ip", "link", "set", ifname, "up")
    if subnet.gateway_ip:
        _ns(netns, "ip", "route", "replace", "default", "via", subnet.gateway_ip)
    # The netdev datapath never fills in partial checksums from a veth (pitfall 1).
    _ns(netns, "ethtool", "-K", ifname, "tx", "off")
    ctx.vsctl(
        "--may-exist",
        "add-port",
        "br-int",
        host,
        "--",
        "set",
        "Interface",
        host,
        f"external_ids:iface-id={port.id}",
        f"external_ids:attached-mac={port.mac_address}",
        "external_ids:iface-status=active",
        f"external_ids:vm-uuid={netns}",
    )
    return Plugged(
        netns,
        host,
        port.id,
        port.mac_address,
        fixed["ip_address"],
        net.prefixlen,
        subnet.gateway_ip,
    )


def is_plugged(ctx: Context, netns: str) -> bool:
    """The netns exists and its host end is still a port of br-int."""
    if netns not in run(["ip", "netns", "list"]).stdout.split():
        return False
    ports = ctx.vsctl("list-ports", "br-int").split()
    return host_ifname(netns) in ports


def ensure_netns(netns: str) -> None:
    existing = run(["ip", "netns", "list"]).stdout.split()
    if netns not in existing:
        run(["ip", "netns", "add", netns])
    _ns(netns, "ip", "link", "set", "lo", "up")


def unplug(ctx: Context, netns: str) -> None:
    """Remove the OVS port, the veth and the netns; each may already be gone."""
    host = host_ifname(netns)
    ctx.vsctl("--if-exists", "del-port", "br-int", host)
    run(["ip", "link", "del", host], check=False)
    run(["ip", "netns", "del", netns], check=False)


def ovn_installed(ctx: Context, host_ifname: str) -> bool:
    """OVN marks the OVS interface once the port's flows are in."""
    out = ctx.vsctl("--if-exists", "get", "Interface", host_ifname, "external_ids:ovn-installed")
    return out.strip('"') == "true"


def ensure_external_host(cidr: str, bridge: str = "br-ex") -> str:
    """Give the host the first address of the external network ``cidr`` on ``bridge``
    (the OVS bridge of ``physnet1``), so floating IPs answer from the host; idempotent.
    TX checksum offload goes off there as on every interface sending into a netdev bridge.
    Returns the host's address."""
    net = ipaddress.ip_network(cidr)
    address = f"{net.network_address + 1}/{net.prefixlen}"
    shown = run(["ip", "-o", "addr", "show", "dev", bridge]).stdout
    if address not in shown:
        run(["ip", "addr", "replace", address, "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    run(["ethtool", "-K", bridge, "tx", "off"], check=False)
    return str(net.network_address + 1)
