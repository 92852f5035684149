"""Services as Octavia load balancers: how fast traffic flows, against the direct floor.

Measured in one run on the sandbox (``kuryr sandbox up --octavia``; root for netns):

1. **Service created -> first connection through the VIP.** A Service (selector-less,
   fixed clusterIP) and its EndpointSlice are POSTed to a private Kubernetes API
   emulator watched by a controller of our own (Service handlers only); a client in a
   netns on the pod network connects to ``VIP:80`` every 20 ms until one succeeds.
   **Floor**: the same Octavia calls made directly through our adapter, back to back
   (create LB with that VIP, wait ACTIVE, listener, wait, pool, wait, batch members,
   wait), polled the same way.
2. **Endpoint change -> traffic follows.** With the LB serving backend A, the
   EndpointSlice is switched to backend B (one PUT); time until the client gets B's answer 5
   times in a row. **Floor**: the batch member update made directly, same polling.

Backends are HTTP servers in netns plugged into br-int on the pod subnet
(``hostplug``, the plumbing our CNI does), so only the Service path is measured.

Usage: ``.venv/bin/python benchmarks/service_lb.py [--reps 5]``. Cleans up everything
(load balancers by tag, ports, netns, the emulator and the controller), also after an
interrupted run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from kuryr_k8s.k8s import ENDPOINTSLICES, SERVICES, KubeClient, load_kubeconfig
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.octavia import MemberSpec, Octavia, connect
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.kubeapi import EmulatorProcess
from kuryr_k8s.sandbox.kuryr_components import services_only_conf
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.settings import settings_from_env

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

POLLER = r"""
import socket, sys, time
ip, want, streak_needed = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + float(sys.argv[4])
print("ready", flush=True)
streak = 0
while time.time() < deadline:
    try:
        s = socket.create_connection((ip, 80), timeout=0.3)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n"); data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
        body = data.split(b"\r\n\r\n", 1)[-1].decode()
        if not want or body == want:
            streak += 1
            if streak == 1:
                first = time.time()
            if streak >= streak_needed:
                print(f"{first:.6f}", flush=True); sys.exit(0)
            continue
    except OSError:
        pass
    streak = 0
    time.sleep(0.02)
print("timeout", flush=True); sys.exit(1)
"""

BENCH_TAG = "kuryr-bench-svc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Poller:
    """A client in ``netns`` polling ``VIP:80``; :meth:`result` is the wall time of the
    first answer of the streak (``want``: only answers with that body count)."""

    def __init__(self, netns: str, ip: str, want: str = "", streak: int = 1, limit: float = 240):
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-c",
                POLLER,
                ip,
                want,
                str(streak),
                str(limit),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> float:
        assert self.proc.stdout is not None
        out = self.proc.stdout.readline().strip()
        self.proc.wait(30)
        if out == "timeout" or not out:
            raise RuntimeError("no answer through the VIP before the poller's deadline")
        return float(out)


class Bench:
    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.settings = settings_from_env()
        self.ctx = manager.context(self.settings)
        self.conn = topology.connect(self.settings)
        self.topo = topology.ensure_base_topology(self.conn, lambda m: None)
        if not self.topo.service_subnet_id:
            raise SystemExit(
                "no service subnet in the sandbox topology: run 'kuryr sandbox topology'"
            )
        self.run_id = uuid.uuid4().hex[:6]
        self.cluster_id = f"bench-svc-{self.run_id}"
        self.work = Path(tempfile.mkdtemp(prefix="kuryr-bench-svc-"))
        self.netns: list[str] = []
        self.ports: list[Any] = []
        self.servers: list[subprocess.Popen[bytes]] = []
        self.ips: dict[str, str] = {}
        self.emulator: EmulatorProcess | None = None
        self.controller: subprocess.Popen[bytes] | None = None
        self.api = ""
        self.ip_seq = 0

    # ---- plumbing ---------------------------------------------------------------------

    def plug(self, name: str) -> str:
        net = self.conn.network
        port = net.create_port(
            name=f"{BENCH_TAG}-{self.run_id}-{name}",
            network_id=self.topo.net1_id,
            project_id=self.topo.project_id,
            device_owner="compute:bench",
            binding_host_id=self.settings.hostname,
            security_group_ids=[self.topo.default_sg_id],
        )
        net.set_tags(port, [BENCH_TAG])
        self.ports.append(port)
        ns = f"kb-{self.run_id}-{name}"[:15]
        self.netns.append(ns)  # before plugging: a half-made one is removed too
        hostplug.plug(self.ctx, ns, port, net.get_subnet(self.topo.subnet1_id), mtu=self.topo.mtu)
        self.ips[name] = port.fixed_ips[0]["ip_address"]
        return ns

    def setup(self) -> None:
        for name in ("a", "b"):
            ns = self.plug(name)
            self.servers.append(
                subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, name])
            )
        self.client_ns = self.plug("client")
        deadline = time.monotonic() + 60
        for port in self.ports:
            while self.conn.network.get_port(port.id).status != "ACTIVE":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port.id} not ACTIVE")
                time.sleep(0.1)
        self.emulator = EmulatorProcess(
            self.work / "kubeconfig", log_file=self.work / "emulator.log"
        )
        self.emulator.start()
        self.api = self.emulator.url
        # Its default/kubernetes Service (10.96.0.1) would get an LB too: not ours to time,
        # and that VIP may be the sandbox cluster's.
        subprocess.run(
            ["kubectl", f"--kubeconfig={self.emulator.kubeconfig}", "delete", "svc", "kubernetes"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        health = free_port()
        t = self.topo
        conf = self.work / "kuryr.conf"
        conf.write_text(services_only_conf(self.ctx, t, self.cluster_id, health, ha=False))
        with (self.work / "controller.log").open("ab") as log:
            self.controller = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kuryr_k8s.cli.main",
                    "controller",
                    "--config-file",
                    str(conf),
                    "--kubeconfig",
                    str(self.emulator.kubeconfig),
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or self.controller.poll() is not None:
                raise RuntimeError(f"controller not ready; see {self.work / 'controller.log'}")
            time.sleep(0.2)

    def next_vip(self) -> str:
        self.ip_seq += 1
        return f"10.111.200.{self.ip_seq}"  # inside the service range, far from allocations

    # ---- the measurements ------------------------------------------------------------

    def service_objs(self, name: str, vip: str, backends: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "clusterIP": vip,
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            },
            self.slice(name, backends),
        ]

    def slice(self, name: str, backends: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [self.ips[b]], "conditions": {"ready": True}} for b in backends
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }

    async def ours_create(self, kube: KubeClient) -> tuple[float, float]:
        """(Service created -> first connection, endpoint change -> traffic follows), ours:
        the API calls a client makes (two POSTs, then one PUT of the slice)."""
        name = f"svc-{self.ip_seq + 1}"
        vip = self.next_vip()
        svc, eps = self.service_objs(name, vip, ["a"])
        poller = Poller(self.client_ns, vip)
        t0 = time.time()
        await kube.create(SERVICES, svc, "default")
        made = await kube.create(ENDPOINTSLICES, eps, "default")
        created = await asyncio.to_thread(poller.result) - t0
        follow = Poller(self.client_ns, vip, want="b", streak=5)
        moved = self.slice(name, ["b"])
        moved["metadata"]["resourceVersion"] = made["metadata"]["resourceVersion"]
        t1 = time.time()
        await kube.replace(ENDPOINTSLICES, moved)
        followed = await asyncio.to_thread(follow.result) - t1
        await kube.delete(SERVICES, name, "default")
        await kube.delete(ENDPOINTSLICES, f"{name}-1", "default")
        await asyncio.to_thread(self.wait_no_lbs)
        return created, followed

    async def floor_create(self, octavia: Octavia) -> tuple[float, float]:
        """The same Octavia calls made directly (no Kubernetes, no controller)."""
        vip = self.next_vip()
        tags = [f"kuryr.cluster:{self.cluster_id}", f"kuryr.owner:floor-{self.ip_seq}"]
        poller = Poller(self.client_ns, vip)
        t0 = time.time()
        lb = await octavia.create_loadbalancer(
            name=f"floor/{self.ip_seq}",
            vip_subnet_id=self.topo.service_subnet_id,
            vip_address=vip,
            provider="ovn",
            project_id=self.topo.project_id,
            tags=tags,
        )
        await octavia.wait_active(lb.id, within=120)
        listener = await octavia.create_listener(
            lb.id, name="l", protocol="TCP", port=80, tags=tags
        )
        await octavia.wait_active(lb.id, within=120)
        pool = await octavia.create_pool(
            listener.id, name="p", protocol="TCP", algorithm="SOURCE_IP_PORT", tags=tags
        )
        await octavia.wait_active(lb.id, within=120)
        await octavia.replace_members(
            pool.id, [MemberSpec(self.ips["a"], 8080, self.topo.subnet1_id)], tags
        )
        await octavia.wait_active(lb.id, within=120)
        created = poller.result() - t0
        follow = Poller(self.client_ns, vip, want="b", streak=5)
        t1 = time.time()
        await octavia.replace_members(
            pool.id, [MemberSpec(self.ips["b"], 8080, self.topo.subnet1_id)], tags
        )
        await octavia.wait_active(lb.id, within=120)
        followed = follow.result() - t1
        await octavia.delete_loadbalancer(lb.id)
        await octavia.wait_gone(lb.id, within=120)
        return created, followed

    def wait_no_lbs(self) -> None:
        deadline = time.monotonic() + 120
        while self.lbs():
            if time.monotonic() > deadline:
                raise RuntimeError("load balancers left after deleting the Service")
            time.sleep(0.2)

    def lbs(self) -> list[dict[str, Any]]:
        r = self.conn.load_balancer.get(
            "/lbaas/loadbalancers", params={"tags": f"kuryr.cluster:{self.cluster_id}"}
        )
        items: list[dict[str, Any]] = r.json()["loadbalancers"]
        return items

    # ---- clean-up ---------------------------------------------------------------------

    def cleanup(self) -> None:
        if self.controller is not None and self.controller.poll() is None:
            self.controller.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.controller.wait(30)
            if self.controller.poll() is None:
                self.controller.kill()
        for lb in self.lbs():
            with contextlib.suppress(Exception):
                self.conn.load_balancer.delete(
                    f"/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"}
                )
        with contextlib.suppress(Exception):
            self.wait_no_lbs()
        if self.emulator is not None:
            self.emulator.stop()
        for proc in self.servers:
            proc.kill()
        for ns in self.netns:
            hostplug.unplug(self.ctx, ns)
        for port in self.conn.network.ports(tags=BENCH_TAG):
            self.conn.network.delete_port(port)


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs):.2f} s, min {xs[0]:.2f} s, max {xs[-1]:.2f} s (n={len(xs)})"


async def measure(b: Bench) -> dict[str, list[float]]:
    neutron_settings = NeutronSettings(endpoint=b.settings.neutron_url, timeout=120)
    octavia = connect(neutron_settings, b.settings.octavia_url)
    assert b.emulator is not None
    kube = KubeClient.from_settings(load_kubeconfig(b.emulator.kubeconfig))
    out: dict[str, list[float]] = {
        "ours_create": [],
        "ours_follow": [],
        "floor_create": [],
        "floor_follow": [],
    }
    try:
        for i in range(b.reps):  # interleaved, so load drifts hit both alike
            c, f = await b.ours_create(kube)
            out["ours_create"].append(c)
            out["ours_follow"].append(f)
            c, f = await b.floor_create(octavia)
            out["floor_create"].append(c)
            out["floor_follow"].append(f)
            print(
                f"rep {i + 1}: ours {out['ours_create'][-1]:.2f}/{out['ours_follow'][-1]:.2f} s, "
                f"floor {out['floor_create'][-1]:.2f}/{out['floor_follow'][-1]:.2f} s",
                flush=True,
            )
    finally:
        octavia.close()
        await kube.aclose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (netns, OVS)")
    b = Bench(args.reps)
    try:
        b.setup()
        res = asyncio.run(measure(b))
    finally:
        b.cleanup()
    load = os.getloadavg()
    print(
        f"\nservice_lb.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load[0]:.1f}"
    )
    for what, ours, floor in (
        ("Service created -> first connection", "ours_create", "floor_create"),
        ("endpoint change -> traffic follows (5 in a row)", "ours_follow", "floor_follow"),
    ):
        o, f = statistics.median(res[ours]), statistics.median(res[floor])
        print(f"{what}:\n  ours : {stats(res[ours])}\n  floor: {stats(res[floor])}")
        print(f"  ratio (p50): {o / f:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
