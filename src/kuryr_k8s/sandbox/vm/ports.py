"""The Neutron side of a sandbox VM: its port (``<name>-port``) and optional trunk
(``<name>-trunk``), looked up by name and tag before they are created.

The port is bound to this host's OVN chassis (``binding:host_id``), like a Nova VM's;
``device_owner`` is ``compute:sandbox-vm``. Deleting a trunk first removes its subports
from it, and deletes a subport port only if it carries the ``kuryr-sandbox`` tag (the
controller deletes its own).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.sandbox.openstack.topology import TAG, Topology
from kuryr_k8s.sandbox.process import SandboxError

Progress = Callable[[str], None]
DEVICE_OWNER = "compute:sandbox-vm"


@dataclass(frozen=True)
class NetInfo:
    network_id: str
    network_name: str
    subnet_id: str
    prefixlen: int
    gateway: str | None
    mtu: int


def port_name(vm: str) -> str:
    return f"{vm}-port"


def trunk_name(vm: str) -> str:
    return f"{vm}-trunk"


def resolve_network(conn: Any, topo: Topology, name_or_id: str) -> NetInfo:
    """The network (by name in the sandbox project, or by id) and its first IPv4 subnet."""
    net = next(iter(conn.network.networks(name=name_or_id, project_id=topo.project_id)), None)
    if net is None:
        net = conn.network.find_network(name_or_id, ignore_missing=True)
    if net is None:
        known = sorted(n.name for n in conn.network.networks(project_id=topo.project_id))
        raise ConfigError(
            f"no Neutron network {name_or_id!r} (known: {', '.join(known) or 'none'}); "
            "run 'kuryr sandbox topology' for net0/net1"
        )
    subnets = [s for s in conn.network.subnets(network_id=net.id) if s.ip_version == 4]
    if not subnets:
        raise ConfigError(f"network {name_or_id!r} has no IPv4 subnet: add one first")
    sub = subnets[0]
    return NetInfo(
        net.id,
        net.name,
        sub.id,
        ipaddress.ip_network(sub.cidr).prefixlen,
        sub.gateway_ip,
        int(net.mtu),
    )


def find_port(conn: Any, vm: str) -> Any:
    found = list(conn.network.ports(name=port_name(vm), tags=TAG))
    if len(found) > 1:
        raise SandboxError(
            f"more than one Neutron port named {port_name(vm)} tagged {TAG}: "
            f"{[p.id for p in found]}; delete the extras ('openstack port delete')"
        )
    return found[0] if found else None


def ensure_port(
    conn: Any,
    topo: Topology,
    net: NetInfo,
    vm: str,
    *,
    device_id: str,
    host: str,
    security_groups: list[str] | None,
    progress: Progress,
) -> Any:
    """The VM's port, created if missing. ``security_groups`` None: the project's default
    group for a new port, and an existing port keeps what it has."""
    port = find_port(conn, vm)
    if port is not None:
        if port.network_id != net.network_id:
            raise ConfigError(
                f"VM {vm!r} already has port {port.id} on another network "
                f"({port.network_id}); delete the VM first ('kuryr sandbox vm delete {vm}')"
            )
        changes: dict[str, Any] = {}
        if port.binding_host_id != host:
            changes["binding_host_id"] = host
        if security_groups is not None and sorted(port.security_group_ids or []) != sorted(
            security_groups
        ):
            changes["security_group_ids"] = security_groups
        if changes:
            port = conn.network.update_port(port, **changes)
            progress(f"  updated port {port_name(vm)}: {', '.join(sorted(changes))}")
        return port
    port = conn.network.create_port(
        name=port_name(vm),
        network_id=net.network_id,
        project_id=topo.project_id,
        device_owner=DEVICE_OWNER,
        device_id=device_id,
        binding_host_id=host,
        security_group_ids=security_groups or [topo.default_sg_id],
        tags=[TAG],
    )
    if TAG not in (port.tags or []):
        conn.network.set_tags(port, [TAG])
    progress(f"  created port {port_name(vm)} {port.id} ({port.fixed_ips[0]['ip_address']})")
    return port


def find_trunk(conn: Any, vm: str, port_id: str | None = None) -> Any:
    kw = {"port_id": port_id} if port_id else {}
    return next(iter(conn.network.trunks(name=trunk_name(vm), **kw)), None)


def ensure_trunk(conn: Any, topo: Topology, vm: str, port: Any, progress: Progress) -> Any:
    trunk = find_trunk(conn, vm, port.id)
    if trunk is not None:
        return trunk
    trunk = conn.network.create_trunk(
        name=trunk_name(vm), port_id=port.id, project_id=topo.project_id
    )
    conn.network.set_tags(trunk, [TAG])
    progress(f"  created trunk {trunk_name(vm)} {trunk.id} (parent {port.id})")
    return trunk


def delete_trunk(conn: Any, trunk_id: str, progress: Progress) -> list[str]:
    """Remove the trunk's subports from it (deleting the tagged ones), then the trunk."""
    trunk = conn.network.find_trunk(trunk_id, ignore_missing=True)
    if trunk is None:
        return []
    removed: list[str] = []
    subs = list(trunk.sub_ports or [])
    if subs:
        conn.network.delete_trunk_subports(trunk, [{"port_id": s["port_id"]} for s in subs])
        for sub in subs:
            port = conn.network.find_port(sub["port_id"], ignore_missing=True)
            if port is not None and TAG in (port.tags or []):
                conn.network.delete_port(port, ignore_missing=True)
                removed.append(f"subport {port.id}")
            else:
                progress(f"  subport {sub['port_id']} removed from the trunk, not deleted")
    conn.network.delete_trunk(trunk, ignore_missing=True)
    removed.append(f"trunk {trunk.id}")
    return removed


def wait_port_status(conn: Any, port_id: str, status: str, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        port = conn.network.get_port(port_id)
        if port.status == status:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise SandboxError(
                f"Neutron port {port_id} is {port.status}, not {status}, after {timeout:.0f} s "
                "(is ovn-controller running? 'kuryr sandbox status')"
            )
        time.sleep(0.1)
