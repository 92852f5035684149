"""The seed's base topology in the sandbox Neutron, created idempotently.

net0/subnet0 for VMs, net1/subnet1 for pods, the Service VIP subnet, router1 joining them
(its gateway on the flat external network "public"), and the project's
default security group allowing ICMP and SSH (the seed's "undercloud" steps) and TCP
8080 (the main job's HTTP checks). Every
resource carries the tag ``kuryr-sandbox`` and is looked up by name before it is created.
"""

from __future__ import annotations

import ipaddress
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

SERVICE_NETWORK = ("services", "service-subnet")
"""Network and subnet of Service VIPs; the subnet's CIDR is the API emulator's Service
range (``kubeapi.defaults.SERVICE_CIDR``), so an LB's VIP can be the Service's clusterIP.
Its gateway (router1's port) is the range's last address, far from where clusterIPs are
handed out."""
EXTERNAL_NETWORK = ("public", "public-subnet", "172.24.4.0/24", "physnet1")
"""The external (flat, provider) network: router1's gateway and floating IPs. The host
reaches it through ``br-ex`` (``physnet1:br-ex``), see ``hostplug.ensure_external_host``."""

HTTP_PORT = 8080
"""TCP port of the small HTTP servers the main job's TCP checks run in pods and VMs."""

NAMESPACE_POOL = ("kuryr-namespaces", "10.40.0.0/16", 24)
"""Subnet pool of namespace networks (``[namespace_subnet] pod_subnet_pool``): one /24
per namespace, each with an interface on router1 (``pod_router``)."""


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
    service_subnet_id: str = ""
    service_cidr: str = ""
    external_net_id: str = ""
    external_subnet_id: str = ""
    external_cidr: str = ""
    pod_subnet_pool_id: str = ""


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


def ensure_service_subnet(conn: openstack.connection.Connection, progress: Progress) -> Any:
    """The Service VIP subnet (CIDR = the emulator's Service range), gateway at its end."""
    from kuryr_k8s.sandbox.kubeapi.defaults import SERVICE_CIDR

    net_name, sub_name = SERVICE_NETWORK
    net = ensure_network(conn, net_name, progress)
    sub = _one(conn.network.subnets(name=sub_name, network_id=net.id), f"subnet {sub_name}")
    if sub is None:
        last = SERVICE_CIDR.broadcast_address - 1
        sub = conn.network.create_subnet(
            name=sub_name,
            network_id=net.id,
            project_id=PROJECT_ID,
            ip_version=4,
            cidr=str(SERVICE_CIDR),
            gateway_ip=str(last),
            # Neutron hands out nothing by itself here: every VIP names its clusterIP.
            allocation_pools=[{"start": str(last - 254), "end": str(last - 1)}],
            enable_dhcp=False,
        )
        conn.network.set_tags(sub, [TAG])
        progress(f"  created subnet {sub_name} {SERVICE_CIDR} ({sub.id})")
    return sub


def ensure_external(conn: openstack.connection.Connection, progress: Progress) -> tuple[Any, Any]:
    """The flat external network and its subnet (router1's gateway, floating IPs)."""
    net_name, sub_name, cidr, physnet = EXTERNAL_NETWORK
    net = _one(conn.network.networks(name=net_name), f"network {net_name}")
    if net is None:
        net = conn.network.create_network(
            name=net_name,
            project_id=PROJECT_ID,
            is_router_external=True,
            provider_network_type="flat",
            provider_physical_network=physnet,
        )
        conn.network.set_tags(net, [TAG])
        progress(f"  created external network {net_name} ({net.id}, flat on {physnet})")
    sub = _one(conn.network.subnets(name=sub_name, network_id=net.id), f"subnet {sub_name}")
    if sub is None:
        sub = conn.network.create_subnet(
            name=sub_name,
            network_id=net.id,
            project_id=PROJECT_ID,
            ip_version=4,
            cidr=cidr,
            gateway_ip=str(ipaddress.ip_network(cidr).network_address + 1),  # the host
            enable_dhcp=False,
        )
        conn.network.set_tags(sub, [TAG])
        progress(f"  created subnet {sub_name} {cidr} ({sub.id})")
    return net, sub


def ensure_router_gateway(
    conn: openstack.connection.Connection, router: Any, external_net: Any, progress: Progress
) -> None:
    info = router.external_gateway_info or {}
    if info.get("network_id") != external_net.id:
        conn.network.update_router(router, external_gateway_info={"network_id": external_net.id})
        progress(f"  router1: gateway on {external_net.name}")


def ensure_subnet_pool(conn: openstack.connection.Connection, progress: Progress) -> Any:
    """The subnet pool namespace networks take their subnets from."""
    name, prefix, length = NAMESPACE_POOL
    pool = _one(conn.network.subnet_pools(name=name, project_id=PROJECT_ID), f"pool {name}")
    if pool is None:
        pool = conn.network.create_subnet_pool(
            name=name, project_id=PROJECT_ID, prefixes=[prefix], default_prefix_length=length
        )
        conn.network.set_tags(pool, [TAG])
        progress(f"  created subnet pool {name} {prefix} (/{length} each, {pool.id})")
    return pool


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


SANDBOX_QUOTAS = {"security_groups": 100, "security_group_rules": 2000}
"""Neutron's defaults (10 SGs, 100 rules) are too small for NetworkPolicy with one SG per
pod identity (``[network_policy] security_group_mode = identity``); a real cluster raises
them the same way (docs/install.md, quotas)."""


def ensure_quotas(conn: openstack.connection.Connection, progress: Progress) -> None:
    """Raise the project's SG quotas to at least :data:`SANDBOX_QUOTAS` (never lower)."""
    quota = conn.network.get_quota(PROJECT_ID)
    raise_to = {k: v for k, v in SANDBOX_QUOTAS.items() if 0 <= int(getattr(quota, k) or 0) < v}
    if raise_to:
        conn.network.update_quota(quota, **raise_to)
        progress(f"quotas raised: {raise_to}")


def ensure_base_topology(conn: openstack.connection.Connection, progress: Progress) -> Topology:
    nets, subs = {}, {}
    for name, (sub_name, cidr) in NETWORKS.items():
        nets[name] = ensure_network(conn, name, progress)
        subs[name] = ensure_subnet(conn, nets[name], sub_name, cidr, progress)
    service_sub = ensure_service_subnet(conn, progress)
    router = ensure_router(conn, [subs["net0"], subs["net1"], service_sub], progress)
    external_net, external_sub = ensure_external(conn, progress)
    ensure_router_gateway(conn, router, external_net, progress)
    sg = ensure_default_sg(conn, progress)
    pool = ensure_subnet_pool(conn, progress)
    ensure_quotas(conn, progress)
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
        service_subnet_id=service_sub.id,
        service_cidr=service_sub.cidr,
        external_net_id=external_net.id,
        external_subnet_id=external_sub.id,
        external_cidr=external_sub.cidr,
        pod_subnet_pool_id=pool.id,
    )


def format_topology(t: Topology) -> str:
    rows = [
        ("project", t.project_id, "noauth project id"),
        ("net0 / subnet0", f"{t.net0_id} / {t.subnet0_id}", f"VMs, {t.subnet0_cidr}"),
        ("net1 / subnet1", f"{t.net1_id} / {t.subnet1_id}", f"pods, {t.subnet1_cidr}"),
        ("router1", t.router_id, "joins subnet0, subnet1 and service-subnet; gateway on public"),
        ("service-subnet", t.service_subnet_id, f"Service VIPs (= clusterIPs), {t.service_cidr}"),
        (
            "public",
            f"{t.external_net_id} / {t.external_subnet_id}",
            f"external (flat physnet1 via br-ex), floating IPs, {t.external_cidr}",
        ),
        (
            "subnet pool",
            t.pod_subnet_pool_id,
            f"namespace networks: /{NAMESPACE_POOL[2]} of {NAMESPACE_POOL[1]}, on router1",
        ),
        ("default SG", t.default_sg_id, f"allows ICMP, SSH and TCP {HTTP_PORT} in"),
        ("MTU", str(t.mtu), "geneve tenant networks"),
    ]
    width = max(len(r[1]) for r in rows)
    return "\n".join(f"{name:<16} {value:<{width}}  {note}" for name, value, note in rows)
