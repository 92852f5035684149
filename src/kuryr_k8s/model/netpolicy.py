"""NetworkPolicy → Neutron security groups and address groups: the pure translation.

No I/O here: given one ``networking.k8s.io/v1`` NetworkPolicy and the pods and namespaces
of the cluster (plain JSON), :func:`plan_policy` says which security groups the policy
needs (their rules), which address groups (their addresses) and which SG each selected pod
must carry. The reconciler (``controller/policies.py``) converges Neutron to the plan; the
placement (``controller/policy_placement.py``) hands the SGs to the ports. See
``docs/design/network-policy.md``.

Translation (Kubernetes semantics, stateful Neutron SGs, allow-only rules, union over SGs):

* One SG per policy (per *variant*, below) holding the rules of the directions in
  ``policyTypes`` only; a direction the policy does not name gets no rule from it.
* A rule's peers (``from``/``to``) are one **address group** per (direction, rule) (and per
  resolved port number for named egress ports): the IPs of the matching pods (``/32`` or
  ``/128``) plus ipBlock CIDRs minus their ``except``. Absent or empty peers: any address
  (no remote). Pod churn is therefore an address-group update, never a rule change.
* Ports: absent/empty = every protocol and port; a number (with ``endPort``: a range);
  a name: for ingress the number the *selected* pod gives it (pods of one policy that
  resolve names differently get one SG variant each), for egress the number each *peer*
  pod gives it (one address group per number). A name no container declares (with that
  protocol) allows nothing.
* What Neutron cannot express (``unsupported_protocols``) is dropped from the allow list
  (deny side) and reported in :attr:`PolicyPlan.problems`.
* Services: a client reaches a Service through its clusterIP, which OVN's load balancer
  rewrites to a backend only *after* the client port's egress ACLs ran (they see the
  clusterIP). So an egress policy also allows ``clusterIP:port`` of every Service port
  whose ready endpoints are **all** allowed by the policy (address and target port); a
  Service with some endpoints outside the policy stays denied (the safe side: the client
  side cannot tell which backend the load balancer will pick). Backends' ingress ACLs run
  after the rewrite and see the client's own address: nothing to add there.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.model import kuryrloadbalancer as klb_model

Obj = dict[str, Any]

INGRESS, EGRESS = "ingress", "egress"
ETHERTYPES = ("IPv4", "IPv6")
BASE_VARIANT = "base"


class InvalidSelector(ValueError):
    """A label selector this module cannot evaluate (unknown operator)."""


# --------------------------------------------------------------------------------------
# Label selectors
# --------------------------------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """``metav1.LabelSelector`` semantics: None matches nothing, ``{}`` everything."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or ()
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise InvalidSelector(f"matchExpressions operator {op!r} is not a selector operator")
        if not ok:
            return False
    return True


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _labels(obj: Obj) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _ns(obj: Obj) -> str:
    return str(_meta(obj).get("namespace") or "")


def pod_key(pod: Obj) -> str:
    return f"{_ns(pod)}/{_meta(pod).get('name', '')}"


def policy_types(policy: Obj) -> tuple[bool, bool]:
    """(isolates ingress, isolates egress), with the API's default for absent types."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if not types:
        return True, bool(spec.get("egress"))
    return "Ingress" in types, "Egress" in types


def selects(policy: Obj, pod: Obj) -> bool:
    """The policy applies to the pod (same namespace, podSelector matches)."""
    if _ns(policy) != _ns(pod):
        return False
    selector = (policy.get("spec") or {}).get("podSelector")
    return selector_matches(selector if selector is not None else {}, _labels(pod))


def pod_ips(pod: Obj) -> tuple[str, ...]:
    status = pod.get("status") or {}
    ips = [str(i.get("ip")) for i in status.get("podIPs") or () if i.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return tuple(ips)


def host_cidr(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}/{addr.max_prefixlen}"


def named_port(pod: Obj, name: str, protocol: str) -> int | None:
    """The containerPort of ``pod`` named ``name`` with ``protocol`` (None if none)."""
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == name and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def ipblock_cidrs(block: Mapping[str, Any]) -> list[str]:
    """``cidr`` minus every ``except`` as a list of CIDRs."""
    nets = [ipaddress.ip_network(str(block["cidr"]), strict=False)]
    for exc in block.get("except") or ():
        cut = ipaddress.ip_network(str(exc), strict=False)
        out: list[Any] = []
        for net in nets:
            if net.version != cut.version or not net.overlaps(cut):
                out.append(net)
            elif cut.supernet_of(net):  # type: ignore[arg-type]
                continue
            else:
                out.extend(net.address_exclude(cut))  # type: ignore[arg-type]
        nets = out
    return sorted(str(n) for n in nets)


# --------------------------------------------------------------------------------------
# Services (what a clusterIP leads to)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ServicePort:
    """One balanced port of a Service: (``protocol``, ``port``) on ``cluster_ip`` goes to
    one of ``endpoints`` (ready address, target port), as its load balancer has them."""

    service: str
    cluster_ip: str
    protocol: str
    port: int
    endpoints: frozenset[tuple[str, int]]


_ANY_SUBNET = klb_model.ServiceLbSettings(
    provider="ovn", project_id="", subnet_id="", subnet_cidr="0.0.0.0/0"
)


def service_ports(services: Iterable[Obj], slices: Iterable[Obj]) -> list[ServicePort]:
    """The balanced ports of ``services`` with their ready endpoints, from the same
    translation the load balancers are built from (``klb_spec`` + ``desired_lb``)."""
    by_service: dict[tuple[str, str], list[Obj]] = defaultdict(list)
    for sl in slices:
        name = (_meta(sl).get("labels") or {}).get(klb_model.SERVICE_NAME_LABEL)
        if name:
            by_service[(_ns(sl), str(name))].append(sl)
    out: list[ServicePort] = []
    for svc in services:
        if not klb_model.handled(svc):
            continue
        key = (_ns(svc), str(_meta(svc).get("name") or ""))
        spec, _ = klb_model.klb_spec(svc, by_service.get(key, []), _ANY_SUBNET)
        lb = klb_model.desired_lb(spec, lambda _address: "")
        try:
            if ipaddress.ip_address(lb.vip).version != 4:
                continue
        except ValueError:
            continue
        for listener in lb.listeners:
            members = frozenset((m.address, m.port) for m in listener.members)
            if members:
                name = f"{key[0]}/{key[1]}"
                out.append(ServicePort(name, lb.vip, listener.protocol, listener.port, members))
    return sorted(out)


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SgRule:
    """One Neutron security group rule; ``remote_group`` is an address-group *key* of the
    plan (None: any address)."""

    direction: str
    ethertype: str
    protocol: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_group: str | None = None


def rule_body(
    direction: str,
    ethertype: str,
    protocol: str | None,
    port_min: int | None,
    port_max: int | None,
) -> dict[str, Any]:
    """The Neutron ``security_group_rule`` body of a rule, without its remote."""
    body: dict[str, Any] = {"direction": direction, "ethertype": ethertype}
    if protocol is not None:
        body["protocol"] = protocol
    if port_min is not None:
        body["port_range_min"] = port_min
        body["port_range_max"] = port_max
    return body


@dataclass(frozen=True)
class PolicyPlan:
    ingress: bool
    egress: bool
    sgs: Mapping[str, frozenset[SgRule]]
    """variant key -> rules of that SG."""
    address_groups: Mapping[str, frozenset[str]]
    """address-group key -> CIDRs."""
    pod_variants: Mapping[str, str]
    """``namespace/name`` of each selected pod -> its SG variant key."""
    problems: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(repr((self.ingress, self.egress)).encode())
        for k in sorted(self.sgs):
            h.update(repr((k, sorted(self.sgs[k]))).encode())
        for k in sorted(self.address_groups):
            h.update(repr((k, sorted(self.address_groups[k]))).encode())
        return h.hexdigest()[:16]


@dataclass
class _Ctx:
    policy: Obj
    pods: Sequence[Obj]
    namespaces: Mapping[str, Mapping[str, str]]
    """namespace name -> labels."""
    unsupported: frozenset[str]
    ips_of: Any
    services: Sequence[ServicePort] = ()
    problems: list[str] = field(default_factory=list)
    groups: dict[str, set[str]] = field(default_factory=dict)


def _peer_pods(ctx: _Ctx, peer: Mapping[str, Any]) -> list[Obj]:
    pod_sel = peer.get("podSelector")
    ns_sel = peer.get("namespaceSelector")
    out = []
    for pod in ctx.pods:
        ns = _ns(pod)
        if ns_sel is not None:
            if ns not in ctx.namespaces or not selector_matches(ns_sel, ctx.namespaces[ns]):
                continue
        elif ns != _ns(ctx.policy):
            continue
        if pod_sel is not None and not selector_matches(pod_sel, _labels(pod)):
            continue
        out.append(pod)
    return out


def _all_peer_pods(ctx: _Ctx, peers: Sequence[Mapping[str, Any]] | None) -> list[Obj]:
    """Pods matched by the rule's peers (every pod of the cluster when peers are absent)."""
    if not peers:
        return list(ctx.pods)
    seen: dict[str, Obj] = {}
    for peer in peers:
        if "ipBlock" in peer:
            continue
        for pod in _peer_pods(ctx, peer):
            seen[pod_key(pod)] = pod
    return list(seen.values())


def _pod_cidrs(ctx: _Ctx, pods: Iterable[Obj]) -> set[str]:
    return {host_cidr(ip) for pod in pods for ip in ctx.ips_of(pod)}


def _peer_cidrs(ctx: _Ctx, peers: Sequence[Mapping[str, Any]]) -> set[str]:
    out: set[str] = set()
    for peer in peers:
        if "ipBlock" in peer:
            out.update(ipblock_cidrs(peer["ipBlock"]))
        else:
            out |= _pod_cidrs(ctx, _peer_pods(ctx, peer))
    return out


def _protocol(ctx: _Ctx, port: Mapping[str, Any]) -> str | None:
    proto = str(port.get("protocol") or "TCP")
    if proto in ctx.unsupported:
        ctx.problems.append(
            f"protocol {proto} cannot be enforced by this Neutron: traffic it would allow "
            "stays denied"
        )
        return None
    return proto


def _rules(
    direction: str,
    protocol: str | None,
    low: int | None,
    high: int | None,
    remote: str | None,
) -> list[SgRule]:
    proto = protocol.lower() if protocol else None
    return [SgRule(direction, eth, proto, low, high, remote) for eth in ETHERTYPES]


def _numeric_range(port: Mapping[str, Any]) -> tuple[int | None, int | None]:
    number = port.get("port")
    if number is None:
        return None, None
    end = port.get("endPort")
    return int(number), int(end) if end is not None else int(number)


def _group(ctx: _Ctx, key: str, cidrs: set[str]) -> str:
    ctx.groups.setdefault(key, set()).update(cidrs)
    return key


def _ingress_signature(policy: Obj, pod: Obj) -> tuple[tuple[int, int, int | None], ...]:
    """The numbers the pod gives each named port of the policy's ingress rules."""
    out = []
    for i, rule in enumerate((policy.get("spec") or {}).get("ingress") or ()):
        for j, port in enumerate(rule.get("ports") or ()):
            if isinstance(port.get("port"), str):
                proto = str(port.get("protocol") or "TCP")
                out.append((i, j, named_port(pod, port["port"], proto)))
    return tuple(out)


def variant_key(policy: Obj, pod: Obj) -> str:
    """The SG variant of a selected pod (``base`` unless the ingress rules use names)."""
    sig = _ingress_signature(policy, pod)
    if not sig:
        return BASE_VARIANT
    return "v" + hashlib.sha256(repr(sig).encode()).hexdigest()[:10]


def _ingress_rules(ctx: _Ctx, sig: Mapping[tuple[int, int], int | None]) -> set[SgRule]:
    rules: set[SgRule] = set()
    for i, rule in enumerate((ctx.policy.get("spec") or {}).get("ingress") or ()):
        peers = rule.get("from") or []
        remote = _group(ctx, f"in{i}", _peer_cidrs(ctx, peers)) if peers else None
        ports = rule.get("ports") or []
        if not ports:
            rules.update(_rules(INGRESS, None, None, None, remote))
        for j, port in enumerate(ports):
            proto = _protocol(ctx, port)
            if proto is None:
                continue
            if isinstance(port.get("port"), str):
                number = sig.get((i, j))
                if number is not None:
                    rules.update(_rules(INGRESS, proto, number, number, remote))
                continue
            low, high = _numeric_range(port)
            rules.update(_rules(INGRESS, proto, low, high, remote))
    return rules


def _egress_rules(ctx: _Ctx) -> set[SgRule]:
    rules: set[SgRule] = set()
    for i, rule in enumerate((ctx.policy.get("spec") or {}).get("egress") or ()):
        peers = rule.get("to") or []
        remote = _group(ctx, f"eg{i}", _peer_cidrs(ctx, peers)) if peers else None
        ports = rule.get("ports") or []
        if not ports:
            rules.update(_rules(EGRESS, None, None, None, remote))
        for j, port in enumerate(ports):
            proto = _protocol(ctx, port)
            if proto is None:
                continue
            name = port.get("port")
            if not isinstance(name, str):
                low, high = _numeric_range(port)
                rules.update(_rules(EGRESS, proto, low, high, remote))
                continue
            # A named port only exists on pods: one address group per number it resolves to.
            by_number: dict[int, set[str]] = defaultdict(set)
            for pod in _all_peer_pods(ctx, peers):
                number = named_port(pod, name, proto)
                if number is not None:
                    by_number[number] |= _pod_cidrs(ctx, [pod])
            for number, cidrs in sorted(by_number.items()):
                key = _group(ctx, f"eg{i}p{j}n{number}", cidrs)
                rules.update(_rules(EGRESS, proto, number, number, key))
    return rules


def _allows_endpoint(
    ctx: _Ctx,
    rule: Mapping[str, Any],
    nets: Sequence[Any] | None,
    by_ip: Mapping[str, Obj],
    endpoint: tuple[str, int],
    proto: str,
) -> bool:
    """Whether one egress rule (its peers as ``nets``, None: anyone) allows a Service
    endpoint ``(address, target port)`` over ``proto``."""
    address, port = endpoint
    if nets is not None and not any(ipaddress.ip_address(address) in n for n in nets):
        return False
    ports = rule.get("ports") or []
    if not ports:
        return True
    for entry in ports:
        if str(entry.get("protocol") or "TCP") != proto or proto in ctx.unsupported:
            continue
        number = entry.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            pod = by_ip.get(address)
            if pod is not None and named_port(pod, number, proto) == port:
                return True
            continue
        low, high = _numeric_range(entry)
        if low is not None and high is not None and low <= port <= high:
            return True
    return False


def _service_rules(ctx: _Ctx) -> set[SgRule]:
    """Egress to the clusterIP of every Service port all of whose endpoints the policy's
    egress rules allow (the client's ACLs see the clusterIP, not the backend)."""
    rules_spec = (ctx.policy.get("spec") or {}).get("egress") or []
    if not ctx.services or any(not r.get("to") and not r.get("ports") for r in rules_spec):
        return set()  # no Services, or an allow-all rule already lets every clusterIP in
    by_ip = {ip: pod for pod in ctx.pods for ip in ctx.ips_of(pod)}
    peers = [
        (r, [ipaddress.ip_network(c) for c in _peer_cidrs(ctx, r["to"])] if r.get("to") else None)
        for r in rules_spec
    ]
    rules: set[SgRule] = set()
    for sp in ctx.services:
        if sp.protocol in ctx.unsupported:
            continue
        if all(
            any(_allows_endpoint(ctx, r, nets, by_ip, ep, sp.protocol) for r, nets in peers)
            for ep in sp.endpoints
        ):
            key = _group(ctx, f"svc{sp.protocol.lower()}{sp.port}", {host_cidr(sp.cluster_ip)})
            rules.update(_rules(EGRESS, sp.protocol, sp.port, sp.port, key))
    return rules


def plan_policy(
    policy: Obj,
    pods: Sequence[Obj],
    namespaces: Mapping[str, Mapping[str, str]],
    *,
    unsupported_protocols: Iterable[str] = (),
    ips_of: Any = pod_ips,
    services: Sequence[ServicePort] = (),
) -> PolicyPlan:
    """The SGs, address groups and per-pod SG variants that enforce ``policy``.

    ``pods``: every pod of the cluster that has (or will have) a port, with labels and
    container ports; ``namespaces``: name -> labels; ``ips_of(pod)``: its addresses;
    ``services``: the cluster's balanced Service ports (:func:`service_ports`).
    """
    ingress, egress = policy_types(policy)
    ctx = _Ctx(policy, pods, namespaces, frozenset(unsupported_protocols), ips_of, services)
    selected = [p for p in pods if selects(policy, p)]
    variants: dict[str, str] = {}
    sgs: dict[str, frozenset[SgRule]] = {}
    egress_rules = (_egress_rules(ctx) | _service_rules(ctx)) if egress else set()
    signatures: dict[str, dict[tuple[int, int], int | None]] = {BASE_VARIANT: {}}
    for pod in selected:
        key = variant_key(policy, pod)
        variants[pod_key(pod)] = key
        signatures[key] = {(i, j): n for i, j, n in _ingress_signature(policy, pod)}
    variants_needed = {BASE_VARIANT} if not variants else set(variants.values())
    for key in sorted(variants_needed):
        rules = _ingress_rules(ctx, signatures[key]) if ingress else set()
        sgs[key] = frozenset(rules | egress_rules)
    return PolicyPlan(
        ingress=ingress,
        egress=egress,
        sgs=sgs,
        address_groups={k: frozenset(v) for k, v in ctx.groups.items()},
        pod_variants=variants,
        problems=tuple(dict.fromkeys(ctx.problems)),
    )
