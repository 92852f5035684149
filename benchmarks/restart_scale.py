"""Controller restart at scale: 1,000 live pods with real Neutron ports, then SIGKILL.

Measures what an operator sees when the controller is restarted (upgrade, node drain,
OOM kill) in a cluster with many pods (issue 10 target: ready and serving new pods in
≤ 15 s, at ≤ 150 MiB RSS):

1. against a private Kubernetes API emulator (its own process, so other users of the
   shared sandbox API neither see nor disturb it) and the sandbox's real Neutron, a
   controller of its own (private cluster id, ``neutron-vif``, pools on with bulks of
   20) wires ``--pods`` pods on a node name no kubelet serves (so nothing plugs
   them: the ports are real, bound, DOWN), until every KuryrPort names its port;
2. its RSS with those pods; SIGKILL;
3. a new controller process starts at t0: time until ``/readyz`` says leader (informers
   synced, pools and ledger rebuilt from one port list), time until a *new* pod's
   KuryrPort names a port, and its RSS then and 30 s later;
4. clean-up, also after an error or Ctrl-C: controllers killed, every port of the
   private cluster deleted (8 at a time), the private API stopped.

Run with the sandbox up (``kuryr sandbox up``): ``.venv/bin/python
benchmarks/restart_scale.py [--pods 1000]``. It takes ~10 minutes for 1,000 pods, most
of it Neutron creating and deleting 1,000 ports on one API worker.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from kuryr_k8s.k8s import NODES, PODS, KubeClient, NotFound, load_kubeconfig
from kuryr_k8s.k8s.resources import KURYRPORTS, NAMESPACES
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kubeapi.process import EmulatorProcess
from kuryr_k8s.sandbox.kuryr_components import kuryr_conf
from kuryr_k8s.sandbox.openstack import topology
from kuryr_k8s.sandbox.settings import settings_from_env

NODE = "bench-scale-node"
"""No kubelet (node agent) serves it: pods get ports, nothing plugs them."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


class Ctl:
    def __init__(self, kubeconfig: Path, conf: Path, health: int, log: Path) -> None:
        self.kubeconfig, self.conf, self.health, self.log = kubeconfig, conf, health, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kuryr_k8s.cli.main",
                    "controller",
                    "--config-file",
                    str(self.conf),
                    "--kubeconfig",
                    str(self.kubeconfig),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def leader(self) -> bool:
        status, body = http(f"http://127.0.0.1:{self.health}/readyz")
        return status == 200 and "leader" in body

    def rss_mib(self) -> float:
        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def write_conf(ctx: Context, topo: topology.Topology, cluster: str, health: int) -> Path:
    text = kuryr_conf(ctx, topo)
    text = re.sub(r"cluster_id = .*", f"cluster_id = {cluster}", text)
    # Pods only: no Services (the sandbox's own controller serves those).
    text = re.sub(r"service_subnet = .*\n|external_svc_net = .*\n", "", text)
    text = re.sub(r"\[octavia_defaults\]\nendpoint_override = .*\n", "", text)
    text = text.replace("pod_vif_driver = mixed", "pod_vif_driver = neutron-vif")
    text = text.replace(
        "controller_ha = true", f"controller_ha = true\nleader_lease_name = kuryr-{cluster}"
    )
    text = re.sub(r"ports_pool_min = \d+", "ports_pool_min = 0", text)
    text = re.sub(r"ports_pool_batch = \d+", "ports_pool_batch = 20", text)
    text = re.sub(
        r"\[health_server\]\nhost = (.*)\nport = \d+",
        rf"[health_server]\nhost = \1\nport = {health}",
        text,
    )
    path = ctx.paths.etc / f"kuryr-{cluster}.conf"
    path.write_text(text)
    return path


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
        },
    }


async def named_ports(client: KubeClient, ns: str) -> int:
    items = (await client.list_all(KURYRPORTS, ns)).items
    return sum(1 for kp in items if ((kp.get("status") or {}).get("vifs") or {}))


async def wait_until(what: str, check: Any, limit: float, every: float = 2.0) -> float:
    start = time.monotonic()
    last = ""
    while True:
        done, progress = await check()
        if progress != last:
            print(f"   {what}: {progress} ({time.monotonic() - start:.0f} s)", flush=True)
            last = progress
        if done:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def run(
    args: argparse.Namespace, ctx: Context, conn: Any, kubeconfig: Path, cluster: str
) -> None:
    topo = topology.ensure_base_topology(conn, lambda m: None)
    health = free_port()
    conf = write_conf(ctx, topo, cluster, health)
    log = ctx.paths.logfile(cluster)
    await measure(args, ctx, conn, kubeconfig, conf, health, log, cluster)


async def measure(
    args: argparse.Namespace,
    ctx: Context,
    conn: Any,
    kubeconfig: Path,
    conf: Path,
    health: int,
    log: Path,
    cluster: str,
) -> None:
    ns = cluster
    kube = load_kubeconfig(kubeconfig)
    first = Ctl(kubeconfig, conf, health, log)
    second = Ctl(kubeconfig, conf, health, log)
    ctls = [first, second]
    print(f"-- cluster {cluster}: controller log {log}", flush=True)
    async with KubeClient.from_settings(kube) as client:
        await client.create(NAMESPACES, {"metadata": {"name": ns}})
        # The node must exist: pod garbage collection deletes pods bound to a missing node.
        await client.create(NODES, {"metadata": {"name": NODE}})
        try:
            first.start()
            await wait_until("first controller leading", _leads(first), 120, 0.5)
            sem = asyncio.Semaphore(16)

            async def make(i: int) -> None:
                async with sem:
                    await client.create(PODS, pod(f"p{i:04d}"), ns)

            t = time.monotonic()
            await asyncio.gather(*(make(i) for i in range(args.pods)))
            print(f"-- {args.pods} pods created in {time.monotonic() - t:.0f} s", flush=True)

            async def all_named() -> tuple[bool, str]:
                n = await named_ports(client, ns)
                return n >= args.pods, f"{n}/{args.pods} KuryrPorts name a port"

            wired = await wait_until("ports", all_named, 3600, 5.0)
            print(f"-- all {args.pods} pods have ports after {wired:.0f} s", flush=True)
            await asyncio.sleep(10)
            rss_before = first.rss_mib()
            rows: list[tuple[str, float, float, float]] = []
            current, spare = first, second
            for how in ("graceful (SIGTERM)", "crash (SIGKILL)"):
                if how.startswith("graceful"):
                    current.stop()  # releases the Lease on the way out
                else:
                    current.kill()  # the Lease stays held until it expires
                t0 = time.monotonic()
                spare.start()
                ready = await wait_until(f"restarted after {how}", _leads(spare), 300, 0.1)
                name = f"after-{'term' if how.startswith('graceful') else 'kill'}"
                await client.create(PODS, pod(name), ns)
                await wait_until("new pod's port", _named(client, ns, name), 300, 0.05)
                serving = time.monotonic() - t0
                rows.append((how, ready, serving, spare.rss_mib()))
                current, spare = spare, Ctl(kubeconfig, conf, health, log)
                ctls.append(spare)
            await asyncio.sleep(30)
            rss_later = current.rss_mib()
            print()
            print(f"## Controller restart with {args.pods} live pods (real Neutron ports)")
            print()
            print(
                "| restart | start → ready (leader, ledger rebuilt) | start → new pod's port "
                "named | RSS serving |"
            )
            print("|---|---|---|---|")
            for how, ready, serving, rss in rows:
                print(f"| {how} | {ready:.1f} s | {serving:.1f} s | {rss:.0f} MiB |")
            print(
                f"\nRSS before the restarts: {rss_before:.0f} MiB; 30 s after the last: "
                f"{rss_later:.0f} MiB (target ≤ 150 MiB)"
            )
            graceful = rows[0][2]
            worst_rss = max(rss_before, rss_later, *(r[3] for r in rows))
            verdict = graceful <= 15.0 and worst_rss <= 150.0
            print(
                f"target (restart serving in ≤ 15 s, ≤ 150 MiB): {'met' if verdict else 'MISSED'}"
                f"; a crash adds the Lease expiry ([kubernetes] leader_lease_duration)",
                flush=True,
            )
        finally:
            for ctl in ctls:
                ctl.kill()


def _named(client: KubeClient, ns: str, name: str) -> Any:
    async def check() -> tuple[bool, str]:
        try:
            kp = await client.get(KURYRPORTS, name, ns)
        except NotFound:
            return False, "no KuryrPort yet"
        ok = bool((kp.get("status") or {}).get("vifs"))
        return ok, "port named" if ok else "waiting"

    return check


def _leads(ctl: Ctl) -> Any:
    async def check() -> tuple[bool, str]:
        ok = await asyncio.to_thread(ctl.leader)
        return ok, "leader" if ok else "not yet"

    return check


def delete_ports(conn: Any, cluster: str) -> None:
    """Every port of the private cluster, 8 at a time (runs after the event loop ended, so
    an interrupt during the measurement still cleans up)."""
    for sweep in range(2):  # a bulk a killed controller sent can land after the first
        ports = list(conn.network.ports(tags=CLUSTER_TAG_PREFIX + cluster))
        print(f"-- clean-up: deleting {len(ports)} ports of {cluster}", flush=True)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: conn.network.delete_port(p, ignore_missing=True), ports))
        if sweep == 0 and ports:
            time.sleep(10)
    left = list(conn.network.ports(tags=CLUSTER_TAG_PREFIX + cluster))
    print(f"-- {len(left)} ports of {cluster} left", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000, help="live pods before the kill")
    args = parser.parse_args()
    settings = settings_from_env()
    ctx = manager.context(settings)
    conn = topology.connect(settings)
    cluster = f"bench-scale-{uuid.uuid4().hex[:6]}"
    api = EmulatorProcess(
        ctx.paths.etc / f"{cluster}.kubeconfig", log_file=ctx.paths.logfile(f"{cluster}-api")
    )
    api.start()
    topo = topology.ensure_base_topology(conn, lambda m: None)
    before = int(conn.network.get_quota(topo.project_id).ports)
    wanted = args.pods + 600  # room for the pods beside the sandbox's own ports
    if 0 <= before < wanted:
        conn.network.update_quota(conn.network.get_quota(topo.project_id), ports=wanted)
        print(f"-- port quota {before} -> {wanted} for the run", flush=True)
    try:
        asyncio.run(run(args, ctx, conn, api.kubeconfig, cluster))
    finally:
        delete_ports(conn, cluster)  # the private API goes with its process
        if 0 <= before < wanted:
            conn.network.update_quota(conn.network.get_quota(topo.project_id), ports=before)
            print(f"-- port quota back to {before}", flush=True)
        api.stop()
        conn.close()


if __name__ == "__main__":
    main()
