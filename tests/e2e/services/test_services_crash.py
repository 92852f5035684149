"""Crash test: the Services controller SIGKILLed during LB creation and member updates.

Isolated from the shared cluster: a private API emulator, a controller of our own (only
the Service handlers, its own cluster id), backends that are HTTP servers in netns on the
pod subnet (``hostplug``, the plumbing our CNI does) and a client netns. After each
restart: exactly one load balancer for the Service, the right members, traffic to exactly
them; after the Service is deleted nothing is left in Octavia or Neutron.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.services.isolated import pod_netns, services_controller
from fixtures.sandbox import NeutronTracker, Sandbox
from functional.controller.harness import ControllerProcess, unique_name, wait_for
from functional.traffic import wait_listening
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.kubeapi import EmulatorProcess
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.settings import settings_from_env

pytestmark = pytest.mark.e2e

WAIT = 300.0
SERVER = r"""
import http.server, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name)))
        self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""
CLIENT = r"""
import json, socket, sys
seen = {}
for _ in range(int(sys.argv[2])):
    try:
        s = socket.create_connection((sys.argv[1], 80), timeout=2)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n"); data = b""
        while chunk := s.recv(4096):
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1].decode()
    except OSError as exc:
        body = "error:" + type(exc).__name__
    seen[body] = seen.get(body, 0) + 1
print(json.dumps(seen))
"""
VIP = "10.111.201.10"  # fixed, inside the service range, away from allocated clusterIPs
BACKENDS = ("web-0", "web-1", "web-2")


class Cluster:
    def __init__(self, sb: Sandbox, kubeconfig: Path, cluster_id: str) -> None:
        self.sb, self.kubeconfig, self.cluster_id = sb, kubeconfig, cluster_id
        self.ips: dict[str, str] = {}

    def k(self, *args: str, body: dict[str, Any] | None = None) -> str:
        proc = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=json.dumps(body) if body is not None else None,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def service(self) -> None:
        """The Service ``crash`` on :data:`VIP` over all backends; its LB in Octavia."""
        self.k(
            "apply",
            "-f",
            "-",
            body={
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "crash", "namespace": "default"},
                "spec": {
                    "clusterIP": VIP,
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            },
        )
        self.slice(*BACKENDS)
        wait_for("the LB to appear in Octavia", lambda: bool(self.lbs()), WAIT)

    def slice(self, *backends: str) -> None:
        self.k(
            "apply",
            "-f",
            "-",
            body={
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "crash-1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "crash"},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [self.ips[b]], "conditions": {"ready": True}} for b in backends
                ],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
        )

    def lbs(self) -> list[dict[str, Any]]:
        r = self.sb.conn.load_balancer.get(
            "/lbaas/loadbalancers", params={"tags": f"kuryr.cluster:{self.cluster_id}"}
        )
        items: list[dict[str, Any]] = r.json()["loadbalancers"]
        return items

    def members(self, lb_id: str) -> set[str]:
        conn = self.sb.conn.load_balancer
        pools = conn.get("/lbaas/pools", params={"loadbalancer_id": lb_id}).json()["pools"]
        if not pools:  # not made yet
            return set()
        assert len(pools) == 1, pools
        got = conn.get(f"/lbaas/pools/{pools[0]['id']}/members").json()["members"]
        return {m["address"] for m in got if m["provisioning_status"] != "PENDING_DELETE"}

    def member_rows(self, lb_id: str) -> list[str]:
        """Every member Octavia lists for the LB, with its states (for failure messages)."""
        conn = self.sb.conn.load_balancer
        lb = conn.get(f"/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
        rows = [f"lb {lb['provisioning_status']}/{lb['operating_status']}"]
        for pool in conn.get("/lbaas/pools", params={"loadbalancer_id": lb_id}).json()["pools"]:
            got = conn.get(f"/lbaas/pools/{pool['id']}/members").json()["members"]
            rows += [
                f"{m['address']}:{m['protocol_port']} {m['provisioning_status']}"
                f"/{m['operating_status']}"
                for m in got
            ]
        return rows

    def wait_members(self, lb_id: str, want: set[str], log: Path | None = None) -> None:
        """Octavia's member list (what a restarted controller must leave) becomes ``want``."""
        try:
            wait_for(f"members {sorted(want)}", lambda: self.members(lb_id) == want, 120)
        except AssertionError as exc:
            tail = log.read_text(errors="replace").splitlines()[-40:] if log else []
            raise AssertionError(
                f"{exc}; Octavia lists: {self.member_rows(lb_id)}; controller log:\n"
                + "\n".join(tail)
            ) from None


def _answers(client_ns: str, n: int = 20) -> dict[str, int]:
    proc = subprocess.run(
        ["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, VIP, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    counts: dict[str, int] = json.loads(proc.stdout)
    return counts


def _serves_exactly(client_ns: str, want: set[str]) -> None:
    last: dict[str, int] = {}

    def check() -> bool:
        nonlocal last
        last = _answers(client_ns)
        return set(last) == want

    try:
        wait_for(f"{VIP}:80 answered by exactly {sorted(want)}", check, 180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last: {last}") from None


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The sandbox as it runs, started by nobody here: this test needs only Neutron, OVN
    and Octavia, and other people's benchmarks stop the kuryr services on purpose."""
    settings = settings_from_env()
    conn = topology.connect(dataclasses.replace(settings, octavia=True))
    try:
        conn.load_balancer.get("/lbaas/providers")
    except Exception as exc:
        pytest.fail(f"Octavia is not reachable ({exc}): kuryr sandbox up --octavia")
    topo = topology.ensure_base_topology(conn, lambda msg: None)
    yield Sandbox(settings, manager.context(settings), conn, topo)
    conn.close()


@pytest.fixture
def cluster(
    sandbox: Sandbox,
    neutron: NeutronTracker,
    netns_factory: Callable[..., hostplug.Plugged],
    tmp_path: Path,
) -> Iterator[tuple[Cluster, ControllerProcess, str]]:
    if not sandbox.topo.service_subnet_id:
        pytest.fail("the sandbox topology has no service subnet: run 'kuryr sandbox topology'")
    cluster_id = unique_name("svc-crash")
    servers: list[subprocess.Popen[bytes]] = []
    emulator = EmulatorProcess(tmp_path / "kubeconfig", log_file=tmp_path / "emulator.log")
    emulator.start()
    c = Cluster(sandbox, emulator.kubeconfig, cluster_id)
    ctl = services_controller(sandbox, emulator.kubeconfig, tmp_path, cluster_id)
    try:
        c.k("delete", "service", "kubernetes")  # its 10.96.0.1 LB is not this test's
        netns = {}
        for name in (*BACKENDS, "client"):
            _, plugged = pod_netns(sandbox, neutron, netns_factory, f"{cluster_id}-{name}")
            netns[name] = plugged.netns
            c.ips[name] = plugged.ip
        for name in BACKENDS:
            servers.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", netns[name], sys.executable, "-c", SERVER, name]
                )
            )
            wait_listening(netns[name], 8080)
        ctl.start()
        ctl.wait_role("leader")
        yield c, ctl, netns["client"]
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(30)
        ctl.stop()
        for lb in c.lbs():  # anything a failed test left
            sandbox.conn.load_balancer.delete(
                f"/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"}
            )
        wait_for("the test's load balancers to be gone", lambda: not c.lbs(), 120)
        emulator.stop()


def test_killed_during_creation_and_member_updates(
    cluster: tuple[Cluster, ControllerProcess, str],
) -> None:
    c, ctl, client = cluster
    c.service()
    ctl.kill()  # the create landed; listener, pool, members, status not (all) yet
    ctl.start()
    ctl.wait_role("leader")
    _serves_exactly(client, set(BACKENDS))
    [lb] = c.lbs()
    c.wait_members(lb["id"], {c.ips[b] for b in BACKENDS}, ctl.log)

    for delay in (0.0, 0.3, 0.8, 1.5):  # the kill lands before, during or after the update
        c.slice("web-2")
        time.sleep(delay)
        ctl.kill()
        c.slice("web-0", "web-1")  # changed again while no controller runs
        ctl.start()
        ctl.wait_role("leader")
        _serves_exactly(client, {"web-0", "web-1"})
        assert [x["id"] for x in c.lbs()] == [lb["id"]], c.lbs()
        c.wait_members(lb["id"], {c.ips["web-0"], c.ips["web-1"]}, ctl.log)
        c.slice(*BACKENDS)
        _serves_exactly(client, set(BACKENDS))

    c.k("delete", "service", "crash", "--wait=true", "--timeout=180s")
    wait_for("the LB to be gone", lambda: not c.lbs(), WAIT)
    assert not list(c.sb.conn.network.ports(name=f"ovn-lb-vip-{lb['id']}"))
    assert not list(c.sb.conn.network.ips(tags=f"kuryr.cluster:{c.cluster_id}"))


def test_endpoints_that_go_and_come_back_end_as_the_last_slice_says(
    cluster: tuple[Cluster, ControllerProcess, str],
) -> None:
    """Backends removed and re-added within a second or two of the removal (a rollout's
    flapping readiness): the OVN provider still lists the removed rows then and deletes
    them late, by id, so a re-add that reused them would end with the members missing
    from Octavia (docs/design/services.md, CI failure of 2026-11-28)."""
    c, ctl, client = cluster
    c.service()
    [lb] = c.lbs()
    c.wait_members(lb["id"], {c.ips[b] for b in BACKENDS}, ctl.log)
    for gap in (0.6, 0.9, 1.2, 1.5, 2.0):  # the re-add lands in the window or after it
        c.slice("web-2")
        time.sleep(gap)
        c.slice(*BACKENDS)
        c.wait_members(lb["id"], {c.ips[b] for b in BACKENDS}, ctl.log)
        time.sleep(3.0)  # the provider's late reports, if any, have arrived
        assert c.members(lb["id"]) == {c.ips[b] for b in BACKENDS}, c.member_rows(lb["id"])
    _serves_exactly(client, set(BACKENDS))
