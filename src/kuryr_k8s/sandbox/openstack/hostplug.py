"""Plug a Neutron port into ``br-int`` from a network namespace, as a VM's tap would be.

This is the sandbox's stand-in for a VM (and the floor the benchmarks compare the CNI
against): netns + veth (peer created directly in the netns) + OVS port carrying
``iface-id``. It shells out to ``ip``/``ovs-vsctl`` on purpose: it is test and demo
plumbing, not the product's binding code (that lives in ``kuryr_k8s.cni``).

The host end is named from the sandbox id and the netns (``naming.veth_name``) and its OVS
row carries ``kuryr-sandbox-id``, so each sandbox finds and removes only its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.sandbox import naming
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.process import run
from kuryr_k8s.sandbox.vm.hostnet import ovs_external_ids


@dataclass(frozen=True)
class Plugged:
    netns: str
    host_ifname: str
    port_id: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str | None


def sandbox_id(ctx: Context) -> str:
    return naming.sandbox_id(ctx.paths.root)


def host_ifname(ctx: Context, netns: str) -> str:
    """A stable host-side name within Linux's 15 characters, carrying the sandbox id."""
    return naming.veth_name(sandbox_id(ctx), netns)


def legacy_host_ifname(netns: str) -> str:
    """The host-side name used before names carried the sandbox id (for migration)."""
    return "vm" + hashlib.sha1(netns.encode()).hexdigest()[:11]  # noqa: S324 - a name


def _ns(netns: str, *argv: str) -> None:
    run(["ip", "netns", "exec", netns, *argv])


def plug(
    ctx: Context, netns: str, port: Any, subnet: Any, *, mtu: int, ifname: str = "eth0"
) -> Plugged:
    """Create netns ``netns`` with ``ifname`` carrying the port's MAC and first IP."""
    fixed = port.fixed_ips[0]
    net = ipaddress.ip_network(subnet.cidr)
    host = host_ifname(ctx, netns)
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
        f"external_ids:kuryr-sandbox-id={sandbox_id(ctx)}",
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
    if netns not in list_netns():
        return False
    ports = ctx.vsctl("list-ports", "br-int").split()
    return host_ifname(ctx, netns) in ports


def list_netns() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line]


def _link(argv: list[str]) -> dict[str, Any] | None:
    proc = run(["ip", "-j", *argv], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    found = json.loads(proc.stdout)
    return found[0] if found else None


def problems(
    ctx: Context, netns: str, port: Any, subnet: Any, *, ifname: str = "eth0"
) -> list[str]:
    """What is wrong with ``netns`` as the plug of Neutron ``port``; empty if nothing.

    Checked: the netns exists; ``ifname`` in it is up with the port's MAC and IP; its veth
    peer is the host end on this sandbox's br-int, whose Interface row's ``iface-id`` is
    the port's id.
    """
    if netns not in list_netns():
        return [f"netns {netns} is missing"]
    found: list[str] = []
    inner = _link(["-n", netns, "addr", "show", "dev", ifname])
    host = host_ifname(ctx, netns)
    outer = _link(["link", "show", "dev", host])
    if inner is None:
        found.append(f"{ifname} is missing in netns {netns}")
    else:
        if str(inner.get("address", "")).lower() != port.mac_address.lower():
            found.append(
                f"{ifname} has MAC {inner.get('address')}, the port has {port.mac_address}"
            )
        want = f"{port.fixed_ips[0]['ip_address']}/{ipaddress.ip_network(subnet.cidr).prefixlen}"
        have = [
            f"{a['local']}/{a['prefixlen']}"
            for a in inner.get("addr_info", [])
            if a.get("family") == "inet"
        ]
        if want not in have:
            found.append(f"{ifname} has addresses {have or 'none'}, the port has {want}")
        if "UP" not in inner.get("flags", []):
            found.append(f"{ifname} is down")
    if outer is None:
        found.append(f"host end {host} is missing")
    elif inner is not None and inner.get("link_index") != outer.get("ifindex"):
        found.append(f"{ifname}'s veth peer is not {host}")
    ids = ovs_ids(ctx, host)
    if ids is None:
        found.append(f"{host} is not a port of this sandbox's br-int")
    elif ids.get("iface-id") != port.id:
        found.append(f"{host} on br-int has iface-id {ids.get('iface-id')}, not the port {port.id}")
    return found


def ovs_ids(ctx: Context, ifname: str) -> dict[str, str] | None:
    """The br-int Interface row's external_ids, None when ``ifname`` is not on br-int."""
    return ovs_external_ids(ctx, ifname)


def ensure_netns(netns: str) -> None:
    existing = run(["ip", "netns", "list"]).stdout.split()
    if netns not in existing:
        run(["ip", "netns", "add", netns])
    _ns(netns, "ip", "link", "set", "lo", "up")


def unplug(ctx: Context, netns: str, *, host: str | None = None) -> None:
    """Remove the OVS port, the veth and the netns; each may already be gone. ``host``:
    the host end when it is not named as ``host_ifname`` names it (an old plug)."""
    host = host or host_ifname(ctx, netns)
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
