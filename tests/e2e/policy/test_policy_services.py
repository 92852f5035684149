"""NetworkPolicy and Services: a pod → ClusterIP under policies, with real traffic.

A Service is an Octavia (ovn provider) load balancer whose VIP is the clusterIP. OVN
rewrites the clusterIP to a backend in the client's logical switch pipeline *after* the
client port's ACLs (OVN 23.03: ``ls_in_acl`` is table 8, ``ls_in_lb`` table 12), so the
client's egress SG rules see the clusterIP, while the backend's ingress rules (``to-lport``,
after the rewrite) see the client's own address. The policy controller therefore adds
``clusterIP:port`` to an egress policy that allows all of the Service's endpoints.

Here: two backend pods (agent on TCP 8080) behind a Service ``web`` (port 80 →
targetPort 8080), a selector-less Service with its EndpointSlice written by the test (as
the EndpointSlice controller would) and its load balancer made in Octavia by the test
(what the Services reconciler makes, tested in ``tests/e2e/services``); clients in two
namespaces. For each case the observed outcome of several connections to the clusterIP
(random source ports, so the load balancer picks both backends) must be what
:func:`netpol_truth.via_service` says for every backend.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.policy.env import AGENT, PolicyEnv
from fixtures.kubeapi import KubeApi
from fixtures.sandbox import Sandbox
from netpol_truth import Endpoint, egress_allows, via_service

pytestmark = pytest.mark.e2e

NAMESPACES = {"nps-back": {"role": "back"}, "nps-front": {"role": "front"}, "nps-other": {}}
HTTP = {("http", "TCP"): 8080}
BACKENDS = [
    Endpoint("s-web1", "", "nps-back", {"app": "web"}, HTTP),
    Endpoint("s-web2", "", "nps-back", {"app": "web"}, HTTP),
]
CLIENTS = [
    Endpoint("f-client", "", "nps-front", {"app": "client"}, {}),
    Endpoint("o-client", "", "nps-other", {"app": "client"}, {}),
]
SVC_PORT, TARGET = 80, 8080
CONNECTIONS = 8
FLOW_LAG = 15.0


def policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def _free_vip(sandbox: Sandbox) -> str:
    subnet = sandbox.conn.network.get_subnet(sandbox.topo.service_subnet_id)
    used = {
        ip["ip_address"]
        for p in sandbox.conn.network.ports(network_id=subnet.network_id)
        for ip in p.fixed_ips
    }
    net = ipaddress.ip_network(subnet.cidr)
    while True:  # away from the allocation pool at the end and from 10.96.0.x
        ip = str(net[random.randint(65536, 262143)])
        if ip not in used:
            return ip


class ServiceWorld:
    def __init__(self, env: PolicyEnv, vip: str) -> None:
        self.env = env
        self.vip = vip
        self.lb: Any = None

    def create(self) -> None:
        env, http = self.env, self.env.http
        svc = {
            "metadata": {"name": "web"},
            "spec": {
                "clusterIP": self.vip,
                "ports": [{"name": "http", "port": SVC_PORT, "targetPort": TARGET}],
            },
        }
        r = http.post("/api/v1/namespaces/nps-back/services", svc)
        assert r.status_code == 201, r.text
        ips = [env.members[b.name].endpoint.ip for b in BACKENDS]
        sl = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "http", "port": TARGET, "protocol": "TCP"}],
        }
        r = http.post("/apis/discovery.k8s.io/v1/namespaces/nps-back/endpointslices", sl)
        assert r.status_code == 201, r.text
        lbs = env.sandbox.conn.load_balancer
        topo = env.sandbox.topo
        self.lb = lbs.create_load_balancer(
            name=f"{env.cluster_id}-web",
            vip_subnet_id=topo.service_subnet_id,
            vip_address=self.vip,
            provider="ovn",
            project_id=topo.project_id,
            tags=[env.tag],
        )
        lbs.wait_for_load_balancer(self.lb.id, wait=300)
        listener = lbs.create_listener(
            name="web", load_balancer_id=self.lb.id, protocol="TCP", protocol_port=SVC_PORT
        )
        lbs.wait_for_load_balancer(self.lb.id, wait=300)
        pool = lbs.create_pool(
            name="web", listener_id=listener.id, protocol="TCP", lb_algorithm="SOURCE_IP_PORT"
        )
        lbs.wait_for_load_balancer(self.lb.id, wait=300)
        for ip in ips:
            lbs.create_member(pool, address=ip, protocol_port=TARGET, subnet_id=topo.subnet1_id)
            lbs.wait_for_load_balancer(self.lb.id, wait=300)
        assert env.parts is not None
        world = env.parts.world
        deadline = time.monotonic() + 60
        while not any(len(sp.endpoints) == 2 for sp in world.service_ports()):
            assert time.monotonic() < deadline, "the controller did not see the Service in 60 s"
            time.sleep(0.1)

    def delete(self) -> list[str]:
        lbs = self.env.sandbox.conn.load_balancer
        if self.lb is not None:
            lbs.delete_load_balancer(self.lb.id, cascade=True, ignore_missing=True)
            lbs.wait_for_delete(self.lb, wait=300)
        return [f"LB {lb.id}" for lb in lbs.load_balancers(tags=self.env.tag)]

    def connect(self, client: str) -> list[bool]:
        """``CONNECTIONS`` TCP connections to clusterIP:80 (random source ports)."""
        m = self.env.members[client]
        p = subprocess.run(
            ["ip", "netns", "exec", m.netns, sys.executable, AGENT, "probe"],
            input=json.dumps([[self.vip, "TCP", SVC_PORT]] * CONNECTIONS),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        out: list[bool] = json.loads(p.stdout)
        return out


def expected(env: PolicyEnv, policies: list[dict[str, Any]], client: str) -> bool:
    """Kubernetes' answer for every backend (they agree in these cases); where the
    client's egress allows only some backends, the implementation denies all (the safe
    side: the client's SGs cannot tell which backend the load balancer picks)."""
    by_name = {e.name: e for e in env.endpoints()}
    src = by_name[client]
    backends = [(by_name[b.name], TARGET) for b in BACKENDS]
    per_backend = via_service(policies, env.ns_labels, src, backends, "TCP")
    egress = {egress_allows(policies, env.ns_labels, src, b, "TCP", t) for b, t in backends}
    assert len(set(per_backend.values())) == 1 and len(egress) == 1, "a mixed case"
    return next(iter(per_backend.values()))


@pytest.fixture(scope="module")
def svc(sandbox: Sandbox, kube_api: KubeApi) -> Iterator[ServiceWorld]:
    if not sandbox.topo.service_subnet_id:
        pytest.fail("the sandbox topology has no service subnet: run 'kuryr sandbox topology'")
    http = kube_api.client()
    env = PolicyEnv(sandbox, kube_api.kubeconfig, http)
    world = ServiceWorld(env, _free_vip(sandbox))
    leaks: list[str] = []
    try:
        env.start()
        for ns, labels in NAMESPACES.items():
            env.namespace(ns, labels)
        for ep in (*BACKENDS, *CLIENTS):
            env.add_pod(ep)
        world.create()
        yield world
    finally:
        try:
            leaks += world.delete()
        finally:
            leaks += env.cleanup()
            http.close()
        assert not leaks, f"left in Neutron/Octavia: {leaks}"


TO_BACK = {"namespaceSelector": {"matchLabels": {"role": "back"}}}
CASES: dict[str, list[dict[str, Any]]] = {
    "no policy": [],
    "egress to the backends' namespace on the target port": [
        policy(
            "nps-front",
            "eg",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [TO_BACK], "ports": [{"port": TARGET}]}],
            },
        )
    ],
    "egress to the backends by named port": [
        policy(
            "nps-front",
            "eg-named",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{**TO_BACK, "podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        )
    ],
    "egress to the backends on the Service port only (not the target)": [
        policy(
            "nps-front",
            "eg80",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [TO_BACK], "ports": [{"port": SVC_PORT}]}],
            },
        )
    ],
    "egress elsewhere only": [
        policy(
            "nps-front",
            "eg-other",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"x": "y"}}}]}],
            },
        )
    ],
    "ingress on the backends from the front namespace": [
        policy(
            "nps-back",
            "in-front",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"role": "front"}}}]}],
            },
        )
    ],
}


def _check(svc: ServiceWorld, policies: list[dict[str, Any]], what: str) -> None:
    env = svc.env
    took = env.wait_enforced(policies)
    time.sleep(1.0)
    want = {c.name: expected(env, policies, c.name) for c in CLIENTS}
    t0 = time.monotonic()
    while True:
        got = {c.name: svc.connect(c.name) for c in CLIENTS}
        wrong = {c: ok for c, ok in got.items() if set(ok) != {want[c]}}
        if not wrong or time.monotonic() - t0 > FLOW_LAG:
            break
        time.sleep(1.0)
    print(f"{what}: enforced in {took:.2f} s; want {want}; got {got}")
    assert not wrong, f"{what}: want {want}, got {got}"


@pytest.mark.parametrize("case", list(CASES))
def test_clusterip_under_policy(svc: ServiceWorld, case: str) -> None:
    policies = CASES[case]
    for p in policies:
        svc.env.apply_policy(p)
    try:
        _check(svc, policies, case)
    finally:
        for p in policies:
            svc.env.delete_policy(p["metadata"]["namespace"], p["metadata"]["name"])
    _check(svc, [], f"{case}, deleted")


def test_cases_are_not_trivial(svc: ServiceWorld) -> None:
    """The model says open for some cases and closed for others (a test that cannot fail
    is a defect)."""
    outcomes = {
        expected(svc.env, ps, c.name)
        for ps in CASES.values()
        for c in CLIENTS
        if all(p["metadata"]["namespace"] in NAMESPACES for p in ps)
    }
    assert outcomes == {True, False}
