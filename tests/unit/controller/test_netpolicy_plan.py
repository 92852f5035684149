"""The NetworkPolicy translation against an independent model of the spec.

For each scenario (the cases of the upstream Kubernetes network-policy e2e tests and the
corners of the API), every policy is planned (:func:`plan_policy`), each pod gets its SGs
from the real :class:`PolicyPlacement` (KNP statuses filled as the reconciler would), and a
small simulator of Neutron's stateful SGs (allow-only rules, union over a port's SGs,
address groups as remote) decides each (from, to, protocol, port). That must equal
:func:`netpol_truth.allowed` for every combination.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from kuryr_k8s.controller.kuryrports import PodNetwork
from kuryr_k8s.controller.policies import (
    OPEN_EGRESS,
    OPEN_INGRESS,
    ClusterSecurityGroups,
    PolicyPlacement,
    PolicyWorld,
    _rule_bodies,
)
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.model import netpolicy as m
from kuryr_k8s.model.errors import ResourceNotReady
from netpol_truth import Endpoint, allowed, egress_allows, via_service

NAMESPACES = {"alpha": {"team": "a"}, "beta": {"team": "b", "env": "prod"}, "gamma": {}}
PROBES = [
    ("TCP", 80),
    ("TCP", 81),
    ("TCP", 8080),
    ("TCP", 5001),
    ("UDP", 53),
    ("UDP", 80),
    ("SCTP", 80),
    ("ICMP", 0),
]


def _pods() -> list[Endpoint]:
    web_ports = {("http", "TCP"): 80, ("dns", "UDP"): 53}
    alt_ports = {("http", "TCP"): 8080}
    return [
        Endpoint("a-web", "10.20.0.11", "alpha", {"app": "web"}, web_ports),
        Endpoint("a-db", "10.20.0.12", "alpha", {"app": "db", "tier": "back"}, {}),
        Endpoint("a-alt", "10.20.0.13", "alpha", {"app": "web", "v": "2"}, alt_ports),
        Endpoint("b-client", "10.20.1.21", "beta", {"app": "client"}, {}),
        Endpoint("b-web", "10.20.1.22", "beta", {"app": "web"}, web_ports),
        Endpoint("g-any", "10.20.2.31", "gamma", {"app": "client"}, {}),
    ]


VM = Endpoint("vm", "10.10.0.50")


def _pod_obj(e: Endpoint) -> dict[str, Any]:
    ports = [{"name": n, "protocol": p, "containerPort": c} for (n, p), c in e.named_ports.items()]
    return {
        "metadata": {"name": e.name, "namespace": e.namespace, "labels": e.labels, "uid": e.name},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": e.ip, "podIPs": [{"ip": e.ip}], "phase": "Running"},
    }


def _policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "uid": f"uid-{ns}-{name}"}, "spec": spec}


ALL = {"podSelector": {}}
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "no policy": [],
    "deny all ingress": [_policy("alpha", "deny", {**ALL, "policyTypes": ["Ingress"]})],
    "deny all egress": [_policy("alpha", "deny", {**ALL, "policyTypes": ["Egress"]})],
    "deny both, types absent means ingress only": [_policy("alpha", "deny", dict(ALL))],
    "allow all ingress (empty rule)": [
        _policy("alpha", "deny", {**ALL, "policyTypes": ["Ingress"]}),
        _policy("alpha", "all", {**ALL, "ingress": [{}]}),
    ],
    "allow from same namespace": [
        _policy("alpha", "ns", {**ALL, "ingress": [{"from": [{"podSelector": {}}]}]})
    ],
    "allow from namespace by label": [
        _policy(
            "alpha",
            "from-b",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
            },
        )
    ],
    "allow from pod in namespace (both selectors)": [
        _policy(
            "alpha",
            "pod-in-ns",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [{"key": "team", "operator": "Exists"}]
                                },
                                "podSelector": {"matchLabels": {"app": "client"}},
                            }
                        ]
                    }
                ],
            },
        )
    ],
    "namespace OR pod (two peers)": [
        _policy(
            "alpha",
            "or",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
                            {"podSelector": {"matchLabels": {"app": "web"}}},
                        ]
                    }
                ],
            },
        )
    ],
    "ports and endPort": [
        _policy(
            "alpha",
            "ports",
            {
                **ALL,
                "ingress": [
                    {
                        "ports": [
                            {"port": 80},
                            {"protocol": "TCP", "port": 5000, "endPort": 5002},
                            {"protocol": "UDP"},
                        ]
                    }
                ],
            },
        )
    ],
    "named ports (ingress, two resolutions)": [
        _policy(
            "alpha",
            "named",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}],
            },
        )
    ],
    "ipBlock with except": [
        _policy(
            "alpha",
            "ipblock",
            {
                **ALL,
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.1.16/28"]}}]}
                ],
            },
        )
    ],
    "egress to ipBlock": [
        _policy(
            "alpha",
            "eg",
            {
                **ALL,
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.10.0.0/24"}}], "ports": [{"port": 80}]}
                ],
            },
        )
    ],
    "egress to named port of peers": [
        _policy(
            "beta",
            "eg-named",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"app": "web"}},
                            }
                        ],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        )
    ],
    "multiple policies (union) and both directions": [
        _policy(
            "alpha",
            "p1",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        ),
        _policy(
            "alpha",
            "p2",
            {
                "podSelector": {"matchExpressions": [{"key": "v", "operator": "DoesNotExist"}]},
                "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 81}]}],
            },
        ),
        _policy("beta", "b-deny", {**ALL, "policyTypes": ["Ingress", "Egress"]}),
    ],
    "SCTP allowed where supported": [
        _policy(
            "alpha", "sctp", {**ALL, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}]}
        )
    ],
}


ALL_OPEN = {"no policy", "allow all ingress (empty rule)"}


Side = Callable[[Endpoint, str, str, str, int], bool]


def _simulate(
    endpoints: list[Endpoint],
    policies: list[dict[str, Any]],
    unsupported: tuple[str, ...] = (),
    address_groups: bool = True,
) -> dict[tuple[str, str, str, int], bool]:
    """Neutron rule bodies as the reconciler writes them (address groups, or one
    ``remote_ip_prefix`` rule per peer), evaluated like stateful SGs."""
    side = _enforce(endpoints, policies, PolicyWorld(Store(), Store(), Store(), Store()),
                    unsupported, address_groups)  # fmt: skip
    out = {}
    for src, dst in itertools.permutations(endpoints, 2):
        for proto, port in PROBES:
            ok = side(src, "egress", dst.ip, proto, port) and side(
                dst, "ingress", src.ip, proto, port
            )
            out[(src.name, dst.name, proto, port)] = ok
    return out


def _enforce(
    endpoints: list[Endpoint],
    policies: list[dict[str, Any]],
    world: PolicyWorld,
    unsupported: tuple[str, ...] = (),
    address_groups: bool = True,
) -> Side:
    """Plans, placement and Neutron's stateful SGs: ``side(endpoint, direction, remote
    address, protocol, port)`` says whether that endpoint's SGs let it through."""
    pods = [_pod_obj(e) for e in endpoints if e.is_pod]
    for pod in pods:
        world.pods.put(pod)
    for ns, labels in NAMESPACES.items():
        world.namespaces.put({"metadata": {"name": ns, "labels": labels}})
    rules_of: dict[str, list[dict[str, Any]]] = {"default": []}
    groups: dict[str, frozenset[str]] = {}
    for policy in policies:
        world.policies.put(policy)
        plan = world.plan(policy, unsupported)
        pk = f"{policy['metadata']['namespace']}/{policy['metadata']['name']}"
        ag_ids = {key: f"{pk}:{key}" for key in plan.address_groups}
        for key, addrs in plan.address_groups.items():
            groups[ag_ids[key]] = addrs
        sg_ids = {}
        for variant, rules in plan.sgs.items():
            sg_ids[variant] = f"{pk}:{variant}"
            rules_of[f"{pk}:{variant}"] = [
                b for r in rules for b in _rule_bodies(r, plan, ag_ids if address_groups else None)
            ]
        world.knps.put(
            {
                "metadata": policy["metadata"],
                "spec": {"policyUid": policy["metadata"]["uid"]},
                "status": {"securityGroups": sg_ids},
            }
        )
    for sg, direction in ((OPEN_INGRESS, "ingress"), (OPEN_EGRESS, "egress")):
        rules_of[sg] = [{"direction": direction, "ethertype": eth} for eth in m.ETHERTYPES]
    cluster = ClusterSecurityGroups(None, "c", "p")  # type: ignore[arg-type]
    cluster.ids = {OPEN_INGRESS: OPEN_INGRESS, OPEN_EGRESS: OPEN_EGRESS}
    placement = PolicyPlacement(None, world, cluster)
    network = PodNetwork("p", "n", "s", ("default",), (), 1450)
    sgs_of = {
        pod["metadata"]["name"]: asyncio.run(placement.security_groups_for(pod, network))
        for pod in pods
    }

    def rule_allows(
        rule: dict[str, Any], direction: str, remote: str, proto: str, port: int
    ) -> bool:
        if rule["direction"] != direction or rule["ethertype"] != "IPv4":
            return False
        if rule.get("protocol") is not None and rule["protocol"] != proto.lower():
            return False
        low, high = rule.get("port_range_min"), rule.get("port_range_max")
        if proto != "ICMP" and low is not None and not low <= port <= high:
            return False
        ip = ipaddress.ip_address(remote)
        if rule.get("remote_ip_prefix"):
            return ip in ipaddress.ip_network(rule["remote_ip_prefix"])
        if rule.get("remote_address_group_id"):
            cidrs = groups[rule["remote_address_group_id"]]
            return any(ip in ipaddress.ip_network(c) for c in cidrs)
        return True

    def side(e: Endpoint, direction: str, remote: str, proto: str, port: int) -> bool:
        if not e.is_pod:
            return True
        return any(
            rule_allows(r, direction, remote, proto, port)
            for sg in sgs_of[e.name]
            for r in rules_of[sg]
        )

    return side


@pytest.mark.parametrize("address_groups", [True, False], ids=["address-groups", "ip-prefixes"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_enforced_equals_kubernetes(scenario: str, address_groups: bool) -> None:
    policies = SCENARIOS[scenario]
    endpoints = [*_pods(), VM]
    got = _simulate(endpoints, policies, address_groups=address_groups)
    want = {
        (s, d, proto, port): allowed(policies, NAMESPACES, se, de, proto, port)
        for se, de in itertools.permutations(endpoints, 2)
        for s, d in [(se.name, de.name)]
        for proto, port in PROBES
    }
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, f"{len(wrong)} differ, e.g. {[(k, 'want', want[k]) for k in wrong[:8]]}"
    # and the scenario is not trivial: something is denied unless it opens everything
    assert (scenario in ALL_OPEN) == all(want.values())


def test_unsupported_protocol_stays_denied_and_is_reported() -> None:
    policies = SCENARIOS["SCTP allowed where supported"]
    got = _simulate([*_pods(), VM], policies, unsupported=("SCTP",))
    assert not got[("b-client", "a-web", "SCTP", 80)]
    assert not got[("b-client", "a-web", "TCP", 80)]  # the policy still isolates
    world = PolicyWorld(Store(), Store(), Store(), Store())
    plan = world.plan(policies[0], ("SCTP",))
    assert plan.problems and "SCTP" in plan.problems[0]


def test_pod_churn_changes_addresses_only() -> None:
    policy = SCENARIOS["allow from namespace by label"][0]
    pods = [_pod_obj(e) for e in _pods()]
    before = m.plan_policy(policy, pods, NAMESPACES)
    newcomer = _pod_obj(Endpoint("b-new", "10.20.1.99", "beta", {"app": "x"}))
    after = m.plan_policy(policy, [*pods, newcomer], NAMESPACES)
    assert before.sgs == after.sgs
    assert after.address_groups["in0"] - before.address_groups["in0"] == {"10.20.1.99/32"}


def test_placement_waits_for_the_policy_sg() -> None:
    world = PolicyWorld(Store(), Store(), Store(), Store())
    pod = _pod_obj(_pods()[0])
    world.policies.put(SCENARIOS["deny all ingress"][0])
    cluster = ClusterSecurityGroups(None, "c", "p")  # type: ignore[arg-type]
    cluster.ids = {OPEN_INGRESS: "oi", OPEN_EGRESS: "oe"}
    placement = PolicyPlacement(None, world, cluster)
    network = PodNetwork("p", "n", "s", ("default",), (), 1450)
    with pytest.raises(ResourceNotReady):
        asyncio.run(placement.security_groups_for(pod, network))


def test_ipblock_except() -> None:
    assert m.ipblock_cidrs({"cidr": "10.0.0.0/24", "except": ["10.0.0.0/25", "10.0.0.192/26"]}) == [
        "10.0.0.128/26"
    ]
    assert m.ipblock_cidrs({"cidr": "10.0.0.0/24", "except": ["10.0.0.0/16"]}) == []


# ---- Services: a clusterIP under egress/ingress policies ------------------------------

SVC_WEB = ("alpha", "web", "10.96.0.10")
SVC_B = ("beta", "bweb", "10.96.0.20")
SERVICE_PORTS: list[tuple[tuple[str, str, str], str, int, list[tuple[str, int]]]] = [
    # (service, protocol, port, backends (pod, target port) as its EndpointSlices say)
    (SVC_WEB, "TCP", 80, [("a-web", 80), ("a-alt", 8080)]),  # targetPort "http"
    (SVC_B, "TCP", 8000, [("b-web", 80)]),
    (SVC_B, "UDP", 53, [("b-web", 53)]),
]


def _service_objects() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ips = {e.name: e.ip for e in _pods()}
    services, slices = [], []
    for ns, name, ip in (SVC_WEB, SVC_B):
        mine = [sp for sp in SERVICE_PORTS if sp[0][:2] == (ns, name)]
        ports = [
            {"name": f"p{port}", "protocol": proto, "port": port} for _, proto, port, _ in mine
        ]
        services.append(
            {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": ports}}
        )
        for _, proto, port, backends in mine:
            for pod, target in backends:
                slices.append(
                    {
                        "metadata": {
                            "namespace": ns,
                            "name": f"{name}-{pod}-{port}",
                            "labels": {"kubernetes.io/service-name": name},
                        },
                        "endpoints": [{"addresses": [ips[pod]]}],
                        "ports": [{"name": f"p{port}", "protocol": proto, "port": target}],
                    }
                )
    return services, slices


WEB_ANYWHERE = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}
SERVICE_SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "egress to all web pods by named port": [
        _policy(
            "beta",
            "eg",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [WEB_ANYWHERE], "ports": [{"port": "http"}]}],
            },
        )
    ],
    "egress to some of a Service's backends (port 80 only)": [
        _policy(
            "beta",
            "eg80",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 80}]}],
            },
        )
    ],
    "egress by port only (no peers)": [
        _policy(
            "gamma",
            "eg-port",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 8080}, {"port": 53, "protocol": "UDP"}]}],
            },
        )
    ],
    "deny all egress": [_policy("beta", "deny", {**ALL, "policyTypes": ["Egress"]})],
    "ingress on the backends by client identity": [
        _policy(
            "alpha",
            "from-b",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
            },
        )
    ],
    "egress and ingress together": [
        _policy(
            "beta",
            "eg",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        ),
        _policy("beta", "in", {**ALL, "ingress": [{"from": [{"podSelector": {}}]}]}),
    ],
}


@pytest.mark.parametrize("address_groups", [True, False], ids=["address-groups", "ip-prefixes"])
@pytest.mark.parametrize("scenario", list(SERVICE_SCENARIOS))
def test_clusterip_under_policies(scenario: str, address_groups: bool) -> None:
    """Client → clusterIP: the client's SGs see the clusterIP (egress), the backend's see
    the client (ingress). Each backend's outcome must be what Kubernetes says for a
    connection landing on it, except where the client's egress allows only some backends:
    then every connection is denied (the documented safe side)."""
    policies = SERVICE_SCENARIOS[scenario]
    endpoints = _pods()
    world = PolicyWorld(Store(), Store(), Store(), Store(), services=Store(), slices=Store())
    services, slices = _service_objects()
    for obj in services:
        world.services.put(obj)  # type: ignore[union-attr]
    for obj in slices:
        world.slices.put(obj)  # type: ignore[union-attr]
    side = _enforce(endpoints, policies, world, (), address_groups)
    check_clusterips(endpoints, policies, side)


def check_clusterips(
    endpoints: list[Endpoint],
    policies: list[dict[str, Any]],
    side: Callable[[Endpoint, str, str, str, int], bool],
) -> None:
    """Every client → clusterIP → backend outcome as :func:`netpol_truth.via_service`
    says, denied where the client's egress allows only some backends (the safe side);
    ``side(endpoint, direction, remote address, protocol, port)``: its SGs allow that."""
    by_name = {e.name: e for e in endpoints}
    wrong, outcomes = [], set()
    for client in endpoints:
        for (_, _, vip), proto, port, backends in SERVICE_PORTS:
            targets = [(by_name[b], t) for b, t in backends]
            want = via_service(policies, NAMESPACES, client, targets, proto)
            egress_ok = {
                egress_allows(policies, NAMESPACES, client, b, proto, t) for b, t in targets
            }
            if len(egress_ok) > 1:
                want = dict.fromkeys(want, False)
            for b, t in targets:
                got = side(client, "egress", vip, proto, port) and side(
                    b, "ingress", client.ip, proto, t
                )
                outcomes.add(got)
                if got != want[b.name]:
                    wrong.append(f"{client.name} -> {vip}:{port}/{proto} via {b.name}: {got}")
    assert not wrong, wrong
    assert outcomes == {True, False}, "the scenario must allow some and deny some"
