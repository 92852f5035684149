"""Services as load balancers: the ``KuryrLoadBalancer`` resource and the pure translations.

Two steps, each a pure function (unit-tested without Kubernetes or Octavia):

1. :func:`klb_spec`: a Service and its EndpointSlices -> the ``KuryrLoadBalancer`` spec
   (upstream's fields: ``ip``, ``lb_ip``, ``type``, ``provider``, ``project_id``,
   ``subnet_id``, ``security_groups_ids``, ``ports``, ``endpointSlices``), plus the
   things Octavia cannot express, as warnings for an Event.
2. :func:`desired_lb`: a spec -> :class:`DesiredLb`, what Octavia must hold: one listener
   and pool per (protocol, port), members from *ready* endpoints only, each member's port
   the number its EndpointSlice gives for the Service port's name (so a named
   ``targetPort`` resolves per endpoint, as Kubernetes' EndpointSlice controller does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

KIND = "KuryrLoadBalancer"
PLURAL = "kuryrloadbalancers"
API_VERSION = "openstack.org/v1"
SERVICE_FINALIZER = "kuryr.openstack.org/service-finalizer"
"""On the Service: its KuryrLoadBalancer (and so the LB) goes before the Service does."""
KLB_FINALIZER = "kuryr.openstack.org/kuryrloadbalancer-finalizers"
"""On the KuryrLoadBalancer: the Octavia LB and our floating IP go before it does."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""EndpointSlices name their Service with this label."""

PROTOCOLS = ("TCP", "UDP", "SCTP")
PROVIDER_PROTOCOLS = {"ovn": ("TCP", "UDP", "SCTP"), "amphora": ("TCP", "UDP", "SCTP")}
"""Service protocols each Octavia provider can balance (ovn-octavia-provider 11: TCP, UDP
and SCTP listeners; amphora: also HTTP-family, which Services never ask for)."""


def crd_manifest() -> dict[str, Any]:
    text = (resources.files("kuryr_k8s.model") / "crds" / "kuryrloadbalancers.yaml").read_text()
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


@dataclass(frozen=True)
class ServiceLbSettings:
    """What the translation needs from ``kuryr.conf`` (resolved at start)."""

    provider: str
    project_id: str
    subnet_id: str
    """``[neutron_defaults] service_subnet``: the VIP subnet."""
    subnet_cidr: str
    security_groups: tuple[str, ...] = ()


def handled(service: dict[str, Any]) -> bool:
    """Whether the Service gets a load balancer: it has a clusterIP and ports."""
    spec = service.get("spec") or {}
    ip = spec.get("clusterIP")
    if spec.get("type", "ClusterIP") == "ExternalName" or not ip or ip == "None":
        return False
    return bool(spec.get("ports"))


def _ready(endpoint: dict[str, Any]) -> bool:
    conditions = endpoint.get("conditions") or {}
    ready = conditions.get("ready")
    return ready is None or bool(ready)  # Kubernetes: nil means ready


def klb_spec(
    service: dict[str, Any], slices: list[dict[str, Any]], settings: ServiceLbSettings
) -> tuple[dict[str, Any], list[str]]:
    """The KuryrLoadBalancer spec for ``service`` and what cannot be honoured (warnings).

    Ports whose protocol the provider cannot balance are left out (with a warning). Only
    IPv4 EndpointSlices of this Service are copied, endpoints and ports as they are."""
    spec = service.get("spec") or {}
    warnings: list[str] = []
    supported = PROVIDER_PROTOCOLS.get(settings.provider, ("TCP", "UDP"))
    ports: list[dict[str, Any]] = []
    for p in spec.get("ports") or []:
        protocol = str(p.get("protocol") or "TCP").upper()
        name = str(p.get("name") or "")
        if protocol not in supported:
            warnings.append(
                f"port {name or p.get('port')}/{protocol}: the {settings.provider} provider "
                f"cannot balance {protocol}; this port is not exposed"
            )
            continue
        target = p.get("targetPort", p.get("port"))
        ports.append(
            {
                "name": name,
                "port": int(p["port"]),
                "protocol": protocol,
                "targetPort": str(target),
            }
        )
    if spec.get("sessionAffinity", "None") == "ClientIP" and settings.provider == "ovn":
        warnings.append(
            "sessionAffinity ClientIP is ignored: the ovn provider has no session "
            "persistence (its pools balance by SOURCE_IP_PORT)"
        )
    if spec.get("externalTrafficPolicy") == "Local":
        warnings.append("externalTrafficPolicy Local is ignored: members are every ready endpoint")
    if spec.get("internalTrafficPolicy") == "Local":
        warnings.append("internalTrafficPolicy Local is ignored: members are every ready endpoint")
    if spec.get("type") == "NodePort":
        warnings.append(
            "type NodePort: node ports are not served (there is no kube-proxy); the "
            "clusterIP load balancer is"
        )
    if spec.get("type") != "LoadBalancer" and _asked_ranges(service):
        warnings.append(
            "loadBalancerSourceRanges are ignored: they restrict a type LoadBalancer "
            "Service's floating IP, and this Service has none (the clusterIP stays open "
            "to the cluster, as in Kubernetes)"
        )
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    # Kubernetes: such a Service's endpoints count as ready whatever their pods say.
    ip = str(spec.get("clusterIP") or "")
    if ip and ip != "None":
        try:
            inside = ipaddress.ip_address(ip) in ipaddress.ip_network(settings.subnet_cidr)
        except ValueError:
            inside = False
        if not inside:
            warnings.append(
                f"clusterIP {ip} is outside the service subnet {settings.subnet_cidr} "
                "([neutron_defaults] service_subnet): the load balancer cannot take it"
            )
    out: dict[str, Any] = {
        "ip": ip,
        "type": str(spec.get("type") or "ClusterIP"),
        "provider": settings.provider,
        "project_id": settings.project_id,
        "subnet_id": settings.subnet_id,
        "security_groups_ids": list(settings.security_groups),
        "ports": ports,
        "endpointSlices": [
            {
                "endpoints": [
                    {
                        "addresses": list(e.get("addresses") or []),
                        "conditions": {"ready": publish_all or _ready(e)},
                        **({"targetRef": e["targetRef"]} if e.get("targetRef") else {}),
                    }
                    for e in sl.get("endpoints") or []
                ],
                "ports": [
                    {
                        "name": str(sp.get("name") or ""),
                        "port": int(sp["port"]),
                        "protocol": str(sp.get("protocol") or "TCP").upper(),
                    }
                    for sp in sl.get("ports") or []
                    if sp.get("port") is not None
                ],
            }
            for sl in sorted(slices, key=lambda s: str((s.get("metadata") or {}).get("name")))
            if sl.get("addressType", "IPv4") == "IPv4"
        ],
    }
    lb_ip = spec.get("loadBalancerIP")
    if out["type"] == "LoadBalancer" and lb_ip:
        out["lb_ip"] = str(lb_ip)
    return out, warnings


# --------------------------------------------------------------------------------------
# loadBalancerSourceRanges
# --------------------------------------------------------------------------------------

SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
"""Kubernetes' older form of ``spec.loadBalancerSourceRanges`` (comma-separated), used
when the field is empty."""


def _asked_ranges(service: dict[str, Any]) -> list[str]:
    spec = service.get("spec") or {}
    ranges = [str(r).strip() for r in spec.get("loadBalancerSourceRanges") or []]
    if not ranges:
        annotations = (service.get("metadata") or {}).get("annotations") or {}
        ranges = str(annotations.get(SOURCE_RANGES_ANNOTATION) or "").split(",")
    return [r for r in ranges if r]


@dataclass(frozen=True)
class SourceRanges:
    """What a ``type: LoadBalancer`` Service asks: only these sources may reach it."""

    cidrs: tuple[str, ...] = ()
    """The IPv4 ranges, as networks (``10.0.0.1/8`` -> ``10.0.0.0/8``), sorted, unique."""
    ipv6: tuple[str, ...] = ()
    """IPv6 ranges: they cannot match a client of the IPv4 VIP, so they are left out."""
    invalid: tuple[str, ...] = ()
    """Entries that are not a CIDR."""

    @property
    def asked(self) -> bool:
        return bool(self.cidrs or self.ipv6 or self.invalid)


def source_ranges(service: dict[str, Any]) -> SourceRanges:
    """The Service's ``loadBalancerSourceRanges`` (else the annotation); nothing asked
    unless it is ``type: LoadBalancer`` (Kubernetes applies them to the cloud load
    balancer only; the clusterIP stays open to the cluster)."""
    if (service.get("spec") or {}).get("type") != "LoadBalancer":
        return SourceRanges()
    v4: set[str] = set()
    v6: list[str] = []
    invalid: list[str] = []
    for entry in _asked_ranges(service):
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            invalid.append(entry)
            continue
        if net.version == 4:
            v4.add(str(net))
        else:
            v6.append(entry)
    return SourceRanges(tuple(sorted(v4, key=ipaddress.ip_network)), tuple(v6), tuple(invalid))


def allowed_cidrs(ranges: SourceRanges, internal: tuple[str, ...]) -> tuple[str, ...]:
    """A listener ACL for ``ranges``: they plus the cluster's own ``internal`` networks
    (the VIP is the clusterIP too: pods and nodes must keep reaching it); empty when
    nothing is asked. Never empty when something is: IPv6-only ranges admit no outside
    source, not every one."""
    if not ranges.asked:
        return ()
    return _acl([*ranges.cidrs, *internal])


NOBODY = "127.0.0.1/32"
"""The ACL admitting no outside source (an empty ``allowed_cidrs`` would admit all)."""


def _v4(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _acl(nets: Iterable[str | ipaddress.IPv4Network]) -> tuple[str, ...]:
    v4 = _v4(str(n) for n in nets) or [ipaddress.IPv4Network(NOBODY)]
    return tuple(str(n) for n in ipaddress.collapse_addresses(v4))  # sorted, none inside another


PROTOCOL_NUMBERS = {"TCP": "6", "UDP": "17", "SCTP": "132"}


def sg_sources(rules: Iterable[Mapping[str, Any]], protocol: str, port: int) -> list[str] | None:
    """The IPv4 sources Neutron security-group ``rules`` admit to ``protocol``/``port``
    (``enforce_sg_rules``); None: any source (a rule without a remote, or one naming a
    remote group or address group, which no CIDR list can say)."""
    out: list[str] = []
    for r in rules:
        if r.get("direction") != "ingress" or (r.get("ethertype") or "IPv4") != "IPv4":
            continue
        proto = r.get("protocol")
        if proto is not None and str(proto).lower() not in (
            protocol.lower(),
            PROTOCOL_NUMBERS.get(protocol, ""),
        ):
            continue
        low, high = r.get("port_range_min"), r.get("port_range_max")
        if low is not None and not int(low) <= port <= int(high if high is not None else low):
            continue
        prefix = r.get("remote_ip_prefix")
        if r.get("remote_group_id") or r.get("remote_address_group_id") or not prefix:
            return None
        out.append(str(prefix))
    return out


def listener_acl(ranges_acl: tuple[str, ...], members: list[str] | None) -> tuple[str, ...]:
    """The listener's ``allowed_cidrs``: the source-range ACL (:func:`allowed_cidrs`, empty:
    none asked) narrowed to what the members' groups admit (None: they admit all)."""
    if members is None:
        return ranges_acl
    if not ranges_acl:
        return _acl(members)
    both = [
        x if x.prefixlen >= y.prefixlen else y
        for x in _v4(ranges_acl)
        for y in _v4(members)
        if x.overlaps(y)
    ]
    return _acl(both)


# --------------------------------------------------------------------------------------
# Spec -> what Octavia must hold
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class DesiredMember:
    address: str
    port: int
    subnet_id: str = ""
    """The member's Neutron subnet (the pod subnet it is on); empty: the VIP subnet."""


@dataclass(frozen=True)
class DesiredListener:
    protocol: str
    port: int
    name: str
    members: tuple[DesiredMember, ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.protocol, self.port)


@dataclass(frozen=True)
class DesiredLb:
    vip: str
    subnet_id: str
    provider: str
    listeners: tuple[DesiredListener, ...]
    public: bool
    """``type: LoadBalancer``: a floating IP on the external network."""
    lb_ip: str = ""
    """``loadBalancerIP``: the floating IP address to use."""


def usable_member(address: str) -> bool:
    """Kubernetes refuses loopback, link-local and unspecified endpoint addresses in
    user-made EndpointSlices; an apiserver publishing ``127.0.0.1`` for itself (the
    sandbox's emulator) is not reachable from a load balancer either."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def desired_lb(spec: dict[str, Any], subnet_of: Callable[[str], str]) -> DesiredLb:
    """What Octavia must hold for a KuryrLoadBalancer spec (members: ready endpoints);
    ``subnet_of(address)``: the Neutron subnet of a member address ('' if unknown)."""
    listeners = []
    for port in spec.get("ports") or []:
        protocol = str(port.get("protocol") or "TCP")
        name = str(port.get("name") or "")
        members: set[DesiredMember] = set()
        for sl in spec.get("endpointSlices") or []:
            numbers = [
                int(sp["port"])
                for sp in sl.get("ports") or []
                if str(sp.get("name") or "") == name
                and str(sp.get("protocol") or "TCP") == protocol
            ]
            if not numbers:
                continue
            for endpoint in sl.get("endpoints") or []:
                if not _ready(endpoint):
                    continue
                for address in endpoint.get("addresses") or []:
                    if not usable_member(str(address)):
                        continue
                    members.add(DesiredMember(str(address), numbers[0], subnet_of(str(address))))
        listeners.append(DesiredListener(protocol, int(port["port"]), name, tuple(sorted(members))))
    return DesiredLb(
        vip=str(spec.get("ip") or ""),
        subnet_id=str(spec.get("subnet_id") or ""),
        provider=str(spec.get("provider") or "ovn"),
        listeners=tuple(listeners),
        public=spec.get("type") == "LoadBalancer",
        lb_ip=str(spec.get("lb_ip") or ""),
    )
