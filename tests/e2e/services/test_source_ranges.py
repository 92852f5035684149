"""``loadBalancerSourceRanges`` and what restricts a floating IP with the ovn provider.

Isolated like the crash test (a private API emulator, a controller of our own running
this checkout, only the Service handlers and its own cluster id; backends are HTTP
servers in netns on the pod subnet, answering with their name and the client's address).
A ``type: LoadBalancer`` Service with ``loadBalancerSourceRanges`` gets a floating IP
curled from the host (``172.24.4.1`` on ``br-ex``). What is checked, with real traffic:

* the controller's claim matches the traffic: Octavia's ovn provider refuses listener
  ``allowed_cidrs`` (501), so the KuryrLoadBalancer says ``SourceRangesEnforced=False``
  naming that answer, the Service gets a ``SourceRangesNotEnforced`` Warning, and the host,
  outside the ranges, is answered (never "enforced" while open); inside them it is too;
* the client's address reaches the backends unchanged (they see the host's address);
* a security group on the VIP port changes nothing (with OVN the VIP port carries no
  traffic: why ``enforce_sg_rules`` has no job with this provider), while a backend's own
  security group does filter by the client's address;
* ranges removed: the claim goes; Service deleted: no LB, VIP port or floating IP left.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.services import test_services_crash
from e2e.services.isolated import pod_netns, services_controller
from fixtures.sandbox import NeutronTracker, Sandbox
from functional.controller.harness import unique_name, wait_for
from functional.traffic import wait_listening
from kuryr_k8s.sandbox.kubeapi import EmulatorProcess
from kuryr_k8s.sandbox.openstack import hostplug

pytestmark = pytest.mark.e2e
sandbox = test_services_crash.sandbox  # the sandbox as it runs; nothing here starts it

WAIT = 300.0
VIP = "10.111.201.30"  # fixed, inside the service range, away from allocated clusterIPs
BACKENDS = ("web-0", "web-1")
OUTSIDE = "192.0.2.0/24"  # TEST-NET-1: the host's 172.24.4.1 is not in it
SERVER = r"""
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.client_address[0]}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


class World(test_services_crash.Cluster):
    """The crash test's cluster (kubectl, the LBs of our cluster id) and what this test adds."""

    def __init__(self, sb: Sandbox, kubeconfig: Path, cluster_id: str, neutron: NeutronTracker):
        super().__init__(sb, kubeconfig, cluster_id)
        self.neutron = neutron
        self.ports: dict[str, Any] = {}
        self.client_ns = ""
        self.host_ip = ""

    def service(self, *ranges: str) -> None:
        spec: dict[str, Any] = {
            "type": "LoadBalancer",
            "clusterIP": VIP,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        }
        if ranges:
            spec["loadBalancerSourceRanges"] = list(ranges)
        meta = {"name": "web", "namespace": "default"}
        self.k("apply", "-f", "-", body={"apiVersion": "v1", "kind": "Service",
                                         "metadata": meta, "spec": spec})  # fmt: skip

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.k("get", kind, name, "-n", "default", "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else {}

    def condition(self, kind: str) -> dict[str, Any]:
        conds = (self.get("kuryrloadbalancer", "web").get("status") or {}).get("conditions")
        return next((c for c in conds or [] if c["type"] == kind), {})

    def public_ip(self) -> str:
        status = self.get("service", "web").get("status") or {}
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        return str(ingress[0]["ip"]) if ingress else ""

    def listeners(self, lb_id: str) -> list[dict[str, Any]]:
        r = self.sb.conn.load_balancer.get("/lbaas/listeners", params={"loadbalancer_id": lb_id})
        items: list[dict[str, Any]] = r.json()["listeners"]
        return items


def _host_gets(url: str, n: int = 12) -> dict[str, int]:
    """``n`` curls from the host: body -> count ("refused"/"timeout" when none came)."""
    seen: dict[str, int] = {}
    for _ in range(n):
        r = subprocess.run(["curl", "-s", "--max-time", "2", url], capture_output=True,
                           text=True, check=False)  # fmt: skip
        body = r.stdout.strip() if r.returncode == 0 else f"curl-exit-{r.returncode}"
        seen[body] = seen.get(body, 0) + 1
    return seen


def _client_gets(netns: str, url: str, n: int = 12) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        r = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "--max-time", "2", url],
                           capture_output=True, text=True, check=False)  # fmt: skip
        body = r.stdout.strip() if r.returncode == 0 else f"curl-exit-{r.returncode}"
        seen[body] = seen.get(body, 0) + 1
    return seen


def _answered_by(seen: dict[str, int]) -> set[str]:
    return {body.split()[0] for body in seen if not body.startswith("curl-exit")}


@pytest.fixture
def world(
    sandbox: Sandbox,
    neutron: NeutronTracker,
    netns_factory: Callable[..., hostplug.Plugged],
    tmp_path: Path,
) -> Iterator[World]:
    if not (sandbox.topo.service_subnet_id and sandbox.topo.external_net_id):
        pytest.fail("no service subnet / external network: run 'kuryr sandbox topology'")
    cluster_id = unique_name("svc-ranges")
    emulator = EmulatorProcess(tmp_path / "kubeconfig", log_file=tmp_path / "emulator.log")
    emulator.start()
    w = World(sandbox, emulator.kubeconfig, cluster_id, neutron)
    w.host_ip = hostplug.ensure_external_host(sandbox.topo.external_cidr)
    ctl = services_controller(sandbox, emulator.kubeconfig, tmp_path, cluster_id)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        w.k("delete", "service", "kubernetes", "-n", "default")  # not this test's LB
        for name in (*BACKENDS, "client"):
            port, plugged = pod_netns(sandbox, neutron, netns_factory, f"{cluster_id}-{name}")
            w.ports[name] = port
            w.ips[name] = plugged.ip
            if name == "client":
                w.client_ns = plugged.netns
            else:
                servers.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", plugged.netns, sys.executable, "-c", SERVER, name]
                    )
                )
                wait_listening(plugged.netns, 8080)
        ctl.start()
        ctl.wait_role("leader")
        yield w
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(30)
        with contextlib.suppress(AssertionError):
            w.k("delete", "service", "web", "-n", "default", "--ignore-not-found",
                "--wait=true", "--timeout=180s")  # fmt: skip
        wait_for("the controller to delete the Service's LB", lambda: not w.lbs(), WAIT)
        ctl.stop()
        for fip in sandbox.conn.network.ips(tags=f"kuryr.cluster:{cluster_id}"):
            sandbox.conn.network.delete_ip(fip)
        emulator.stop()


def test_source_ranges_claim_matches_traffic_and_what_filters_with_ovn(world: World) -> None:
    w = world
    w.service(OUTSIDE)
    w.k("apply", "-f", "-", body={
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [w.ips[b]], "conditions": {"ready": True}} for b in BACKENDS],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })  # fmt: skip
    wait_for("a floating IP in web's status", lambda: bool(w.public_ip()), WAIT)
    wait_for("the source-ranges condition", lambda: bool(w.condition("SourceRangesEnforced")), 60)
    fip = w.public_ip()
    url = f"http://{fip}/"
    [lb] = w.lbs()
    cond = w.condition("SourceRangesEnforced")
    print(f"SourceRangesEnforced: {cond}")
    assert w.condition("Ready")["status"] == "True"

    # The claim matches the traffic: the host is outside the ranges.
    seen: dict[str, int] = {}

    def host_answered_by_all() -> bool:
        nonlocal seen
        seen = _host_gets(url)
        return _answered_by(seen) == set(BACKENDS)

    if cond["status"] == "True":  # a provider that filters: the host must be refused
        seen = _host_gets(url)
        assert not _answered_by(seen), f"claimed enforced, yet {OUTSIDE} let the host in: {seen}"
        pytest.fail(f"provider {lb['provider']} enforced the ranges: extend this test")
    assert (cond["reason"], lb["provider"]) == ("ProviderUnsupported", "ovn"), cond
    assert "NOT enforced" in cond["message"] and "allowed_cidrs" in cond["message"], cond
    assert all(not li["allowed_cidrs"] for li in w.listeners(lb["id"]))
    events = json.loads(w.k("get", "events", "-n", "default", "-o", "json"))["items"]
    assert any(
        e["reason"] == "SourceRangesNotEnforced" and e["type"] == "Warning"
        and e["involvedObject"]["name"] == "web" for e in events
    ), [e["reason"] for e in events]  # fmt: skip
    wait_for(f"host -> {url} (outside the ranges, not enforced) answered", host_answered_by_all,
             120)  # fmt: skip
    print(f"host {w.host_ip} -> {url}, ranges {OUTSIDE} not enforced: {seen}")
    # ovn keeps the client's address: the backends see the host's.
    assert {body.split()[1] for body in seen if not body.startswith("curl")} == {w.host_ip}

    # A security group on the VIP port filters nothing (OVN balances before any port).
    net = w.sb.conn.network
    vip_port = net.get_port(lb["vip_port_id"])
    before = list(vip_port.security_group_ids)
    closed = w.neutron.security_group(f"{w.cluster_id}-closed", [])  # ICMP in, nothing else
    net.update_port(vip_port, security_group_ids=[closed.id])
    try:
        seen = _host_gets(url)
        print(f"VIP port with a group admitting no TCP: {seen}")
        assert _answered_by(seen) == set(BACKENDS), seen
    finally:
        net.update_port(vip_port, security_group_ids=before)

    # A backend's own group does filter by the client's address (pod subnet only).
    pods_only = w.neutron.security_group(f"{w.cluster_id}-pods-only", [])
    net.create_security_group_rule(
        security_group_id=pods_only.id, direction="ingress", ethertype="IPv4", protocol="tcp",
        port_range_min=8080, port_range_max=8080, remote_ip_prefix=w.sb.topo.subnet1_cidr,
        project_id=w.sb.topo.project_id,
    )  # fmt: skip
    web0 = w.ports["web-0"]
    net.update_port(web0, security_group_ids=[pods_only.id])
    try:

        def only_web1_for_the_host() -> bool:
            nonlocal seen
            seen = _host_gets(url)
            return _answered_by(seen) == {"web-1"}

        wait_for("host -> FIP answered by web-1 only", only_web1_for_the_host, 60)
        print(f"web-0 admitting the pod subnet only: host -> FIP {seen}")
        inside = _client_gets(w.client_ns, f"http://{VIP}/")
        print(f"client {w.ips['client']} -> {VIP}: {inside}")
        assert _answered_by(inside) == set(BACKENDS), inside
    finally:
        net.update_port(web0, security_group_ids=[w.sb.topo.default_sg_id])

    # Inside the ranges: answered (and still reported as not enforced).
    w.service(f"{w.host_ip}/32")
    wait_for("the condition naming the new range",
             lambda: f"{w.host_ip}/32" in w.condition("SourceRangesEnforced").get("message", ""),
             60)  # fmt: skip
    wait_for(f"host -> {url} (inside the ranges) answered", host_answered_by_all, 60)

    # Ranges removed: no claim left.
    w.service()
    wait_for("no source-ranges condition", lambda: not w.condition("SourceRangesEnforced"), 60)

    w.k("delete", "service", "web", "-n", "default", "--wait=true", "--timeout=180s")
    wait_for("the LB to be gone", lambda: not w.lbs(), WAIT)
    assert not list(net.ports(name=f"ovn-lb-vip-{lb['id']}"))
    assert not list(net.ips(tags=f"kuryr.cluster:{w.cluster_id}"))
    assert not list(net.ips(floating_ip_address=fip))
