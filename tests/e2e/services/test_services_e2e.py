"""Services as Octavia load balancers on the real sandbox, with real traffic.

Three pods of the shared sandbox (kuryr CNI, bare-metal node) run a small HTTP server
(TCP 8080, answering with the pod's name) and a UDP echo (8081). Services become Octavia
(OVN provider) load balancers: by the sandbox's controller when its kuryr.conf turns
Services on, else by a controller of our own (its own cluster id and lease, only the
``service,endpoints,kuryrloadbalancer`` handlers, so the shared one is not disturbed).
The first test's Services have no selector: the test writes their EndpointSlices (pod IPs,
readiness) to drive every change; the second's has one, and the API emulator's
EndpointSlice controller writes them.

Checked with traffic, from a client pod and from a VM stand-in (a Neutron port on net0
plugged from a netns): the ClusterIP reaches all 3 pods; endpoints down to 1 and back;
a not-ready endpoint gets no traffic; the UDP port answers; a ``type: LoadBalancer``
Service's floating IP answers from the host. Deleting the Services leaves no load
balancer, VIP port or floating IP behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fixtures.sandbox import Sandbox
from functional.controller.harness import (
    ControllerProcess,
    free_port,
    unique_name,
    wait_for,
)
from functional.traffic import wait_listening
from kuryr_k8s.sandbox.kuryr_components import (
    CLUSTER_ID,
    kuryr_conf_path,
    nodeagent_state,
    services_only_conf,
)
from kuryr_k8s.sandbox.nodeagent.exec import find_sandbox
from kuryr_k8s.sandbox.openstack import hostplug
from kuryr_k8s.sandbox.openstack.services import OctaviaApi

pytestmark = pytest.mark.e2e

WAIT = 300.0
SERVERS = ("web-0", "web-1", "web-2")
LOG_DIR = Path("/tmp/kuryr-services-e2e")

SERVER = r"""
import http.server, socket, sys, threading
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 8081))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(name + b":" + data, peer)
threading.Thread(target=udp, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

CLIENT = r"""
import collections, json, socket, sys
ip, port, proto, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seen = collections.Counter()
for i in range(n):
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"ping", (ip, port)); seen[s.recvfrom(2048)[0].decode().split(":")[0]] += 1
        else:
            s = socket.create_connection((ip, port), timeout=3)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n"); data = b""
            while chunk := s.recv(4096):
                data += chunk
            seen[data.split(b"\r\n\r\n", 1)[1].decode()] += 1
        s.close()
    except OSError as exc:
        seen["error:" + type(exc).__name__] += 1
print(json.dumps(seen))
"""


def kubectl(kubeconfig: Path, *args: str, input_text: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@dataclass
class World:
    sb: Sandbox
    ns: str
    cluster_id: str
    kubeconfig: Path
    controller: ControllerProcess | None
    """None: the sandbox's own controller serves Services (its kuryr.conf has them on)."""
    ips: dict[str, str] = field(default_factory=dict)
    netns: dict[str, str] = field(default_factory=dict)
    vm_netns: str = ""
    lb_ids: set[str] = field(default_factory=set)

    def k(self, *args: str, input_text: str | None = None) -> str:
        return kubectl(self.kubeconfig, *args, input_text=input_text)

    def apply(self, obj: dict[str, Any]) -> None:
        self.k("apply", "-n", self.ns, "-f", "-", input_text=json.dumps(obj))

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
        proc = subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={self.kubeconfig}",
                "get",
                kind,
                name,
                "-n",
                ns or self.ns,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            return None
        obj: dict[str, Any] = json.loads(proc.stdout)
        return obj

    def requests(
        self, from_ns: str, ip: str, port: int, proto: str = "tcp", n: int = 30
    ) -> dict[str, int]:
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                from_ns,
                sys.executable,
                "-c",
                CLIENT,
                ip,
                str(port),
                proto,
                str(n),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        counts: dict[str, int] = json.loads(proc.stdout)
        return counts

    def octavia_lbs(self, *, all_of_cluster: bool = False) -> list[dict[str, Any]]:
        """Load balancers of this test's namespace (or every one of the cluster id)."""
        r = self.sb.conn.load_balancer.get(
            "/lbaas/loadbalancers", params={"tags": f"kuryr.cluster:{self.cluster_id}"}
        )
        lbs: list[dict[str, Any]] = r.json()["loadbalancers"]
        return [lb for lb in lbs if all_of_cluster or lb["name"].startswith(f"{self.ns}/")]

    def fips(self, *, all_of_cluster: bool = False) -> list[Any]:
        fips = self.sb.conn.network.ips(tags=f"kuryr.cluster:{self.cluster_id}")
        mine = f"kuryr: {self.ns}/"
        return [f for f in fips if all_of_cluster or (f.description or "").startswith(mine)]


def endpoint_slice(
    name: str, service: str, ready: dict[str, bool], ips: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ips[pod]],
                "conditions": {"ready": ok},
                "targetRef": {"kind": "Pod", "name": pod},
            }
            for pod, ok in ready.items()
        ],
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "echo", "port": 8081, "protocol": "UDP"},
        ],
    }


def service(name: str, *, public: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ports": [
            {
                "name": "http",
                "port": 80 if not public else 8080,
                "targetPort": 8080,
                "protocol": "TCP",
            },
            {"name": "echo", "port": 53, "targetPort": 8081, "protocol": "UDP"},
        ]
    }
    if public:
        spec["type"] = "LoadBalancer"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def sandbox_serves_services(sb: Sandbox) -> bool:
    """The sandbox's controller was started with Services on (its kuryr.conf is written
    at each start, so the file says what the running process does)."""
    path = kuryr_conf_path(sb.ctx)
    return path.exists() and "\nservice_subnet = " in path.read_text()


def _cleanup_shared(w: World) -> None:
    """After our controller stopped: what it left on objects of the shared API (the
    default/kubernetes Service's finalizer and KuryrLoadBalancer) and anything still
    tagged with our cluster id in Octavia/Neutron."""
    klbs = json.loads(w.k("get", "kuryrloadbalancers", "-A", "-o", "json"))["items"]
    for klb in klbs:
        meta = klb["metadata"]
        w.k(
            "patch",
            "kuryrloadbalancer",
            meta["name"],
            "-n",
            meta["namespace"],
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )
        w.k(
            "delete",
            "kuryrloadbalancer",
            meta["name"],
            "-n",
            meta["namespace"],
            "--ignore-not-found",
            "--wait=false",
        )
    svcs = json.loads(w.k("get", "services", "-A", "-o", "json"))["items"]
    for svc in svcs:
        fins = svc["metadata"].get("finalizers") or []
        if "kuryr.openstack.org/service-finalizer" in fins:
            rest = [f for f in fins if f != "kuryr.openstack.org/service-finalizer"]
            w.k(
                "patch",
                "service",
                svc["metadata"]["name"],
                "-n",
                svc["metadata"]["namespace"],
                "--type=merge",
                "-p",
                json.dumps({"metadata": {"finalizers": rest or None}}),
            )
    for fip in w.fips(all_of_cluster=True):
        w.sb.conn.network.delete_ip(fip)
    for lb in w.octavia_lbs(all_of_cluster=True):
        w.lb_ids.add(lb["id"])
        with contextlib.suppress(Exception):
            w.sb.conn.load_balancer.delete(
                f"/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"}
            )
    wait_for("our load balancers to be gone", lambda: not w.octavia_lbs(all_of_cluster=True), 120)


@pytest.fixture
def world(sandbox: Sandbox) -> Iterator[World]:
    if not sandbox.topo.service_subnet_id:
        pytest.fail("the sandbox topology has no service subnet: run 'kuryr sandbox topology'")
    hostplug.ensure_external_host(sandbox.topo.external_cidr)
    ns = unique_name("svc-e2e")
    ctl = None
    cluster_id = CLUSTER_ID
    if not sandbox_serves_services(sandbox):
        cluster_id = ns
        workdir = LOG_DIR / cluster_id
        workdir.mkdir(parents=True, exist_ok=True)
        health = free_port()
        (workdir / "kuryr.conf").write_text(
            services_only_conf(sandbox.ctx, sandbox.topo, cluster_id, health)
        )
        ctl = ControllerProcess(
            workdir / "kuryr.conf", sandbox.ctx.paths.kubeconfig, workdir / "controller.log", health
        )
    w = World(sandbox, ns, cluster_id, sandbox.ctx.paths.kubeconfig, ctl)
    servers: list[subprocess.Popen[bytes]] = []
    vm_port = None
    try:
        w.k("create", "namespace", w.ns)
        if ctl is not None:
            ctl.start()
            ctl.wait_role("leader")
        for name in (*SERVERS, "client"):
            w.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "labels": {"app": "web" if name != "client" else "client"},
                    },
                    "spec": {
                        "containers": [
                            {"name": "c", "image": "busybox", "command": ["sleep", "1000000"]}
                        ]
                    },
                }
            )
        w.k(
            "wait",
            "-n",
            w.ns,
            "--for=condition=Ready",
            "--timeout=300s",
            *(f"pod/{p}" for p in (*SERVERS, "client")),
        )
        state = nodeagent_state(sandbox.ctx)
        for name in (*SERVERS, "client"):
            pod = w.get("pod", name)
            assert pod is not None
            w.ips[name] = pod["status"]["podIP"]
            w.netns[name] = find_sandbox(w.ns, name, state_dir=state).netns
        for name in SERVERS:
            servers.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", w.netns[name], sys.executable, "-c", SERVER, name],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_listening(w.netns[name], 8080)
        # The VM stand-in: a port on net0 plugged from a netns, as in the demo.
        conn = sandbox.conn
        vm_port = conn.network.create_port(
            name=f"{cluster_id}-vm",
            network_id=sandbox.topo.net0_id,
            project_id=sandbox.topo.project_id,
            device_owner="compute:sandbox-vm",
            binding_host_id=sandbox.settings.hostname,
            security_group_ids=[sandbox.topo.default_sg_id],
        )
        w.vm_netns = f"kv-{cluster_id[-6:]}"
        hostplug.plug(
            sandbox.ctx,
            w.vm_netns,
            vm_port,
            conn.network.get_subnet(sandbox.topo.subnet0_id),
            mtu=sandbox.topo.mtu,
        )
        yield w
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(AssertionError):
            w.k(
                "delete",
                "services,endpointslices",
                "--all",
                "-n",
                w.ns,
                "--wait=true",
                "--timeout=120s",
            )
        try:
            if ctl is not None:
                ctl.stop()
                _cleanup_shared(w)
            else:
                try:
                    wait_for("the namespace's LBs to be gone", lambda: not w.octavia_lbs(), WAIT)
                except AssertionError as exc:  # say what Octavia holds, not only "timed out"
                    left = [(lb["name"], lb["provisioning_status"]) for lb in w.octavia_lbs()]
                    raise AssertionError(f"{exc}; still in Octavia: {left}") from None
        finally:  # what the test made goes even when the wait above failed
            w.k("delete", "namespace", w.ns, "--wait=true", "--timeout=180s")
            if w.vm_netns:
                hostplug.unplug(sandbox.ctx, w.vm_netns)
            if vm_port is not None:
                sandbox.conn.network.delete_port(vm_port)


def _wait_responders(
    w: World, from_ns: str, ip: str, port: int, want: set[str], proto: str = "tcp"
) -> dict[str, int]:
    """Poll until the responders are exactly ``want`` (with no errors); returns the counts."""
    last: dict[str, int] = {}

    def check() -> bool:
        nonlocal last
        last = w.requests(from_ns, ip, port, proto)
        return set(last) == want

    try:
        wait_for(f"{proto} {ip}:{port} answered by exactly {sorted(want)}", check, 180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last: {last}") from None
    return last


def _klb_ready(w: World, name: str) -> dict[str, Any] | None:
    klb = w.get("kuryrloadbalancer", name)
    if klb is None:
        return None
    conds = (klb.get("status") or {}).get("conditions") or []
    if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
        return klb
    return None


def test_cluster_ip_udp_scaling_readiness_floating_ip_and_cleanup(world: World) -> None:
    w = world
    all_ready = dict.fromkeys(SERVERS, True)
    w.apply(service("web"))
    w.apply(endpoint_slice("web-1", "web", all_ready, w.ips))
    svc = w.get("service", "web")
    assert svc is not None
    vip = svc["spec"]["clusterIP"]
    members = {w.ips[p] for p in SERVERS}

    def klb_has_members() -> bool:
        klb = _klb_ready(w, "web")
        return klb is not None and {m["ip"] for m in klb["status"]["members"]} == members

    wait_for("KuryrLoadBalancer web Ready with 3 members", klb_has_members, WAIT)
    klb = _klb_ready(w, "web")
    assert klb is not None
    assert klb["status"]["loadbalancer"]["ip"] == vip
    assert len(klb["status"]["listeners"]) == len(klb["status"]["pools"]) == 2

    # ClusterIP from a pod and from the VM: all three answer.
    counts = _wait_responders(w, w.netns["client"], vip, 80, set(SERVERS))
    print(f"pod -> {vip}:80: {counts}")
    counts = _wait_responders(w, w.vm_netns, vip, 80, set(SERVERS))
    print(f"VM  -> {vip}:80: {counts}")
    # UDP.
    counts = _wait_responders(w, w.netns["client"], vip, 53, set(SERVERS), proto="udp")
    print(f"pod -> {vip}:53/udp: {counts}")

    # Down to one endpoint, and back.
    w.apply(endpoint_slice("web-1", "web", {"web-0": True}, w.ips))
    _wait_responders(w, w.netns["client"], vip, 80, {"web-0"})
    w.apply(endpoint_slice("web-1", "web", all_ready, w.ips))
    _wait_responders(w, w.netns["client"], vip, 80, set(SERVERS))

    # A not-ready endpoint gets no traffic.
    w.apply(endpoint_slice("web-1", "web", {**all_ready, "web-1": False}, w.ips))
    _wait_responders(w, w.netns["client"], vip, 80, {"web-0", "web-2"})

    # type LoadBalancer: a floating IP in status.loadBalancer.ingress, answering from the host.
    w.apply(service("web-public", public=True))
    w.apply(endpoint_slice("web-public-1", "web-public", all_ready, w.ips))

    def public_ip() -> str:
        s = w.get("service", "web-public") or {}
        ingress = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return str(ingress[0]["ip"]) if ingress else ""

    wait_for("web-public's floating IP in its status", lambda: bool(public_ip()), WAIT)
    fip = public_ip()
    assert fip in {str(f.floating_ip_address) for f in w.fips()}
    seen: set[str] = set()

    def host_reaches_all() -> bool:
        for _ in range(20):
            r = subprocess.run(
                ["curl", "-s", "--max-time", "3", f"http://{fip}:8080/"],
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode == 0:
                seen.add(r.stdout.strip())
        return seen == set(SERVERS)

    wait_for(f"host -> {fip}:8080 answered by all pods (seen {seen})", host_reaches_all, 180)

    # Deleting the Services leaves nothing in Octavia or Neutron.
    for lb in w.octavia_lbs():
        w.lb_ids.add(lb["id"])
    ours = {lb["id"] for lb in w.octavia_lbs() if lb["name"].startswith(f"{w.ns}/")}
    assert len(ours) == 2, w.octavia_lbs()
    w.k("delete", "service", "web", "web-public", "-n", w.ns, "--wait=true", "--timeout=180s")
    wait_for(
        "the Services' load balancers to be gone",
        lambda: not (ours & {lb["id"] for lb in w.octavia_lbs()}),
        WAIT,
    )
    assert w.get("kuryrloadbalancer", "web") is None
    assert not w.fips()
    vip_ports = [
        p.id for lb_id in ours for p in w.sb.conn.network.ports(name=f"ovn-lb-vip-{lb_id}")
    ]
    assert not vip_ports
    assert not list(w.sb.conn.network.ips(floating_ip_address=fip))


def test_selector_service_follows_the_emulators_endpointslices(world: World) -> None:
    """A Service with a selector: the API emulator's EndpointSlice controller writes its
    slices (no test-made slice), the controller makes the LB from them; a pod relabelled
    out of the selector leaves the slice and stops getting traffic, and comes back."""
    w = world
    spec = service("web-sel")
    spec["spec"]["selector"] = {"app": "web"}
    w.apply(spec)
    svc = w.get("service", "web-sel")
    assert svc is not None
    vip = svc["spec"]["clusterIP"]

    def slices() -> list[dict[str, Any]]:
        selector = "kubernetes.io/service-name=web-sel"
        out = w.k("get", "endpointslices", "-n", w.ns, "-l", selector, "-o", "json")
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def slice_ips() -> set[str]:
        return {
            a
            for es in slices()
            for ep in es.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready")
            for a in ep["addresses"]
        }

    members = {w.ips[p] for p in SERVERS}
    wait_for("the emulator's slices list the 3 pods", lambda: slice_ips() == members, 60)
    [es] = slices()
    assert es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslice-controller.k8s.io"
    )
    assert {p["port"] for p in es["ports"]} == {8080, 8081}
    counts = _wait_responders(w, w.netns["client"], vip, 80, set(SERVERS))
    print(f"selector Service: pod -> {vip}:80: {counts}")

    w.k("label", "pod", "web-2", "-n", w.ns, "app=elsewhere", "--overwrite")
    wait_for("web-2 out of the slices", lambda: slice_ips() == members - {w.ips["web-2"]}, 60)
    _wait_responders(w, w.netns["client"], vip, 80, {"web-0", "web-1"})
    w.k("label", "pod", "web-2", "-n", w.ns, "app=web", "--overwrite")
    _wait_responders(w, w.netns["client"], vip, 80, set(SERVERS))

    w.k("delete", "service", "web-sel", "-n", w.ns, "--wait=true", "--timeout=180s")
    wait_for("the selector Service's slices collected", lambda: not slice_ips(), 60)
    wait_for("its load balancer gone", lambda: not w.octavia_lbs(), WAIT)


def _kill_server(netns: str) -> None:
    """SIGKILL the test's HTTP server in ``netns`` (found among the netns' processes)."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          check=True).stdout.split()  # fmt: skip
    killed = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            if "ThreadingHTTPServer" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
    assert killed == 1, f"{killed} servers killed in {netns}"


def test_ovn_health_monitor_takes_a_dead_backend_out(world: World) -> None:
    """Does the sandbox's ovn provider run health monitors? The controller's LB for a
    Service gets the TCP monitor ``[octavia_defaults] health_monitors = true`` would add
    (delay 5, timeout 3, max_retries 3; added here through Octavia because the shared
    sandbox's controller runs with them off); a backend whose server stops, while its
    endpoint stays ready, must go ERROR in Octavia and stop getting connections."""
    w = world
    all_ready = dict.fromkeys(SERVERS, True)
    w.apply(service("web-hm"))
    w.apply(endpoint_slice("web-hm-1", "web-hm", all_ready, w.ips))
    wait_for("KuryrLoadBalancer web-hm Ready", lambda: _klb_ready(w, "web-hm") is not None, WAIT)
    klb = _klb_ready(w, "web-hm")
    assert klb is not None
    vip = klb["status"]["loadbalancer"]["ip"]
    lb_id = klb["status"]["loadbalancer"]["id"]
    [pool] = [p for p in klb["status"]["pools"] if p["protocol"] == "TCP"]
    api = w.sb.conn.load_balancer

    def lb_active() -> bool:
        lb = api.get(f"/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
        return lb["provisioning_status"] == "ACTIVE"

    wait_for("the LB ACTIVE", lb_active, WAIT)
    body = {"healthmonitor": {"pool_id": pool["id"], "type": "TCP", "delay": 5, "timeout": 3,
                              "max_retries": 3}}  # fmt: skip
    last: list[Any] = []

    def monitor_created() -> bool:
        # The ovn provider reports the LB ACTIVE before the pool (its late report of the
        # member update, docs/design/services.md): 409 "immutable" until then.
        resp = api.post("/lbaas/healthmonitors", json=body)
        last[:] = [resp.status_code, resp.text]
        assert resp.status_code in (201, 409), resp.text
        return resp.status_code == 201

    try:
        wait_for("Octavia to accept the health monitor", monitor_created, 120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {last}") from None
    wait_for("the LB ACTIVE after the monitor", lb_active, WAIT)

    def statuses() -> dict[str, str]:
        members = api.get(f"/lbaas/pools/{pool['id']}/members").json()["members"]
        return {m["address"]: m["operating_status"] for m in members}

    online = dict.fromkeys(members_ips := [w.ips[p] for p in SERVERS], "ONLINE")
    wait_for(f"members ONLINE under the monitor ({statuses()})", lambda: statuses() == online, 120)
    _wait_responders(w, w.netns["client"], vip, 80, set(SERVERS))

    dead = w.ips["web-1"]
    _kill_server(w.netns["web-1"])
    want = {**online, dead: "ERROR"}
    wait_for(f"web-1 ERROR ({statuses()})", lambda: statuses() == want, 120)
    counts = _wait_responders(w, w.netns["client"], vip, 80, {"web-0", "web-2"})
    print(f"health monitor: {dict(statuses())}; {counts}; members {members_ips}")


def _pending_lbs(w: World) -> list[str]:
    """Every LB in Octavia (any owner) with an operation in flight."""
    r = w.sb.conn.load_balancer.get("/lbaas/loadbalancers")
    lbs: list[dict[str, Any]] = r.json()["loadbalancers"]
    return [lb["name"] for lb in lbs if lb["provisioning_status"].startswith("PENDING_")]


@pytest.mark.timeout(1200)  # the fixture's teardown alone may wait 10 min when Octavia is slow
def test_octavia_down_is_reported_then_the_service_converges(world: World) -> None:
    """Bad input from the cloud: Octavia's API is down when a Service arrives. Its
    KuryrLoadBalancer says so (``Ready=False`` naming Octavia) and the Service gets a
    ``LoadBalancerNotReady`` Event, while the rest keeps working (a Service made before
    the outage still answers); once Octavia is back the new Service converges, with no
    second load balancer."""
    w = world
    all_ready = dict.fromkeys(SERVERS, True)
    w.apply(service("web-up"))
    w.apply(endpoint_slice("web-up-1", "web-up", all_ready, w.ips))
    wait_for("KuryrLoadBalancer web-up Ready", lambda: _klb_ready(w, "web-up") is not None, WAIT)
    up = _klb_ready(w, "web-up")
    assert up is not None
    up_vip = up["status"]["loadbalancer"]["ip"]
    _wait_responders(w, w.netns["client"], up_vip, 80, set(SERVERS))

    # The OVN provider answers 202 and does the work in a thread of octavia-api: stopping it
    # with an operation queued loses that operation and leaves its LB PENDING_* for good
    # (Octavia has no recovery for it). Stop only when no LB has one in flight.
    wait_for("no load balancer with an operation in flight", lambda: not _pending_lbs(w), WAIT)
    octavia = OctaviaApi(w.sb.ctx)
    assert octavia.stop(), "octavia-api was not running"
    try:
        w.apply(service("web-down"))
        w.apply(endpoint_slice("web-down-1", "web-down", all_ready, w.ips))
        reason = ""

        def reported() -> bool:
            nonlocal reason
            klb = w.get("kuryrloadbalancer", "web-down")
            conds = ((klb or {}).get("status") or {}).get("conditions") or []
            ready = next((c for c in conds if c["type"] == "Ready"), None)
            if ready is None or ready["status"] != "False":
                return False
            reason = f"{ready['reason']}: {ready['message']}"
            return True

        wait_for("web-down Ready=False while Octavia is down", reported, 180)
        assert "Octavia" in reason, reason
        selector = "involvedObject.name=web-down"
        events = json.loads(
            w.k("get", "events", "-n", w.ns, "--field-selector", selector, "-o", "json")
        )["items"]
        assert any(e["reason"] == "LoadBalancerNotReady" for e in events), events
        # the Service made before the outage keeps answering (OVN serves it)
        _wait_responders(w, w.netns["client"], up_vip, 80, set(SERVERS))
        print(f"while Octavia was down: {reason}")
    finally:
        octavia.start()

    members = {w.ips[p] for p in SERVERS}

    def converged() -> bool:
        klb = _klb_ready(w, "web-down")
        return klb is not None and {m["ip"] for m in klb["status"]["members"]} == members

    wait_for("web-down Ready with 3 members once Octavia is back", converged, WAIT)
    klb = _klb_ready(w, "web-down")
    assert klb is not None
    _wait_responders(w, w.netns["client"], klb["status"]["loadbalancer"]["ip"], 80, set(SERVERS))
    names = [lb["name"] for lb in w.octavia_lbs()]
    assert names.count(f"{w.ns}/web-down") == 1, names
