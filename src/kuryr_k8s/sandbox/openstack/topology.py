"""The seed's base topology in the sandbox Neutron, created idempotently.

net0/subnet0 for VMs, net1/subnet1 for pods, router1 joining them, and the project's
default security group allowing ICMP and SSH (the seed's "undercloud" steps) and TCP
8080 (the main job's HTTP checks). Every
resource carries the tag ``kuryr-sandbox`` and is looked up by name before it is created.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kuryr_k8s.sandbox.settings import SandboxSettings

if TYPE_CHECKING:
    import openstack.connection

TAG = "kuryr-sandbox"
PROJECT_ID = uuid.uuid5(uuid.NAMESPACE_DNS, "demo.kuryr-sandbox.invalid").hex
"""With ``noauth`` there is no Keystone: a project is just the id every create carries."""

NETWORKS = {
    # name: (subnet name, CIDR)
    "net0": ("subnet0", "10.10.0.0/24"),  # VMs
    "net1": ("subnet1", "10.20.0.0/20"),  # pods: room for bursts and pools
}

Progress = Callable[[str], None]

HTTP_PORT = 8080
"""TCP port of the small HTTP servers the main job's TCP checks run in pods and VMs."""


def connect(settings: SandboxSettings) -> openstack.connection.Connection:
    import openstack  # ~9 s to import inside a TCG guest: only where a connection is made

    kwargs: dict[str, Any] = {
        "auth_type": "none",
        "auth": {"endpoint": settings.neutron_url},
        "network_endpoint_override": settings.neutron_url,
    }
    if settings.octavia:
        kwargs["load_balancer_endpoint_override"] = settings.octavia_url
    return openstack.connect(**kwargs)


@dataclass(frozen=True)
class Topology:
    project_id: str
    net0_id: str
    subnet0_id: str
    net1_id: str
    subnet1_id: str
    router_id: str
    default_sg_id: str
    subnet0_cidr: str
    subnet1_cidr: str
    mtu: int


def _one(items: Any, what: str) -> Any:
    found = list(items)
    if len(found) > 1:
        raise RuntimeError(f"more than one {what}: {[f.id for f in found]}; remove the extras")
    return found[0] if found else None


def ensure_network(conn: openstack.connection.Connection, name: str, progress: Progress) -> Any:
    net = _one(conn.network.networks(name=name, project_id=PROJECT_ID), f"network {name}")
    if net is None:
        net = conn.network.create_network(name=name, project_id=PROJECT_ID)
        conn.network.set_tags(net, [TAG])
        progress(f"  created network {name} ({net.id})")
    return net


def ensure_subnet(
    conn: openstack.connection.Connection, net: Any, name: str, cidr: str, progress: Progress
) -> Any:
    sub = _one(conn.network.subnets(name=name, network_id=net.id), f"subnet {name}")
    if sub is None:
        sub = conn.network.create_subnet(
            name=name,
            network_id=net.id,
            project_id=PROJECT_ID,
            ip_version=4,
            cidr=cidr,
            enable_dhcp=False,
        )
        conn.network.set_tags(sub, [TAG])
        progress(f"  created subnet {name} {cidr} ({sub.id})")
    return sub


def ensure_router(
    conn: openstack.connection.Connection, subnets: list[Any], progress: Progress
) -> Any:
    router = _one(conn.network.routers(name="router1", project_id=PROJECT_ID), "router1")
    if router is None:
        router = conn.network.create_router(name="router1", project_id=PROJECT_ID)
        conn.network.set_tags(router, [TAG])
        progress(f"  created router router1 ({router.id})")
    attached = {
        ip["subnet_id"] for port in conn.network.ports(device_id=router.id) for ip in port.fixed_ips
    }
    for sub in subnets:
        if sub.id not in attached:
            conn.network.add_interface_to_router(router, subnet=sub.id)
            progress(f"  attached {sub.name} to router1")
    return router


def ensure_default_sg(conn: openstack.connection.Connection, progress: Progress) -> Any:
    sg = _one(conn.network.security_groups(name="default", project_id=PROJECT_ID), "default SG")
    if sg is None:
        # Neutron makes a project's default SG on that project's first request.
        conn.network.get("/security-groups", headers={"X-Project-Id": PROJECT_ID})
        sg = _one(conn.network.security_groups(name="default", project_id=PROJECT_ID), "default SG")
    if sg is None:
        raise RuntimeError("Neutron did not create the project's default security group")
    # The seed allows ICMP and SSH; the hybrid scenario's HTTP checks also need HTTP_PORT.
    wanted = [("icmp", None), ("tcp", 22), ("tcp", HTTP_PORT)]
    for proto, port in wanted:
        present = any(
            r["direction"] == "ingress"
            and r["protocol"] == proto
            and r.get("port_range_min") == port
            and r["ethertype"] == "IPv4"
            for r in sg.security_group_rules
        )
        if not present:
            conn.network.create_security_group_rule(
                security_group_id=sg.id,
                direction="ingress",
                ethertype="IPv4",
                protocol=proto,
                port_range_min=port,
                port_range_max=port,
                project_id=PROJECT_ID,
            )
            progress(f"  default SG: allowed ingress {proto}{'' if port is None else f'/{port}'}")
    return sg


def ensure_base_topology(conn: openstack.connection.Connection, progress: Progress) -> Topology:
    nets, subs = {}, {}
    for name, (sub_name, cidr) in NETWORKS.items():
        nets[name] = ensure_network(conn, name, progress)
        subs[name] = ensure_subnet(conn, nets[name], sub_name, cidr, progress)
    router = ensure_router(conn, [subs["net0"], subs["net1"]], progress)
    sg = ensure_default_sg(conn, progress)
    return Topology(
        project_id=PROJECT_ID,
        net0_id=nets["net0"].id,
        subnet0_id=subs["net0"].id,
        net1_id=nets["net1"].id,
        subnet1_id=subs["net1"].id,
        router_id=router.id,
        default_sg_id=sg.id,
        subnet0_cidr=subs["net0"].cidr,
        subnet1_cidr=subs["net1"].cidr,
        mtu=int(nets["net1"].mtu),
    )


def format_topology(t: Topology) -> str:
    rows = [
        ("project", t.project_id, "noauth project id"),
        ("net0 / subnet0", f"{t.net0_id} / {t.subnet0_id}", f"VMs, {t.subnet0_cidr}"),
        ("net1 / subnet1", f"{t.net1_id} / {t.subnet1_id}", f"pods, {t.subnet1_cidr}"),
        ("router1", t.router_id, "joins subnet0 and subnet1"),
        ("default SG", t.default_sg_id, f"allows ICMP, SSH and TCP {HTTP_PORT} in"),
        ("MTU", str(t.mtu), "geneve tenant networks"),
    ]
    width = max(len(r[1]) for r in rows)
    return "\n".join(f"{name:<16} {value:<{width}}  {note}" for name, value, note in rows)
