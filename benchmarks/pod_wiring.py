"""Pod wiring latency: from the pod's creation at the API until it is Ready.

"Ready" is set by the sandbox node agent right after ``kuryr-cni ADD`` returned success,
and ADD returns only when traffic can flow (OVN marked the OVS interface
``ovn-installed``). So each sample covers: API create -> scheduler binding -> controller
(KuryrPort, Neutron port from the pool or created) -> daemon (VIF seen, veth, OVS row,
flows) -> CNI result -> pod status. Times are taken client-side: just before the POST,
and when the watch shows the pod Ready.

Scenarios: single pods (one at a time), then bursts of 10, 50 and 200 pods at once,
each with warm pools (``vif_pool_driver = neutron``, pool filled before the burst) and
with pools disabled (``noop``: one Neutron create per pod). In the same run it measures
the floor without our code: (a) host plumbing alone (netns + veth + OVS port on a
pre-created bound port, until ``ovn-installed``), (b) Neutron ``create_port`` + plug +
ACTIVE. It also reports controller and daemon RSS with 0 and 200 pods, and 1,000
KuryrPorts / cached pods (see ``--memory``).

Needs the sandbox with the product running: ``kuryr sandbox demo`` (or ``kuryr sandbox up
--kuryr``). It stops the sandbox's kuryr-controller for the duration (it runs its own
with each pool mode and a private cluster id), and starts it again at the end. Everything
it creates (pods, namespace, ports tagged with its cluster id, netns) is removed.

Usage: .venv/bin/python benchmarks/pod_wiring.py [--singles 10] [--bursts 10,50,200]
       [--modes pool,nopool] [--floor 10] [--no-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from kuryr_k8s.k8s import PODS, KubeClient, load_kubeconfig
from kuryr_k8s.k8s.resources import KURYRPORTS, NAMESPACES
from kuryr_k8s.model.kuryrport import NODE_LABEL
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX, POOL_TAG_PREFIX
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kuryr_components import (
    CLUSTER_ID,
    CONTROLLER_HEALTH,
    KuryrController,
    KuryrDaemon,
    kuryr_conf,
)
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.settings import settings_from_env

READY_TIMEOUT = 600.0
UPSTREAM = {  # shared/research/kuryr-upstream.md section 7, same sandbox, 2026-11-26
    "1 pod": 5.45,
    "10 pods burst total": 15.9,
    "50 pods burst total": 132.1,
}


# -- statistics -------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values),
    }


def fmt_row(name: str, values: list[float], extra: str = "") -> str:
    s = summary(values)
    return (
        f"{name:<34} n={int(s['n']):<4} p50 {s['p50'] * 1000:8.1f} ms  p95 "
        f"{s['p95'] * 1000:8.1f} ms  p99 {s['p99'] * 1000:8.1f} ms  max "
        f"{s['max'] * 1000:8.1f} ms {extra}"
    )


# -- the controller under test ----------------------------------------------------------


@dataclass
class BenchController:
    ctx: Context
    topo: topology.Topology
    mode: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.ctx.paths.etc / f"kuryr-bench-{self.mode}.conf"

    def write_conf(self, pool_min: int) -> None:
        # Same cluster id as the sandbox's controller (stopped meanwhile): the demo's pods
        # stay consistently owned, and no second controller ever acts on them.
        text = kuryr_conf(self.ctx, self.topo)
        driver = "neutron" if self.mode == "pool" else "noop"
        text = text.replace("vif_pool_driver = neutron", f"vif_pool_driver = {driver}")
        text = re.sub(r"ports_pool_min = \d+", f"ports_pool_min = {pool_min}", text)
        text = re.sub(r"ports_pool_batch = \d+", f"ports_pool_batch = {max(10, pool_min)}", text)
        text = re.sub(r"ports_pool_max = \d+", f"ports_pool_max = {max(pool_min, 10)}", text)
        self.conf_path.write_text(text)

    def start(self, pool_min: int) -> None:
        self.write_conf(pool_min)
        log = open(self.ctx.paths.logfile(f"bench-controller-{self.mode}"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kuryr_k8s.cli.main",
                "controller",
                "--config-file",
                str(self.conf_path),
                "--kubeconfig",
                str(self.ctx.paths.kubeconfig),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: http_ok(f"http://{CONTROLLER_HEALTH}/readyz"), 120, "controller ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pool_free(self) -> float:
        text = urllib.request.urlopen(f"http://{CONTROLLER_HEALTH}/metrics", timeout=5).read()
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith("kuryr_port_pool_free{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_mib(self) -> float:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- pods -------------------------------------------------------------------------------


def pod_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kuryr-bench"}},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000000"]}]
        },
    }


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


async def create_and_wait(client: KubeClient, ns: str, names: list[str]) -> dict[str, float]:
    """POST all pods at once; return seconds from each POST to its Ready."""
    listing = await client.list(PODS, ns)
    started: dict[str, float] = {}
    latency: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async for ev in client.watch(
            PODS, ns, resource_version=listing.resource_version, timeout_seconds=int(READY_TIMEOUT)
        ):
            name = ev.object.get("metadata", {}).get("name")
            if name in started and name not in latency and is_ready(ev.object):
                latency[name] = time.monotonic() - started[name]
                if len(latency) == len(names):
                    done.set()
                    return

    watcher = asyncio.create_task(watch())

    async def create(name: str) -> None:
        started[name] = time.monotonic()
        await client.create(PODS, pod_body(name), ns)

    await asyncio.gather(*(create(n) for n in names))
    try:
        await asyncio.wait_for(done.wait(), READY_TIMEOUT)
    finally:
        watcher.cancel()
    return latency


async def delete_all(client: KubeClient, ns: str) -> None:
    pods = (await client.list_all(PODS, ns)).items
    await asyncio.gather(*(client.delete(PODS, p["metadata"]["name"], ns) for p in pods))
    deadline = time.monotonic() + READY_TIMEOUT
    while (await client.list(PODS, ns)).items or (await client.list(KURYRPORTS, ns)).items:
        if time.monotonic() > deadline:
            raise SystemExit(f"pods in {ns} not gone after {READY_TIMEOUT} s")
        await asyncio.sleep(0.2)


# -- the floor --------------------------------------------------------------------------


def floor(ctx: Context, conn: Any, topo: topology.Topology, n: int) -> dict[str, list[float]]:
    """Host plumbing alone, and Neutron create + plug + ACTIVE, without our code."""
    net = conn.network
    subnet = net.get_subnet(topo.subnet1_id)
    tag = f"bench-floor-{uuid.uuid4().hex[:8]}"
    out: dict[str, list[float]] = {"plumbing": [], "neutron": []}
    made: list[str] = []
    try:
        for i in range(n):
            t0 = time.monotonic()
            port = net.create_port(
                network_id=topo.net1_id,
                project_id=topo.project_id,
                tags=[tag],
                device_owner="compute:kuryr",
                binding_host_id=ctx.settings.hostname,
                security_group_ids=[topo.default_sg_id],
            )
            ns = f"kbf-{i}-{tag[-8:]}"
            made.append(ns)
            t1 = time.monotonic()
            plugged = hostplug.plug(ctx, ns, port, subnet, mtu=topo.mtu)
            while not hostplug.ovn_installed(ctx, plugged.host_ifname):
                time.sleep(0.005)
            t2 = time.monotonic()
            while net.get_port(port.id).status != "ACTIVE":
                time.sleep(0.02)
            t3 = time.monotonic()
            out["plumbing"].append(t2 - t1)
            out["neutron"].append((t1 - t0) + (t3 - t1))
    finally:
        for ns in made:
            hostplug.unplug(ctx, ns)
        for port in net.ports(tags=tag):
            net.delete_port(port)
    return out


def delete_free_pool_ports(conn: Any) -> int:
    """Free pool ports of the sandbox cluster (no controller runs at this point)."""
    removed = 0
    for port in conn.network.ports(tags=f"{CLUSTER_TAG_PREFIX}{CLUSTER_ID}"):
        if any(t.startswith(POOL_TAG_PREFIX) for t in port.tags):
            conn.network.delete_port(port)
            removed += 1
    return removed


# -- main -------------------------------------------------------------------------------


async def run_mode(
    client: KubeClient,
    bench: BenchController,
    singles: int,
    bursts: list[int],
    mem: dict[str, float],
    daemon_pid: int,
) -> dict[str, dict[str, float] | list[float]]:
    results: dict[str, Any] = {}
    ns = f"bench-{bench.mode}-{uuid.uuid4().hex[:6]}"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    try:
        biggest = max([singles and 1, *bursts])
        bench.start(pool_min=biggest if bench.mode == "pool" else 0)
        if bench.mode == "pool":
            # Warm the node's pool: the first pod triggers it; then wait until it is full.
            await create_and_wait(client, ns, ["warmup"])
            await delete_all(client, ns)
            wait_for(lambda: bench.pool_free() >= biggest, READY_TIMEOUT, "pool warm-up")
        if bench.mode == "pool":
            mem["controller, 0 pods"] = bench.rss_mib()
            mem["daemon, 0 pods"] = psutil.Process(daemon_pid).memory_info().rss / 2**20
        single: list[float] = []
        for i in range(singles):
            lat = await create_and_wait(client, ns, [f"single-{i}"])
            single.append(lat[f"single-{i}"])
            await delete_all(client, ns)
            if bench.mode == "pool":
                wait_for(lambda: bench.pool_free() >= biggest, READY_TIMEOUT, "pool refill")
        results["single"] = single
        for size in bursts:
            t0 = time.monotonic()
            lat = await create_and_wait(client, ns, [f"b{size}-{i}" for i in range(size)])
            total = time.monotonic() - t0
            results[f"burst {size}"] = list(lat.values())
            results[f"burst {size} total"] = total
            if bench.mode == "pool" and size >= 200:
                mem["controller, 200 pods"] = bench.rss_mib()
                mem["daemon, 200 pods"] = psutil.Process(daemon_pid).memory_info().rss / 2**20
            await delete_all(client, ns)
            if bench.mode == "pool":
                wait_for(lambda: bench.pool_free() >= biggest, READY_TIMEOUT, "pool refill")
    finally:
        await delete_all(client, ns)
        await client.delete(NAMESPACES, ns)
        bench.stop()
    return results


async def memory_1000(
    client: KubeClient, ctx: Context, bench: BenchController, daemon_pid: int, mem: dict[str, float]
) -> None:
    """1,000 KuryrPorts in the daemon's cache, 1,000 pods in the controller's cache.

    The pods are never scheduled (``schedulerName`` no one serves) so no Neutron port is
    made for them; the KuryrPorts carry the node label and a syntactically valid VIF,
    so the daemon caches them exactly as real ones. Created while no controller runs."""
    ns = f"bench-mem-{uuid.uuid4().hex[:6]}"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    node = ctx.settings.hostname
    try:
        sem = asyncio.Semaphore(32)

        async def make(i: int) -> None:
            async with sem:
                body = pod_body(f"m{i}")
                body["spec"]["schedulerName"] = "kuryr-bench-nobody"
                await client.create(PODS, body, ns)
                await client.create(
                    KURYRPORTS,
                    {
                        "apiVersion": "openstack.org/v1",
                        "kind": "KuryrPort",
                        "metadata": {"name": f"m{i}", "labels": {NODE_LABEL: node}},
                        "spec": {"podUid": str(uuid.uuid4()), "podNodeName": node},
                    },
                    ns,
                )

        await asyncio.gather(*(make(i) for i in range(1000)))
        await asyncio.sleep(5)  # let the daemon's informer catch up
        mem["daemon, 1000 KuryrPorts"] = psutil.Process(daemon_pid).memory_info().rss / 2**20
        # The KuryrPorts go before any controller runs: they name no real pod or port.
        await delete_kuryrports(client, ns)
        bench.start(pool_min=0)
        await asyncio.sleep(5)
        mem["controller, 1000 cached pods"] = bench.rss_mib()
        bench.stop()
    finally:
        await delete_kuryrports(client, ns)
        await client.delete(NAMESPACES, ns)


async def delete_kuryrports(client: KubeClient, ns: str) -> None:
    sem = asyncio.Semaphore(32)

    async def drop(name: str) -> None:
        async with sem:
            await client.delete(KURYRPORTS, name, ns)

    kps = (await client.list_all(KURYRPORTS, ns)).items
    await asyncio.gather(*(drop(kp["metadata"]["name"]) for kp in kps))


async def main_async(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    ctx = manager.context(settings)
    daemon = KuryrDaemon(ctx)
    daemon_pid = daemon.pid()
    if daemon_pid is None:
        raise SystemExit("kuryr-daemon is not running: run 'kuryr sandbox demo' first")
    conn = topology.connect(settings)
    topo = topology.ensure_base_topology(conn, lambda m: None)
    sandbox_controller = KuryrController(ctx)
    sandbox_controller.stop()
    kube = load_kubeconfig(ctx.paths.kubeconfig)
    mem: dict[str, float] = {}
    all_results: dict[str, dict[str, Any]] = {}
    try:
        floor_samples = floor(ctx, conn, topo, args.floor)
        async with KubeClient.from_settings(kube) as client:
            for mode in args.modes:
                print(f"-- mode {mode}", flush=True)
                bench = BenchController(ctx, topo, mode)
                all_results[mode] = await run_mode(
                    client, bench, args.singles, args.bursts, mem, daemon_pid
                )
            if args.memory:
                print("-- memory with 1,000 objects", flush=True)
                await memory_1000(
                    client, ctx, BenchController(ctx, topo, "memory"), daemon_pid, mem
                )
    finally:
        removed = delete_free_pool_ports(conn)
        print(f"-- removed {removed} free pool ports; restarting the sandbox's controller")
        manager.up(settings, lambda m: None)  # it refills its pool to its own minimum
        conn.close()
    report(settings, floor_samples, all_results, mem)


def report(
    settings: Any,
    floor_samples: dict[str, list[float]],
    results: dict[str, dict[str, Any]],
    mem: dict[str, float],
) -> None:
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.platform()}; Neutron: "
        f"{settings.neutron}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    plumb = statistics.median(floor_samples["plumbing"])
    neut = statistics.median(floor_samples["neutron"])
    print(fmt_row("floor: host plumbing only", floor_samples["plumbing"]))
    print(fmt_row("floor: Neutron create+plug+ACTIVE", floor_samples["neutron"]))
    for mode, res in results.items():
        print(f"\n[{'warm pools' if mode == 'pool' else 'pools disabled'}]")
        if res.get("single"):
            med = statistics.median(res["single"])
            ratio = med / plumb
            print(
                fmt_row(
                    "single pod",
                    res["single"],
                    f"| {ratio:.1f}x plumbing floor, {med / neut:.2f}x Neutron floor, "
                    f"upstream {UPSTREAM['1 pod']:.2f} s = {UPSTREAM['1 pod'] / med:.0f}x",
                )
            )
        for key, values in res.items():
            if key.startswith("burst") and not key.endswith("total"):
                total = res[f"{key} total"]
                size = len(values)
                up = UPSTREAM.get(f"{size} pods burst total")
                extra = f"| all Ready in {total:.2f} s = {size / total:.1f} pods/s"
                if up:
                    extra += f", upstream {up:.1f} s = {up / total:.0f}x"
                print(fmt_row(key, values, extra))
    if mem:
        print("\nmemory (RSS):")
        for k, v in mem.items():
            print(f"  {k:<32} {v:7.1f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--singles", type=int, default=10, help="single pods, one at a time")
    p.add_argument("--bursts", default="10,50,200", help="burst sizes, comma-separated")
    p.add_argument("--modes", default="pool,nopool", help="pool, nopool or both")
    p.add_argument("--floor", type=int, default=10, help="samples of the floor")
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the 1,000-object memory measurement",
    )
    args = p.parse_args()
    args.bursts = [int(x) for x in args.bursts.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
