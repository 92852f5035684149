"""Service + EndpointSlices -> KuryrLoadBalancer spec -> what Octavia must hold (pure)."""

from __future__ import annotations

from typing import Any

from kuryr_k8s.model import kuryrloadbalancer as m

SETTINGS = m.ServiceLbSettings(
    provider="ovn", project_id="p1", subnet_id="svc-sub", subnet_cidr="10.96.0.0/12"
)
POD_SUBNET = ("pod-sub", "10.20.0.0/20")


def subnet_of(address: str) -> str:
    return "pod-sub" if address.startswith("10.20.") else ""


def service(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "clusterIP": "10.96.0.10",
        "type": "ClusterIP",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}],
    }
    base.update(spec)
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}, "spec": base}


def eps(name: str, endpoints: list[tuple[str, bool | None]], ports: list[Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {m.SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], **({} if ready is None else {"conditions": {"ready": ready}})}
            for ip, ready in endpoints
        ],
        "ports": ports,
    }


def desired(svc: dict[str, Any], slices: list[dict[str, Any]]) -> m.DesiredLb:
    spec, _ = m.klb_spec(svc, slices, SETTINGS)
    return m.desired_lb(spec, subnet_of)


def test_ready_endpoints_only_and_named_target_port_resolved_per_slice() -> None:
    slices = [
        eps("a", [("10.20.0.5", True), ("10.20.0.6", False)], [{"name": "http", "port": 8080}]),
        # Pods whose container names "web" port 9090: a slice of their own, as Kubernetes does.
        eps("b", [("10.20.0.7", None)], [{"name": "http", "port": 9090, "protocol": "TCP"}]),
    ]
    lb = desired(service(), slices)
    assert lb.vip == "10.96.0.10"
    assert lb.subnet_id == "svc-sub"
    assert not lb.public
    [listener] = lb.listeners
    assert (listener.protocol, listener.port) == ("TCP", 80)
    assert listener.members == (
        m.DesiredMember("10.20.0.5", 8080, "pod-sub"),
        m.DesiredMember("10.20.0.7", 9090, "pod-sub"),
    )


def test_listener_per_port_and_protocol_members_matched_by_port_name() -> None:
    svc = service(
        ports=[
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
        ]
    )
    slices = [
        eps(
            "a",
            [("10.20.0.5", True)],
            [
                {"name": "dns", "port": 5353, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
            ],
        )
    ]
    lb = desired(svc, slices)
    assert [(li.protocol, li.port) for li in lb.listeners] == [("UDP", 53), ("TCP", 53)]
    assert all(
        li.members == (m.DesiredMember("10.20.0.5", 5353, "pod-sub"),) for li in lb.listeners
    )


def test_service_without_endpoints_has_listeners_and_no_members() -> None:
    lb = desired(service(), [])
    assert [li.members for li in lb.listeners] == [()]


def test_loopback_and_unknown_addresses_are_not_members_but_other_subnets_are() -> None:
    slices = [eps("a", [("127.0.0.1", True), ("192.168.7.9", True)], [{"name": "http", "port": 1}])]
    [listener] = desired(service(), slices).listeners
    assert listener.members == (m.DesiredMember("192.168.7.9", 1, ""),)


def test_slices_of_other_address_types_are_ignored() -> None:
    v6 = eps("v6", [("fd00::5", True)], [{"name": "http", "port": 8080}])
    v6["addressType"] = "IPv6"
    spec, _ = m.klb_spec(service(), [v6], SETTINGS)
    assert spec["endpointSlices"] == []


def test_load_balancer_type_and_fixed_ip() -> None:
    lb = desired(service(type="LoadBalancer", loadBalancerIP="172.24.4.50"), [])
    assert lb.public
    assert lb.lb_ip == "172.24.4.50"
    spec, _ = m.klb_spec(service(loadBalancerIP="172.24.4.50"), [], SETTINGS)
    assert "lb_ip" not in spec  # only LoadBalancer Services get a public address


def test_unsupported_features_become_warnings_not_errors() -> None:
    svc = service(
        sessionAffinity="ClientIP",
        externalTrafficPolicy="Local",
        ports=[{"name": "x", "port": 80, "protocol": "ICMP"}],
    )
    spec, warnings = m.klb_spec(svc, [], SETTINGS)
    assert spec["ports"] == []
    text = "\n".join(warnings)
    assert "ICMP" in text and "sessionAffinity" in text and "externalTrafficPolicy" in text


def test_publish_not_ready_addresses_makes_every_endpoint_a_member() -> None:
    slices = [eps("a", [("10.20.0.5", False)], [{"name": "http", "port": 8080}])]
    [listener] = desired(service(publishNotReadyAddresses=True), slices).listeners
    assert listener.members == (m.DesiredMember("10.20.0.5", 8080, "pod-sub"),)
    [listener] = desired(service(), slices).listeners
    assert listener.members == ()


def test_node_port_is_served_as_cluster_ip_with_a_warning() -> None:
    spec, warnings = m.klb_spec(service(type="NodePort"), [], SETTINGS)
    assert [p["port"] for p in spec["ports"]] == [80]
    assert any("NodePort" in w for w in warnings)


def test_cluster_ip_outside_the_service_subnet_is_named() -> None:
    _, warnings = m.klb_spec(service(clusterIP="192.168.0.10"), [], SETTINGS)
    assert any("outside the service subnet" in w and "service_subnet" in w for w in warnings)


def test_handled() -> None:
    assert m.handled(service())
    assert not m.handled(service(clusterIP="None"))
    assert not m.handled(service(type="ExternalName", clusterIP=""))
    assert not m.handled(service(ports=[]))


def test_spec_is_stable_for_equal_inputs() -> None:
    slices = [eps("b", [], []), eps("a", [("10.20.0.5", True)], [{"name": "http", "port": 1}])]
    one, _ = m.klb_spec(service(), slices, SETTINGS)
    two, _ = m.klb_spec(service(), list(reversed(slices)), SETTINGS)
    assert one == two


def test_crd_manifest_names_the_kind() -> None:
    crd = m.crd_manifest()
    assert crd["metadata"]["name"] == "kuryrloadbalancers.openstack.org"
    assert crd["spec"]["names"]["kind"] == m.KIND
