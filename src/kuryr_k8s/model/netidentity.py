"""NetworkPolicy → one Neutron security group per pod *identity*: the pure planning layer.

No I/O here. Given every NetworkPolicy, pod and namespace of the cluster (plain JSON),
:func:`plan_identities` says which identities exist, which pod has which identity and the
rules of each identity's security group. :func:`diff_plans` says which identities a change
touches. See ``docs/design/network-policy-identities.md``; the translation of one policy's
fields is the one of :mod:`kuryr_k8s.model.netpolicy` (whose helpers this module reuses).

Why one SG per identity
-----------------------

In the per-policy design (``docs/design/network-policy.md``) a port carries the SGs of the
policies that select its pod, so a *new* policy over 100 running pods is 100 port updates
(``PUT /ports/{id}`` with a new SG list, ~0.5 s each on the sandbox's Neutron: 49 s).
Here every pod's port carries exactly **one** SG from its creation on: the SG of its
identity. Pods no NetworkPolicy can tell apart share an identity:

    identity = (namespace, the pod's labels, its named container ports)

(A policy selects pods by namespace and labels, and resolves named ports on pods: nothing
else of a pod matters to any policy. Namespace labels are not part of the identity, they
are looked up when rules are computed.) The identity SG's rules are the union of the rules
of every policy that selects the identity, per direction, or "allow all" for a direction
no selecting policy isolates. Consequences:

* a new, changed or deleted policy changes the **rules** of the SGs of the identities it
  selects (and, through its peers, nothing else): no port is touched; the replicas of a
  Deployment share one identity, so a policy over 100 of them is one SG's rule diff;
* peers are ``remote_group_id`` = the identity SG of each matched identity (Neutron matches
  by SG membership; ML2/OVN keeps the member addresses in the port group's address set),
  so a new pod of an existing identity changes no rule anywhere: only its port is new;
* a port changes SG only when its pod's labels change (it moves to another identity).

Translation details (Kubernetes semantics on allow-only, stateful, union-of-rules SGs):

* ingress: no selecting policy isolates ingress → one allow-all rule per ethertype.
  Otherwise the union of the ingress rules of the selecting policies that have Ingress in
  their ``policyTypes`` (an isolating policy without rules contributes nothing: deny).
  Egress: the same with Egress.
* peers: absent/empty ``from``/``to`` = any remote; ``podSelector``/``namespaceSelector``
  = ``remote_identity`` rules, one per matched identity and ethertype (a selector matching
  no pod: no rule, deny); ``ipBlock`` = ``remote_prefix`` rules (``cidr`` minus
  ``except``). hostNetwork and finished pods have no identity: never peers, never selected.
* ports: absent/empty = every protocol and port (ICMP too); a number, a range
  (``endPort``), a protocol alone. Ingress names are resolved on the selected identity
  (its named ports are part of it: one number at most). Egress names are resolved on each
  peer identity: the rule for peer identity X carries X's number. A name nothing declares
  with that protocol allows nothing; a name with ``ipBlock`` peers allows nothing for those
  (as in :mod:`netpolicy`: stricter than Kubernetes).
* what Neutron cannot express (``unsupported_protocols``) is left out (deny side) and
  reported per policy in :attr:`IdentityPlan.problems`.
* Services: an egress-isolated identity also gets ``clusterIP/32`` on the Service port
  (``remote_prefix``) when its egress rules allow **every** ready endpoint of that Service
  port (address and target port): the client port's ACLs see the clusterIP, before OVN's
  load balancer picks a backend (see ``network-policy.md``, "Services"). Unlike the
  per-policy design the endpoints may be allowed by different policies (the identity's
  egress rules are already their union).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kuryr_k8s.model.netpolicy import (
    EGRESS,
    ETHERTYPES,
    INGRESS,
    Obj,
    ServicePort,
    host_cidr,
    ipblock_cidrs,
    pod_ips,
    pod_key,
    policy_types,
    rule_body,
    selector_matches,
)

KEY_LENGTH = 16
"""Hex characters of an identity key (64 bits of a SHA-256)."""

NamedPort = tuple[str, str, int]
"""(name, protocol, containerPort)."""


# --------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What any NetworkPolicy can know of a pod. Pods with equal identities share one SG."""

    namespace: str
    labels: tuple[tuple[str, str], ...]
    """Sorted (key, value) pairs."""
    named_ports: tuple[NamedPort, ...]
    """Sorted (name, protocol, number); one number per (name, protocol)."""

    @cached_property
    def key(self) -> str:
        """Stable short id (hex), usable in a Neutron SG name or tag."""
        blob = json.dumps([self.namespace, self.labels, self.named_ports], separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]

    @cached_property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def port_number(self, name: str, protocol: str) -> int | None:
        """The number this identity gives the named port (None: not declared)."""
        for n, p, number in self.named_ports:
            if n == name and p == protocol:
                return number
        return None


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _namespace(obj: Obj) -> str:
    return str(_meta(obj).get("namespace") or "")


def has_port(pod: Obj) -> bool:
    """Pods that get a Neutron port: not hostNetwork, not finished (as the policy
    reconciler's ``pod_has_port``). Others have no identity."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def identity_of(pod: Obj) -> Identity:
    """The pod's identity: namespace, labels and named container ports. A (name, protocol)
    declared twice keeps its first number, as :func:`netpolicy.named_port` resolves it."""
    labels = tuple(sorted((str(k), str(v)) for k, v in (_meta(pod).get("labels") or {}).items()))
    numbers: dict[tuple[str, str], int] = {}
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name"):
                key = (str(port["name"]), str(port.get("protocol") or "TCP"))
                numbers.setdefault(key, int(port["containerPort"]))
    named = tuple(sorted((n, p, number) for (n, p), number in numbers.items()))
    return Identity(_namespace(pod), labels, named)


# --------------------------------------------------------------------------------------
# Rules and plan
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdRule:
    """One Neutron rule of an identity SG. ``remote_identity`` is an identity *key* (the
    reconciler writes that identity's SG id as ``remote_group_id``); ``remote_prefix`` a
    CIDR; both None: any remote."""

    direction: str
    ethertype: str
    protocol: str | None = None
    """Lower case (Neutron's spelling); None: every protocol."""
    port_min: int | None = None
    port_max: int | None = None
    remote_identity: str | None = None
    remote_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.remote_identity is not None and self.remote_prefix is not None:
            raise ValueError("a rule has one remote: an identity or a prefix, not both")

    def sort_key(self) -> tuple[str, str, str, int, int, str, str]:
        return (
            self.direction,
            self.ethertype,
            self.protocol or "",
            -1 if self.port_min is None else self.port_min,
            -1 if self.port_max is None else self.port_max,
            self.remote_identity or "",
            self.remote_prefix or "",
        )


ALLOW_ALL = {
    direction: frozenset(IdRule(direction, eth) for eth in ETHERTYPES)
    for direction in (INGRESS, EGRESS)
}
"""The rules of a direction no selecting policy isolates (what Neutron's default egress
rules of a new SG are, too)."""


def fingerprint(rules: Iterable[IdRule]) -> str:
    """A short digest of a rule set (equal sets, equal fingerprints)."""
    h = hashlib.sha256()
    for rule in sorted(rules, key=IdRule.sort_key):
        h.update(repr(rule.sort_key()).encode())
    return h.hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class IdentityPlan:
    identities: Mapping[str, Identity]
    """identity key → identity, for every identity at least one pod has."""
    rules: Mapping[str, frozenset[IdRule]]
    """identity key → the rules of its SG."""
    pod_identity: Mapping[str, str]
    """``namespace/name`` of every pod with a port → its identity key."""
    problems: Mapping[str, tuple[str, ...]]
    """``namespace/name`` of a policy → what of it cannot be enforced (only policies with
    problems are present)."""
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    """identity key → :func:`fingerprint` of its rules."""

    def members(self, key: str) -> list[str]:
        """The pods (``namespace/name``) of one identity."""
        return sorted(p for p, k in self.pod_identity.items() if k == key)


@dataclass(frozen=True)
class PlanDiff:
    """What a reconciler has to do to go from one plan to the next."""

    added: frozenset[str]
    """Identities new in the later plan: create their SG (with :attr:`to_create` rules)
    before the ports of their pods and before any rule that names them."""
    removed: frozenset[str]
    """Identities no pod has any more: retire their SG (after the rules naming them are
    gone and no port has used it for the retire grace)."""
    changed: frozenset[str]
    """Identities in both plans whose rules differ: rule diff only, no port change."""
    to_create: Mapping[str, frozenset[IdRule]]
    """added or changed identity → rules to create (create before deleting)."""
    to_delete: Mapping[str, frozenset[IdRule]]
    """changed identity → rules to delete."""
    moved: Mapping[str, tuple[str, str]]
    """Pods in both plans whose identity changed (labels or named ports): (before, after).
    The only case where a port's SG changes."""

    @property
    def touched(self) -> frozenset[str]:
        """Every identity whose SG needs a Neutron call."""
        return self.added | self.removed | self.changed


def diff_plans(before: IdentityPlan, after: IdentityPlan) -> PlanDiff:
    """The identities (and their rules) that change between two plans."""
    old, new = set(before.rules), set(after.rules)
    changed = frozenset(k for k in old & new if before.rules[k] != after.rules[k])
    added = frozenset(new - old)
    to_create = {k: after.rules[k] - before.rules.get(k, frozenset()) for k in added | changed}
    to_delete = {k: before.rules[k] - after.rules[k] for k in changed}
    moved = {
        pod: (before.pod_identity[pod], key)
        for pod, key in after.pod_identity.items()
        if pod in before.pod_identity and before.pod_identity[pod] != key
    }
    return PlanDiff(
        added=added,
        removed=frozenset(old - new),
        changed=changed,
        to_create={k: v for k, v in to_create.items() if v or k in added},
        to_delete={k: v for k, v in to_delete.items() if v},
        moved=moved,
    )


def neutron_rule(rule: IdRule, sg_id_of: Mapping[str, str]) -> dict[str, Any]:
    """The Neutron ``security_group_rule`` body of a planned rule (without
    ``security_group_id``); ``sg_id_of``: identity key → SG id (every remote identity of
    the rule must have its SG already)."""
    body = rule_body(rule.direction, rule.ethertype, rule.protocol, rule.port_min, rule.port_max)
    if rule.remote_identity is not None:
        body["remote_group_id"] = sg_id_of[rule.remote_identity]
    elif rule.remote_prefix is not None:
        body["remote_ip_prefix"] = rule.remote_prefix
    return body


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------


_Remote = tuple[str | None, str | None, str | None]
"""(ethertype or None for both, remote identity, remote prefix)."""


@dataclass(frozen=True)
class _Peers:
    """A rule's ``from``/``to`` resolved: anyone, or identities plus CIDRs."""

    anyone: bool
    identities: tuple[Identity, ...] = ()
    prefixes: tuple[str, ...] = ()

    def remotes(self) -> list[_Remote]:
        if self.anyone:
            return [(None, None, None)]
        out: list[_Remote] = [(None, i.key, None) for i in self.identities]
        out += [(_ethertype(c), None, c) for c in self.prefixes]
        return out


def _ethertype(cidr: str) -> str:
    return "IPv4" if ipaddress.ip_network(cidr, strict=False).version == 4 else "IPv6"


def _rules(
    direction: str,
    protocol: str | None,
    low: int | None,
    high: int | None,
    remote: _Remote,
) -> list[IdRule]:
    eth, identity, prefix = remote
    proto = protocol.lower() if protocol else None
    return [
        IdRule(direction, e, proto, low, high, identity, prefix)
        for e in (ETHERTYPES if eth is None else (eth,))
    ]


def _numeric_range(port: Mapping[str, Any]) -> tuple[int | None, int | None]:
    number = port.get("port")
    if number is None:
        return None, None
    end = port.get("endPort")
    return int(number), int(end) if end is not None else int(number)


def _protocol(port: Mapping[str, Any]) -> str:
    return str(port.get("protocol") or "TCP")


@dataclass
class _Policy:
    """One policy, its peers resolved against the cluster's identities."""

    key: str
    namespace: str
    selector: Mapping[str, Any]
    ingress: bool
    egress: bool
    ingress_rules: list[tuple[_Peers, list[Mapping[str, Any]]]]
    egress_rules: list[tuple[_Peers, list[Mapping[str, Any]]]]

    def selects(self, ident: Identity) -> bool:
        return self.namespace == ident.namespace and selector_matches(
            self.selector, ident.label_map
        )


def _peer_matches(
    peer: Mapping[str, Any],
    policy_ns: str,
    ident: Identity,
    namespaces: Mapping[str, Mapping[str, str]],
) -> bool:
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is not None:
        labels = namespaces.get(ident.namespace)
        if labels is None or not selector_matches(ns_sel, labels):
            return False
    elif ident.namespace != policy_ns:
        return False
    pod_sel = peer.get("podSelector")
    return pod_sel is None or selector_matches(pod_sel, ident.label_map)


def _resolve_peers(
    peers: Sequence[Mapping[str, Any]],
    policy_ns: str,
    identities: Sequence[Identity],
    namespaces: Mapping[str, Mapping[str, str]],
) -> _Peers:
    if not peers:
        return _Peers(anyone=True)
    matched: dict[str, Identity] = {}
    prefixes: set[str] = set()
    for peer in peers:
        if "ipBlock" in peer:
            prefixes.update(ipblock_cidrs(peer["ipBlock"]))
            continue
        for ident in identities:
            if _peer_matches(peer, policy_ns, ident, namespaces):
                matched[ident.key] = ident
    return _Peers(False, tuple(matched[k] for k in sorted(matched)), tuple(sorted(prefixes)))


def _compile(
    policy: Obj,
    identities: Sequence[Identity],
    namespaces: Mapping[str, Mapping[str, str]],
) -> _Policy:
    spec = policy.get("spec") or {}
    ns = _namespace(policy)
    ingress, egress = policy_types(policy)
    selector = spec.get("podSelector")

    def rules(kind: str, peers_key: str) -> list[tuple[_Peers, list[Mapping[str, Any]]]]:
        return [
            (
                _resolve_peers(r.get(peers_key) or [], ns, identities, namespaces),
                list(r.get("ports") or []),
            )
            for r in spec.get(kind) or ()
        ]

    return _Policy(
        key=pod_key(policy),
        namespace=ns,
        selector=selector if selector is not None else {},
        ingress=ingress,
        egress=egress,
        ingress_rules=rules("ingress", "from") if ingress else [],
        egress_rules=rules("egress", "to") if egress else [],
    )


def _problems(policy: _Policy, unsupported: frozenset[str]) -> tuple[str, ...]:
    found: list[str] = []
    for _, ports in policy.ingress_rules + policy.egress_rules:
        for port in ports:
            proto = _protocol(port)
            if proto in unsupported:
                found.append(
                    f"protocol {proto} cannot be enforced by this Neutron: traffic it would "
                    "allow stays denied"
                )
    return tuple(dict.fromkeys(found))


def _ingress_rules(policy: _Policy, ident: Identity, unsupported: frozenset[str]) -> set[IdRule]:
    """The policy's ingress rules for one selected identity (named ports resolved on it)."""
    out: set[IdRule] = set()
    for peers, ports in policy.ingress_rules:
        remotes = peers.remotes()
        if not ports:
            for remote in remotes:
                out.update(_rules(INGRESS, None, None, None, remote))
        for port in ports:
            proto = _protocol(port)
            if proto in unsupported:
                continue
            name = port.get("port")
            low, high = _numeric_range(port) if not isinstance(name, str) else (None, None)
            if isinstance(name, str):
                low = high = ident.port_number(name, proto)
                if low is None:
                    continue  # the identity declares no such name: nothing allowed
            for remote in remotes:
                out.update(_rules(INGRESS, proto, low, high, remote))
    return out


def _egress_rules(
    policy: _Policy, identities: Sequence[Identity], unsupported: frozenset[str]
) -> set[IdRule]:
    """The policy's egress rules (the same for every identity it selects: egress named
    ports are resolved on the peers)."""
    out: set[IdRule] = set()
    for peers, ports in policy.egress_rules:
        remotes = peers.remotes()
        if not ports:
            for remote in remotes:
                out.update(_rules(EGRESS, None, None, None, remote))
        for port in ports:
            proto = _protocol(port)
            if proto in unsupported:
                continue
            name = port.get("port")
            if not isinstance(name, str):
                low, high = _numeric_range(port)
                for remote in remotes:
                    out.update(_rules(EGRESS, proto, low, high, remote))
                continue
            # A name exists only on pods: one rule per peer identity that declares it,
            # with that identity's number (any remote: every identity of the cluster).
            for peer in identities if peers.anyone else peers.identities:
                number = peer.port_number(name, proto)
                if number is not None:
                    out.update(_rules(EGRESS, proto, number, number, (None, peer.key, None)))
    return out


def _egress_allows(
    rules: Iterable[IdRule],
    address: str,
    protocol: str,
    port: int,
    identity_of_ip: Mapping[str, str],
) -> bool:
    """Whether egress ``rules`` let a connection to ``address``:``port`` out (Neutron's
    matching, with ``identity_of_ip`` as SG membership)."""
    ip = ipaddress.ip_address(address)
    eth = "IPv4" if ip.version == 4 else "IPv6"
    proto = protocol.lower()
    for r in rules:
        if r.direction != EGRESS or r.ethertype != eth:
            continue
        if r.protocol is not None and r.protocol != proto:
            continue
        if (
            r.port_min is not None
            and r.port_max is not None
            and not r.port_min <= port <= r.port_max
        ):
            continue
        if r.remote_identity is not None:
            if identity_of_ip.get(str(ip)) != r.remote_identity:
                continue
        elif r.remote_prefix is not None and ip not in ipaddress.ip_network(r.remote_prefix):
            continue
        return True
    return False


def _service_rules(
    egress: frozenset[IdRule],
    services: Sequence[ServicePort],
    identity_of_ip: Mapping[str, str],
    unsupported: frozenset[str],
) -> set[IdRule]:
    """``clusterIP/32`` rules for the Service ports whose every endpoint ``egress``
    allows (and that ``egress`` does not already let out)."""
    out: set[IdRule] = set()
    for sp in services:
        if sp.protocol in unsupported or not sp.endpoints:
            continue
        if _egress_allows(egress, sp.cluster_ip, sp.protocol, sp.port, identity_of_ip):
            continue
        if all(
            _egress_allows(egress, addr, sp.protocol, target, identity_of_ip)
            for addr, target in sp.endpoints
        ):
            vip = host_cidr(sp.cluster_ip)
            out.update(_rules(EGRESS, sp.protocol, sp.port, sp.port, (_ethertype(vip), None, vip)))
    return out


def plan_identities(
    policies: Iterable[Obj],
    pods: Iterable[Obj],
    namespaces: Mapping[str, Mapping[str, str]],
    *,
    unsupported_protocols: Iterable[str] = (),
    services: Sequence[ServicePort] = (),
    ips_of: Callable[[Obj], Iterable[str]] = pod_ips,
) -> IdentityPlan:
    """The identities of ``pods`` and the rules of each identity's SG under ``policies``.

    ``policies``: the cluster's live NetworkPolicies (deleting ones left out by the
    caller); ``pods``: every pod (those without a port are skipped); ``namespaces``: name
    → labels; ``services``: balanced Service ports (:func:`netpolicy.service_ports`);
    ``ips_of(pod)``: its addresses, used only to recognise Service endpoints as pods.
    Raises :class:`netpolicy.InvalidSelector` for a selector operator the API would reject.
    """
    unsupported = frozenset(unsupported_protocols)
    live = [p for p in pods if has_port(p)]
    pod_identity: dict[str, str] = {}
    by_key: dict[str, Identity] = {}
    for pod in live:
        ident = identity_of(pod)
        by_key.setdefault(ident.key, ident)
        pod_identity[pod_key(pod)] = ident.key
    identities = [by_key[k] for k in sorted(by_key)]
    compiled = sorted((_compile(p, identities, namespaces) for p in policies), key=lambda c: c.key)
    problems = {c.key: found for c in compiled if (found := _problems(c, unsupported))}

    identity_of_ip: dict[str, str] = {}
    if services:
        for pod in live:
            for ip in ips_of(pod):
                identity_of_ip[str(ipaddress.ip_address(ip))] = pod_identity[pod_key(pod)]

    egress_of_policy: dict[str, frozenset[IdRule]] = {}
    egress_of_set: dict[tuple[str, ...], frozenset[IdRule]] = {}
    rules: dict[str, frozenset[IdRule]] = {}
    for ident in identities:
        selecting = [c for c in compiled if c.selects(ident)]
        ingress_by = [c for c in selecting if c.ingress]
        egress_by = tuple(c.key for c in selecting if c.egress)
        ingress: set[IdRule] = set()
        for c in ingress_by:
            ingress |= _ingress_rules(c, ident, unsupported)
        if egress_by not in egress_of_set:
            egress: set[IdRule] = set()
            for c in selecting:
                if c.egress:
                    if c.key not in egress_of_policy:
                        egress_of_policy[c.key] = frozenset(
                            _egress_rules(c, identities, unsupported)
                        )
                    egress |= egress_of_policy[c.key]
            frozen = frozenset(egress)
            if egress_by and services:
                frozen |= _service_rules(frozen, services, identity_of_ip, unsupported)
            egress_of_set[egress_by] = frozen
        rules[ident.key] = (frozenset(ingress) if ingress_by else ALLOW_ALL[INGRESS]) | (
            egress_of_set[egress_by] if egress_by else ALLOW_ALL[EGRESS]
        )
    return IdentityPlan(
        identities=by_key,
        rules=rules,
        pod_identity=pod_identity,
        problems=problems,
        fingerprints={k: fingerprint(v) for k, v in rules.items()},
    )
