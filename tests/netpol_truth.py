"""What Kubernetes says about one connection under NetworkPolicy: the tests' own model.

Written from the NetworkPolicy API reference, independently of
``kuryr_k8s.model.netpolicy`` (it shares no code with it), so the unit tests (plan vs.
model) and the e2e suite (observed traffic vs. model) compare the implementation with an
independent reading of the spec:

* A connection from A to B on (protocol, port) is allowed iff A's **egress** allows it and
  B's **ingress** allows it. A non-pod endpoint (a VM) has no policy: its side allows all.
* A pod is isolated for a direction iff some policy in its namespace selects it
  (``podSelector``) and lists that direction in ``policyTypes`` (absent ``policyTypes``:
  Ingress, plus Egress when the policy has egress rules). Not isolated: all allowed.
* Isolated: allowed iff some rule of that direction in some selecting policy matches the
  peer and the port (the union of all rules).
* Peers: absent/empty = everyone. ``podSelector`` alone = pods of the policy's namespace;
  ``namespaceSelector`` alone = all pods of matching namespaces; both = matching pods in
  matching namespaces; ``ipBlock`` = addresses in ``cidr`` and in no ``except``.
* Ports: absent/empty = all. An entry = its protocol (default TCP) and its port: absent =
  every port, a number (up to ``endPort``), or a name resolved on the destination pod's
  container ports (same protocol); a name on a non-pod destination matches nothing.
* Services: a connection to a Service's clusterIP is a connection to the one backend it
  lands on (on its target port), judged as above with that pod as the destination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (``namespace`` set) or an outside address (a VM: ``namespace`` None)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    named_ports: dict[tuple[str, str], int] = field(default_factory=dict, hash=False, compare=False)
    """(name, protocol) -> container port."""

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def label_selector_matches(sel: dict[str, Any], labels: dict[str, str]) -> bool:
    ok = all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())
    for e in sel.get("matchExpressions") or []:
        have, vals = e["key"] in labels, e.get("values") or []
        ok = (
            ok
            and {
                "In": have and labels.get(e["key"]) in vals,
                "NotIn": not (have and labels.get(e["key"]) in vals),
                "Exists": have,
                "DoesNotExist": not have,
            }[e["operator"]]
        )
    return ok


def _types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _selecting(policies: list[dict[str, Any]], pod: Endpoint, direction: str) -> list[Any]:
    return [
        p
        for p in policies
        if pod.is_pod
        and p["metadata"]["namespace"] == pod.namespace
        and label_selector_matches(p["spec"].get("podSelector") or {}, pod.labels)
        and direction in _types(p)
    ]


def _peer_matches(
    peer: dict[str, Any], policy_ns: str, other: Endpoint, ns_labels: dict[str, dict[str, str]]
) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        if ip not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(
            ip in ipaddress.ip_network(x, strict=False) for x in block.get("except") or []
        )
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not label_selector_matches(
            peer["namespaceSelector"], ns_labels.get(other.namespace or "", {})
        ):
            return False
    elif other.namespace != policy_ns:
        return False
    if "podSelector" in peer:
        return label_selector_matches(peer["podSelector"], other.labels)
    return True


def _port_matches(entry: dict[str, Any], dst: Endpoint, proto: str, port: int) -> bool:
    if entry.get("protocol", "TCP") != proto:
        return False
    p = entry.get("port")
    if p is None:
        return True
    if isinstance(p, str):
        return dst.is_pod and dst.named_ports.get((p, proto)) == port
    return p <= port <= entry.get("endPort", p)


def _rule_allows(
    rule: dict[str, Any],
    peers_key: str,
    policy_ns: str,
    other: Endpoint,
    dst: Endpoint,
    proto: str,
    port: int,
    ns_labels: dict[str, dict[str, str]],
) -> bool:
    peers = rule.get(peers_key) or []
    if peers and not any(_peer_matches(p, policy_ns, other, ns_labels) for p in peers):
        return False
    ports = rule.get("ports") or []
    if proto == "ICMP":  # ICMP has no port: only a rule without ports allows it
        return not ports
    return not ports or any(_port_matches(e, dst, proto, port) for e in ports)


def allowed(
    policies: list[dict[str, Any]],
    ns_labels: dict[str, dict[str, str]],
    src: Endpoint,
    dst: Endpoint,
    proto: str,
    port: int,
) -> bool:
    """Does Kubernetes allow ``src`` → ``dst`` on ``proto``/``port`` (ICMP: port ignored)?"""
    if not egress_allows(policies, ns_labels, src, dst, proto, port):
        return False
    ingress = _selecting(policies, dst, "Ingress")
    return not ingress or any(
        _rule_allows(r, "from", p["metadata"]["namespace"], src, dst, proto, port, ns_labels)
        for p in ingress
        for r in p["spec"].get("ingress") or []
    )


def egress_allows(
    policies: list[dict[str, Any]],
    ns_labels: dict[str, dict[str, str]],
    src: Endpoint,
    dst: Endpoint,
    proto: str,
    port: int,
) -> bool:
    """The source's side alone: do ``src``'s egress policies allow ``dst``/``port``?"""
    egress = _selecting(policies, src, "Egress")
    return not egress or any(
        _rule_allows(r, "to", p["metadata"]["namespace"], dst, dst, proto, port, ns_labels)
        for p in egress
        for r in p["spec"].get("egress") or []
    )


def via_service(
    policies: list[dict[str, Any]],
    ns_labels: dict[str, dict[str, str]],
    src: Endpoint,
    backends: list[tuple[Endpoint, int]],
    proto: str,
) -> dict[str, bool]:
    """``src`` → a Service's clusterIP: per backend (name), is a connection that lands on
    it (on its target port) allowed?"""
    return {b.name: allowed(policies, ns_labels, src, b, proto, port) for b, port in backends}
