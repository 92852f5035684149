"""The identity-SG translation (``model/netidentity.py``) against the independent model.

Same scenarios, pods, VM and probes as ``test_netpolicy_plan.py``. The plan is turned into
Neutron rule bodies (:func:`neutron_rule`, ``remote_group_id`` = the peer identity's SG),
every pod's port carries exactly one SG (its identity's), and a small simulator of
Neutron's stateful SGs decides each (from, to, protocol, port): a ``remote_group_id`` rule
matches an address iff the port holding it is in that SG, a ``remote_ip_prefix`` rule by
CIDR, rules are a union, and a connection passes iff the source's egress and the
destination's ingress allow it. That must equal :func:`netpol_truth.allowed` everywhere.

Then the properties the design exists for (which identities a change touches, which ports
move) and the deny side of what Neutron cannot express.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from kuryr_k8s.model import netidentity as ni
from kuryr_k8s.model import netpolicy as m
from netpol_truth import Endpoint, allowed
from unit.controller.test_netpolicy_plan import (
    ALL,
    ALL_OPEN,
    NAMESPACES,
    PROBES,
    SCENARIOS,
    SERVICE_SCENARIOS,
    VM,
    _pod_obj,
    _pods,
    _policy,
    _service_objects,
    check_clusterips,
)

Side = Callable[[Endpoint, str, str, str, int], bool]

WEB_PORTS = {("http", "TCP"): 80, ("dns", "UDP"): 53}


def _twins() -> list[Endpoint]:
    """Second members of existing identities (a Deployment's replicas): same namespace,
    labels and named ports, another address."""
    return [
        Endpoint("a-web-2", "10.20.0.14", "alpha", {"app": "web"}, WEB_PORTS),
        Endpoint("b-client-2", "10.20.1.23", "beta", {"app": "client"}, {}),
    ]


EXTRA_SCENARIOS: dict[str, list[dict[str, Any]]] = {
    # a name some non-peer also declares: only the peers' numbers may open
    "egress to a named port of some of its holders": [
        _policy(
            "beta",
            "eg-alpha-http",
            {
                **ALL,
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "a"}},
                                "podSelector": {"matchLabels": {"app": "web"}},
                            }
                        ],
                        "ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}],
                    }
                ],
            },
        )
    ],
    "egress by named port to anyone": [
        _policy(
            "gamma",
            "eg-any-http",
            {**ALL, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]},
        )
    ],
    "ingress by name from peers, egress by number, one policy": [
        _policy(
            "alpha",
            "both",
            {
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "tier", "operator": "NotIn", "values": ["back"]}
                                    ]
                                }
                            },
                            {
                                "namespaceSelector": {"matchLabels": {"env": "prod"}},
                                "podSelector": {"matchLabels": {"app": "client"}},
                            },
                        ],
                        "ports": [{"port": "http"}, {"port": 81}],
                    }
                ],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"app": "client"}},
                            }
                        ],
                        "ports": [{"port": 80, "endPort": 81}],
                    },
                    {"to": [{"ipBlock": {"cidr": "10.10.0.0/16"}}]},
                ],
            },
        ),
        _policy("gamma", "deny-in", {**ALL, "policyTypes": ["Ingress"]}),
    ],
    "a peer selector matching no pod denies": [
        _policy(
            "alpha",
            "nobody",
            {**ALL, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "ghost"}}}]}]},
        )
    ],
}
TRUTH_SCENARIOS = {**SCENARIOS, **EXTRA_SCENARIOS}

ENDPOINT_SETS = {"pods": lambda: [*_pods(), VM], "with-twins": lambda: [*_pods(), *_twins(), VM]}


# ---- the simulator -------------------------------------------------------------------


def _sg(key: str) -> str:
    return f"sg-{key}"


def _side(endpoints: list[Endpoint], plan: ni.IdentityPlan) -> Side:
    """Neutron's stateful SGs for this design: ``side(endpoint, direction, remote address,
    protocol, port)`` says whether the endpoint's one SG lets that through."""
    sg_ids = {key: _sg(key) for key in plan.rules}
    rules_of = {
        sg_ids[key]: [ni.neutron_rule(r, sg_ids) for r in rules]
        for key, rules in plan.rules.items()
    }
    port_sgs: dict[str, tuple[str, ...]] = {}
    members: dict[str, set[str]] = defaultdict(set)  # SG id -> addresses of its ports
    for e in endpoints:
        if e.is_pod:
            port_sgs[e.name] = (_sg(plan.pod_identity[f"{e.namespace}/{e.name}"]),)
            for sg in port_sgs[e.name]:
                members[sg].add(e.ip)

    def rule_allows(
        rule: dict[str, Any], direction: str, remote: str, proto: str, port: int
    ) -> bool:
        ip = ipaddress.ip_address(remote)
        if rule["direction"] != direction or rule["ethertype"] != f"IPv{ip.version}":
            return False
        if rule.get("protocol") is not None and rule["protocol"] != proto.lower():
            return False
        low, high = rule.get("port_range_min"), rule.get("port_range_max")
        if proto != "ICMP" and low is not None and not low <= port <= high:
            return False
        if rule.get("remote_group_id") is not None:
            return remote in members[rule["remote_group_id"]]
        if rule.get("remote_ip_prefix") is not None:
            return ip in ipaddress.ip_network(rule["remote_ip_prefix"])
        return True

    def side(e: Endpoint, direction: str, remote: str, proto: str, port: int) -> bool:
        if not e.is_pod:
            return True  # the VM's port: no policy
        return any(
            rule_allows(r, direction, remote, proto, port)
            for sg in port_sgs[e.name]
            for r in rules_of[sg]
        )

    return side


def _plan(
    endpoints: list[Endpoint],
    policies: list[dict[str, Any]],
    unsupported: tuple[str, ...] = (),
    services: tuple[m.ServicePort, ...] = (),
) -> ni.IdentityPlan:
    pods = [_pod_obj(e) for e in endpoints if e.is_pod]
    return ni.plan_identities(
        policies, pods, NAMESPACES, unsupported_protocols=unsupported, services=services
    )


def _table(side: Side, endpoints: list[Endpoint]) -> dict[tuple[str, str, str, int], bool]:
    return {
        (src.name, dst.name, proto, port): side(src, "egress", dst.ip, proto, port)
        and side(dst, "ingress", src.ip, proto, port)
        for src, dst in itertools.permutations(endpoints, 2)
        for proto, port in PROBES
    }


def _truth(
    endpoints: list[Endpoint], policies: list[dict[str, Any]]
) -> dict[tuple[str, str, str, int], bool]:
    return {
        (s.name, d.name, proto, port): allowed(policies, NAMESPACES, s, d, proto, port)
        for s, d in itertools.permutations(endpoints, 2)
        for proto, port in PROBES
    }


def _wrong(got: dict[Any, bool], want: dict[Any, bool]) -> list[Any]:
    return sorted(k for k in want if got[k] != want[k])


# ---- the truth table -----------------------------------------------------------------


@pytest.mark.parametrize("endpoint_set", list(ENDPOINT_SETS))
@pytest.mark.parametrize("scenario", list(TRUTH_SCENARIOS))
def test_enforced_equals_kubernetes(scenario: str, endpoint_set: str) -> None:
    policies = TRUTH_SCENARIOS[scenario]
    endpoints = ENDPOINT_SETS[endpoint_set]()
    plan = _plan(endpoints, policies)
    got = _table(_side(endpoints, plan), endpoints)
    want = _truth(endpoints, policies)
    wrong = _wrong(got, want)
    assert not wrong, f"{len(wrong)} differ, e.g. {[(k, 'want', want[k]) for k in wrong[:8]]}"
    assert (scenario in ALL_OPEN) == all(want.values())
    # one SG per identity; twins share theirs
    pods = [e for e in endpoints if e.is_pod]
    assert set(plan.pod_identity) == {f"{e.namespace}/{e.name}" for e in pods}
    assert set(plan.rules) == set(plan.pod_identity.values()) == set(plan.identities)
    if endpoint_set == "with-twins":
        assert plan.pod_identity["alpha/a-web"] == plan.pod_identity["alpha/a-web-2"]
        assert len(plan.rules) == len(pods) - 2


@pytest.mark.parametrize("scenario", list(SERVICE_SCENARIOS))
def test_clusterip_under_policies(scenario: str) -> None:
    """Client → clusterIP: the client's SG sees the clusterIP (egress), the backend's the
    client (ingress). Each backend's outcome is what Kubernetes says for a connection
    landing on it, except where the client's egress allows only some backends: then every
    connection is denied (the documented safe side)."""
    policies = SERVICE_SCENARIOS[scenario]
    endpoints = _pods()
    services = tuple(m.service_ports(*_service_objects()))
    side = _side(endpoints, _plan(endpoints, policies, services=services))
    check_clusterips(endpoints, policies, side)


def test_clusterip_rules_are_needed() -> None:
    """Without the Services the clusterIP of a fully allowed Service is closed: the rule
    comes from the Service step, not from something broader."""
    policies = SERVICE_SCENARIOS["egress to all web pods by named port"]
    endpoints = _pods()
    services = tuple(m.service_ports(*_service_objects()))
    client = next(e for e in endpoints if e.name == "b-client")
    with_svc = _side(endpoints, _plan(endpoints, policies, services=services))
    without = _side(endpoints, _plan(endpoints, policies))
    assert with_svc(client, "egress", "10.96.0.10", "TCP", 80)
    assert not without(client, "egress", "10.96.0.10", "TCP", 80)
    assert not with_svc(client, "egress", "10.96.0.10", "TCP", 81)


def test_simulator_catches_a_wrong_plan() -> None:
    """The truth table is not vacuous: widening one peer rule to "anyone", or dropping one
    IPv4 rule, is caught."""
    policies = SCENARIOS["allow from namespace by label"]
    endpoints = [*_pods(), VM]
    plan = _plan(endpoints, policies)
    want = _truth(endpoints, policies)
    assert not _wrong(_table(_side(endpoints, plan), endpoints), want)
    web = plan.pod_identity["alpha/a-web"]
    peer_rules = [r for r in plan.rules[web] if r.remote_identity and r.ethertype == "IPv4"]
    assert peer_rules
    for rule in peer_rules:
        for mutated in (
            plan.rules[web] - {rule},
            plan.rules[web] - {rule} | {replace(rule, remote_identity=None)},
        ):
            bad = replace(plan, rules={**plan.rules, web: mutated})
            assert _wrong(_table(_side(endpoints, bad), endpoints), want)


# ---- what the design is for ----------------------------------------------------------


def _deployment(name: str, n: int, labels: dict[str, str], net: int) -> list[Endpoint]:
    return [
        Endpoint(f"{name}-{i}", f"10.{net}.{i // 200}.{i % 200 + 10}", "alpha", labels, WEB_PORTS)
        for i in range(n)
    ]


WEB_DEPLOY = {"app": "shop", "pod-template-hash": "5d8f7c"}
LOCK_WEB = _policy(
    "alpha",
    "lock-shop",
    {
        "podSelector": {"matchLabels": {"app": "shop"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "http"}]}
        ],
    },
)


def _cluster() -> list[Endpoint]:
    return [*_pods(), *_deployment("shop", 100, WEB_DEPLOY, 30)]


def _pods_of(endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    return [_pod_obj(e) for e in endpoints if e.is_pod]


def test_new_policy_over_100_pods_changes_one_identity_and_moves_no_port() -> None:
    pods = _pods_of(_cluster())
    before = ni.plan_identities([], pods, NAMESPACES)
    after = ni.plan_identities([LOCK_WEB], pods, NAMESPACES)
    diff = ni.diff_plans(before, after)
    shop = after.pod_identity["alpha/shop-0"]
    assert len(after.members(shop)) == 100
    assert diff.touched == diff.changed == {shop}
    assert not diff.moved and not diff.added and not diff.removed
    assert before.pod_identity == after.pod_identity
    db = after.pod_identity["alpha/a-db"]
    assert diff.to_create[shop] == {
        ni.IdRule("ingress", eth, "tcp", 80, 80, remote_identity=db) for eth in m.ETHERTYPES
    }
    assert diff.to_delete[shop] == ni.ALLOW_ALL["ingress"]
    assert after.fingerprints[shop] != before.fingerprints[shop]
    assert {k for k in after.rules if after.fingerprints[k] != before.fingerprints[k]} == {shop}
    # and it is enforced: a-db reaches the shop on http only, a-web not at all
    endpoints = [*_cluster(), VM]
    side = _side(endpoints, after)
    by = {e.name: e for e in endpoints}
    for i in (0, 57, 99):
        shop_pod = by[f"shop-{i}"]
        assert side(shop_pod, "ingress", by["a-db"].ip, "TCP", 80)
        assert not side(shop_pod, "ingress", by["a-db"].ip, "TCP", 81)
        assert not side(shop_pod, "ingress", by["a-web"].ip, "TCP", 80)


def test_egress_policy_touches_only_the_selected_identities() -> None:
    pods = _pods_of(_cluster())
    policy = _policy(
        "beta",
        "to-shop",
        {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "shop"}}}]}
            ],
        },
    )
    before = ni.plan_identities([LOCK_WEB], pods, NAMESPACES)
    after = ni.plan_identities([LOCK_WEB, policy], pods, NAMESPACES)
    diff = ni.diff_plans(before, after)
    assert diff.touched == {after.pod_identity["beta/b-client"]}
    assert not diff.moved


def test_label_change_moves_only_that_pod() -> None:
    endpoints = _cluster()
    before = ni.plan_identities([LOCK_WEB], _pods_of(endpoints), NAMESPACES)
    relabelled = [
        replace(e, labels={**e.labels, "track": "canary"}) if e.name == "shop-7" else e
        for e in endpoints
    ]
    after = ni.plan_identities([LOCK_WEB], _pods_of(relabelled), NAMESPACES)
    diff = ni.diff_plans(before, after)
    old = before.pod_identity["alpha/shop-7"]
    new = after.pod_identity["alpha/shop-7"]
    assert diff.moved == {"alpha/shop-7": (old, new)}
    assert diff.added == {new} and not diff.removed and not diff.changed
    assert len(after.members(old)) == 99 and after.members(new) == ["alpha/shop-7"]
    # still selected by the same policy: the same rules in its new SG
    assert after.rules[new] == after.rules[old] == before.rules[old]
    # relabelled out of the policy's selector: its new identity is open again
    out = [replace(e, labels={"app": "other"}) if e.name == "shop-7" else e for e in endpoints]
    plan = ni.plan_identities([LOCK_WEB], _pods_of(out), NAMESPACES)
    assert (
        plan.rules[plan.pod_identity["alpha/shop-7"]]
        == ni.ALLOW_ALL["ingress"] | (ni.ALLOW_ALL["egress"])
    )


def test_new_pod_of_an_existing_identity_changes_nothing() -> None:
    endpoints = _cluster()
    policies = [LOCK_WEB, *SCENARIOS["multiple policies (union) and both directions"]]
    before = ni.plan_identities(policies, _pods_of(endpoints), NAMESPACES)
    newcomers = [*_deployment("shop", 101, WEB_DEPLOY, 30)[100:], *_twins()]
    after = ni.plan_identities(policies, _pods_of([*endpoints, *newcomers]), NAMESPACES)
    diff = ni.diff_plans(before, after)
    assert not diff.touched and not diff.moved and not diff.to_create and not diff.to_delete
    assert after.rules == before.rules and after.fingerprints == before.fingerprints
    assert after.pod_identity["alpha/shop-100"] == before.pod_identity["alpha/shop-0"]
    assert after.pod_identity["alpha/a-web-2"] == before.pod_identity["alpha/a-web"]


def test_new_identity_that_is_a_peer_adds_rules_only_where_the_policy_selects() -> None:
    policy = SCENARIOS["allow from namespace by label"][0]  # alpha app=web from team=b
    endpoints = [*_pods(), VM]
    before = _plan(endpoints, [policy])
    newcomer = Endpoint("b-new", "10.20.1.99", "beta", {"app": "newcomer"})
    after = _plan([*endpoints, newcomer], [policy])
    diff = ni.diff_plans(before, after)
    new = after.pod_identity["beta/b-new"]
    selected = {after.pod_identity["alpha/a-web"], after.pod_identity["alpha/a-alt"]}
    assert diff.added == {new}
    assert diff.changed == selected
    for key in selected:
        assert diff.to_create[key] == {
            ni.IdRule("ingress", eth, remote_identity=new) for eth in m.ETHERTYPES
        }
        assert key not in diff.to_delete
    assert diff.to_create[new] == after.rules[new]
    assert not diff.moved and not diff.removed
    # the newcomer is allowed in at once
    side = _side([*endpoints, newcomer], after)
    assert side(_pods()[0], "ingress", newcomer.ip, "TCP", 5001)
    # a new identity no policy names as a peer touches no other identity
    stranger = Endpoint("g-new", "10.20.2.99", "gamma", {"app": "stranger"})
    diff = ni.diff_plans(before, _plan([*endpoints, stranger], [policy]))
    assert diff.touched == diff.added and len(diff.added) == 1


def test_last_pod_of_an_identity_leaves() -> None:
    policy = SCENARIOS["allow from namespace by label"][0]
    endpoints = [*_pods(), VM]
    before = _plan(endpoints, [policy])
    after = _plan([e for e in endpoints if e.name != "b-client"], [policy])
    diff = ni.diff_plans(before, after)
    gone = before.pod_identity["beta/b-client"]
    assert diff.removed == {gone}
    selected = {after.pod_identity["alpha/a-web"], after.pod_identity["alpha/a-alt"]}
    assert diff.changed == selected
    for key in selected:
        assert {r.remote_identity for r in diff.to_delete[key]} == {gone}
        assert key not in diff.to_create
    assert all(r.remote_identity != gone for rules in after.rules.values() for r in rules)


def test_namespace_label_change_is_a_rule_diff() -> None:
    policy = SCENARIOS["allow from namespace by label"][0]
    pods = _pods_of([*_pods()])
    before = ni.plan_identities([policy], pods, NAMESPACES)
    after = ni.plan_identities([policy], pods, {**NAMESPACES, "gamma": {"team": "b"}})
    diff = ni.diff_plans(before, after)
    assert not diff.moved and not diff.added and not diff.removed
    g_any = after.pod_identity["gamma/g-any"]
    assert diff.changed == {after.pod_identity["alpha/a-web"], after.pod_identity["alpha/a-alt"]}
    for key in diff.changed:
        assert {r.remote_identity for r in diff.to_create[key]} == {g_any}


def test_policy_deletion_reopens_by_rules_only() -> None:
    pods = _pods_of(_cluster())
    with_policy = ni.plan_identities([LOCK_WEB], pods, NAMESPACES)
    without = ni.plan_identities([], pods, NAMESPACES)
    diff = ni.diff_plans(with_policy, without)
    shop = without.pod_identity["alpha/shop-0"]
    assert diff.touched == {shop} and not diff.moved
    assert diff.to_create[shop] == ni.ALLOW_ALL["ingress"]


# ---- deny side, peers that are not pods, identities ----------------------------------


def test_unsupported_protocol_stays_denied_and_is_reported() -> None:
    policies = [
        *SCENARIOS["SCTP allowed where supported"],
        *SCENARIOS["egress to ipBlock"],
        _policy(
            "beta",
            "eg-sctp",
            {
                **ALL,
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "SCTP", "port": 80}, {"port": 5001}]}],
            },
        ),
    ]
    endpoints = [*_pods(), VM]
    plan = _plan(endpoints, policies, unsupported=("SCTP",))
    assert set(plan.problems) == {"alpha/sctp", "beta/eg-sctp"}
    assert all("SCTP" in p and "denied" in p for v in plan.problems.values() for p in v)
    got = _table(_side(endpoints, plan), endpoints)
    # exactly Kubernetes' answer for the policies without their SCTP entries
    stripped = [
        _policy("alpha", "sctp", {**ALL, "policyTypes": ["Ingress"]}),
        policies[1],
        _policy(
            "beta",
            "eg-sctp",
            {**ALL, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 5001}]}]},
        ),
    ]
    assert not _wrong(got, _truth(endpoints, stripped))
    assert not got[("b-client", "a-web", "SCTP", 80)]
    assert not got[("b-client", "a-web", "TCP", 80)]  # the policy still isolates
    assert not got[("b-client", "g-any", "TCP", 80)]  # egress isolated too
    assert got[("b-client", "g-any", "TCP", 5001)]  # the expressible part stays
    assert all(r.protocol != "sctp" for rules in plan.rules.values() for r in rules)
    # the same policies where SCTP is supported: no problem, SCTP allowed
    plan = _plan(endpoints, policies)
    assert not plan.problems
    assert _table(_side(endpoints, plan), endpoints)[("b-client", "a-web", "SCTP", 80)]


def test_pods_without_a_port_have_no_identity_and_are_no_peers() -> None:
    policies = SCENARIOS["multiple policies (union) and both directions"]
    pods = _pods_of(_pods())
    host = _pod_obj(Endpoint("b-host", "10.0.0.5", "beta", {"app": "hostnet"}))
    host["spec"]["hostNetwork"] = True
    done = _pod_obj(Endpoint("a-job", "10.20.0.77", "alpha", {"job": "x"}))
    done["status"]["phase"] = "Succeeded"
    plan = ni.plan_identities(policies, pods, NAMESPACES)
    with_them = ni.plan_identities(policies, [*pods, host, done], NAMESPACES)
    assert with_them == plan
    assert not ni.has_port(host) and not ni.has_port(done)


def test_plan_does_not_depend_on_order() -> None:
    policies = [p for s in SCENARIOS.values() for p in s]
    pods = _pods_of([*_pods(), *_twins()])
    plan = ni.plan_identities(policies, pods, NAMESPACES)
    rng = random.Random(7)
    for _ in range(3):
        rng.shuffle(policies)
        rng.shuffle(pods)
        assert ni.plan_identities(policies, pods, NAMESPACES) == plan


def test_identity_of() -> None:
    a = _pod_obj(Endpoint("x", "10.1.1.1", "alpha", {"b": "2", "a": "1"}, WEB_PORTS))
    b = _pod_obj(Endpoint("y", "10.1.1.2", "alpha", {"a": "1", "b": "2"}, WEB_PORTS))
    b["spec"]["containers"] = [
        {"name": "s", "ports": [{"containerPort": 9000}]},  # unnamed: not part of it
        {"name": "c", "ports": list(reversed(b["spec"]["containers"][0]["ports"]))},
    ]
    ia, ib = ni.identity_of(a), ni.identity_of(b)
    assert ia == ib and ia.key == ib.key
    assert len(ia.key) == ni.KEY_LENGTH and int(ia.key, 16) >= 0
    assert ia.labels == (("a", "1"), ("b", "2"))
    assert ia.named_ports == (("dns", "UDP", 53), ("http", "TCP", 80))
    assert ia.port_number("http", "TCP") == 80 and ia.port_number("http", "UDP") is None
    other_ns = _pod_obj(Endpoint("x", "10.1.1.1", "beta", {"b": "2", "a": "1"}, WEB_PORTS))
    other_port = _pod_obj(Endpoint("x", "10.1.1.1", "alpha", {"a": "1", "b": "2"}, {}))
    assert len({ia.key, ni.identity_of(other_ns).key, ni.identity_of(other_port).key}) == 3
    # stable across runs and versions (SG names and tags carry it)
    assert ni.identity_of({"metadata": {"namespace": "ns"}}).key == ni.Identity("ns", (), ()).key


V6_KEPT = ipaddress.ip_network("fd00::8000:0:0:0/65")


def test_ethertypes_and_neutron_bodies() -> None:
    policy = _policy(
        "alpha",
        "v6",
        {
            **ALL,
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/65"]}},
                        {"ipBlock": {"cidr": "10.10.0.0/24"}},
                        {"podSelector": {"matchLabels": {"app": "db"}}},
                    ],
                    "ports": [{"port": 443, "endPort": 444}],
                }
            ],
        },
    )
    plan = _plan(_pods(), [policy])
    web = plan.pod_identity["alpha/a-web"]
    db = plan.pod_identity["alpha/a-db"]
    ingress = {r for r in plan.rules[web] if r.direction == "ingress"}
    common: dict[str, Any] = {"protocol": "tcp", "port_min": 443, "port_max": 444}
    assert ingress == {
        ni.IdRule("ingress", "IPv6", remote_prefix=str(V6_KEPT), **common),
        ni.IdRule("ingress", "IPv4", remote_prefix="10.10.0.0/24", **common),
        ni.IdRule("ingress", "IPv4", remote_identity=db, **common),
        ni.IdRule("ingress", "IPv6", remote_identity=db, **common),
    }
    sg_ids = {k: _sg(k) for k in plan.rules}
    assert ni.neutron_rule(ni.IdRule("ingress", "IPv4", remote_identity=db, **common), sg_ids) == {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "tcp",
        "port_range_min": 443,
        "port_range_max": 444,
        "remote_group_id": _sg(db),
    }
    assert ni.neutron_rule(ni.IdRule("egress", "IPv4"), {}) == {
        "direction": "egress",
        "ethertype": "IPv4",
    }
    assert ni.neutron_rule(
        ni.IdRule("ingress", "IPv4", "udp", 53, 53, remote_prefix="10.0.0.0/8"), {}
    ) == {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "udp",
        "port_range_min": 53,
        "port_range_max": 53,
        "remote_ip_prefix": "10.0.0.0/8",
    }
    with pytest.raises(ValueError):
        ni.IdRule("ingress", "IPv4", remote_identity=db, remote_prefix="10.0.0.0/8")


def test_egress_named_port_uses_each_peer_identitys_number() -> None:
    plan = _plan(_pods(), SCENARIOS["egress to named port of peers"])
    client = plan.pod_identity["beta/b-client"]
    egress = {
        (r.remote_identity, r.port_min)
        for r in plan.rules[client]
        if r.direction == "egress" and r.ethertype == "IPv4"
    }
    assert egress == {
        (plan.pod_identity["alpha/a-web"], 80),
        (plan.pod_identity["alpha/a-alt"], 8080),
        (plan.pod_identity["beta/b-web"], 80),
    }
