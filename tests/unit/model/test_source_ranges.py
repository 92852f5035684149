"""``loadBalancerSourceRanges`` -> a listener ACL (model/kuryrloadbalancer.py, pure)."""

from __future__ import annotations

from typing import Any

from kuryr_k8s.model import kuryrloadbalancer as m

INTERNAL = ("10.20.0.0/20", "10.96.0.0/12", "10.96.0.10/32")


def svc(*ranges: str, lb_type: str = "LoadBalancer", **annotations: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": lb_type}
    if ranges:
        spec["loadBalancerSourceRanges"] = list(ranges)
    return {"metadata": {"annotations": annotations}, "spec": spec}


def test_ranges_are_normalised_networks_plus_the_clusters_own() -> None:
    r = m.source_ranges(svc("203.0.113.7/24", " 198.51.100.9/32", "203.0.113.0/24"))
    assert r.cidrs == ("198.51.100.9/32", "203.0.113.0/24") and not r.invalid
    assert m.allowed_cidrs(r, INTERNAL) == (
        "10.20.0.0/20",
        "10.96.0.0/12",
        "198.51.100.9/32",
        "203.0.113.0/24",
    )


def test_nothing_asked_is_no_acl_and_clusterip_services_ask_nothing() -> None:
    assert m.allowed_cidrs(m.source_ranges(svc()), INTERNAL) == ()
    assert not m.source_ranges(svc("192.0.2.0/24", lb_type="ClusterIP")).asked


def test_the_annotation_counts_when_the_field_is_empty() -> None:
    key = m.SOURCE_RANGES_ANNOTATION
    r = m.source_ranges(svc(**{key: "192.0.2.0/24,198.51.100.0/24"}))
    assert r.cidrs == ("192.0.2.0/24", "198.51.100.0/24")
    r = m.source_ranges(svc("203.0.113.0/24", **{key: "192.0.2.0/24"}))
    assert r.cidrs == ("203.0.113.0/24",)  # the field wins


def test_ipv6_only_ranges_admit_no_outside_source_rather_than_every_one() -> None:
    r = m.source_ranges(svc("2001:db8::/32"))
    assert r.asked and r.ipv6 == ("2001:db8::/32",) and not r.cidrs
    assert m.allowed_cidrs(r, INTERNAL) == ("10.20.0.0/20", "10.96.0.0/12")
    assert m.allowed_cidrs(r, ()) == ("127.0.0.1/32",)  # never empty (= open) when asked


def test_entries_that_are_not_cidrs_are_named() -> None:
    assert m.source_ranges(svc("192.0.2.0/24", "office", "10.0.0.0/33")).invalid == (
        "office",
        "10.0.0.0/33",
    )


def test_group_rules_become_sources_for_the_protocol_and_port() -> None:
    rules = [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "6", "port_range_min": 8000,
         "port_range_max": 8100, "remote_ip_prefix": "10.1.0.0/16"},
        {"direction": "egress", "ethertype": "IPv4", "protocol": None, "remote_ip_prefix": None},
        {"direction": "ingress", "ethertype": "IPv6", "protocol": None, "remote_ip_prefix": None},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp", "port_range_min": None,
         "port_range_max": None, "remote_ip_prefix": None},
    ]  # fmt: skip
    assert m.sg_sources(rules, "TCP", 8080) == ["10.1.0.0/16"]
    assert m.sg_sources(rules, "TCP", 9000) == []  # nothing admits it
    assert m.sg_sources(rules, "UDP", 53) is None  # any source
    remote_group = [{"direction": "ingress", "protocol": None, "remote_group_id": "sg-1"}]
    assert m.sg_sources(remote_group, "TCP", 80) is None  # no CIDR list can say it


def test_member_sources_narrow_the_ranges_and_nothing_admitted_is_nobody() -> None:
    acl = ("10.20.0.0/20", "192.0.2.0/24")
    assert m.listener_acl(acl, None) == acl
    assert m.listener_acl((), ["10.1.0.0/16"]) == ("10.1.0.0/16",)
    assert m.listener_acl(acl, ["192.0.2.128/25", "10.0.0.0/8"]) == (
        "10.20.0.0/20",
        "192.0.2.128/25",
    )
    assert m.listener_acl(acl, []) == (m.NOBODY,)
    assert m.listener_acl(acl, ["198.51.100.0/24"]) == (m.NOBODY,)
