"""The Neutron floor: what a pod's port costs before any Kuryr logic, on this machine.

Measured in one run against the sandbox (``kuryr sandbox up``), through our adapter
(``kuryr_k8s.openstack.neutron``, i.e. the same HTTP Neutron sees from the controller):

1. ``create_port`` alone: one port per request, sequential.
2. bulk ``POST /ports``: ``--bulk`` ports per request (per request and per port).
3. create + plug + ACTIVE: a bound port created, plugged into br-int from a netns with
   ``kuryr_k8s.sandbox.openstack.hostplug`` (what a VM's tap or our CNI does), polled until
   Neutron says ACTIVE. This is the floor pod wiring without pools is compared with.
4. warm pool: ``PooledPortProvider.acquire`` from a pre-filled pool (lookup + claim +
   tag flip), then plug + ACTIVE: our pooled path, as a ratio to (3).

Usage: ``.venv/bin/python benchmarks/neutron_floor.py [--count 10] [--bulk 10] [--runs 3]``
(root: plugging needs netns and OVS). Cleans up everything it creates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from collections.abc import Collection
from typing import Any

from kuryr_k8s.controller.pool import REVISION_REFRESH_DELAY, PooledPortProvider
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import PortRequest
from kuryr_k8s.openstack.provider import PortTagging, spec_for
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.settings import settings_from_env

ACTIVE_TIMEOUT = 60.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def row(name: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"{name:<44} (no samples)"
    scale = 1000.0 if unit == "ms" else 1.0
    med = statistics.median(values) * scale
    return (
        f"{name:<44} n={len(values):<3} median {med:8.1f} {unit}   "
        f"p95 {pct(values, 95) * scale:8.1f} {unit}   max {max(values) * scale:8.1f} {unit}"
    )


async def wait_active(neutron: Neutron, port_id: str) -> None:
    deadline = time.monotonic() + ACTIVE_TIMEOUT
    while True:
        port = await neutron.get_port(port_id)
        if port is not None and port.status == "ACTIVE":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port_id} not ACTIVE after {ACTIVE_TIMEOUT:.0f} s")
        await asyncio.sleep(0.02)


async def plug_until_active(
    ctx: Context, conn: Any, neutron: Neutron, port_id: str, subnet: Any, mtu: int
) -> str:
    netns = f"nf-{uuid.uuid4().hex[:10]}"
    sdk_port = conn.network.get_port(port_id)
    await asyncio.to_thread(hostplug.plug, ctx, netns, sdk_port, subnet, mtu=mtu)
    await wait_active(neutron, port_id)
    return netns


class NoOwners:
    async def __call__(self) -> Collection[str]:
        return ()


async def main(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    conn = topology.connect(settings)
    topo = topology.ensure_base_topology(conn, lambda msg: None)
    ctx = manager.context(settings)
    subnet = conn.network.get_subnet(topo.subnet1_id)
    neutron = Neutron.connect(NeutronSettings(endpoint=settings.neutron_url, timeout=300))
    tagging = PortTagging(f"bench-{uuid.uuid4().hex[:8]}")
    request = PortRequest(
        settings.hostname, topo.project_id, topo.net1_id, topo.subnet1_id, (topo.default_sg_id,)
    )
    print(
        f"cores {os.cpu_count()}  load {os.getloadavg()[0]:.2f}  python "
        f"{platform.python_version()}  Neutron flavour {settings.neutron!r} "
        f"({'Zed, Debian 12' if settings.neutron == 'debian' else 'PyPI 29'}), ML2/OVN, "
        f"node {settings.hostname!r}"
    )
    netnses: list[str] = []
    try:
        single: list[float] = []
        for _ in range(args.count):
            started = time.perf_counter()
            (port,) = await neutron.create_ports(
                [spec_for(request, tagging.free(request.pool_key))]
            )
            single.append(time.perf_counter() - started)
            await neutron.delete_port(port.id)
        print(row("create_port (1 port per request)", single))

        bulk: list[float] = []
        for _ in range(args.runs):
            started = time.perf_counter()
            ports = await neutron.create_ports(
                [spec_for(request, tagging.free(request.pool_key))] * args.bulk
            )
            bulk.append(time.perf_counter() - started)
            for port in ports:
                await neutron.delete_port(port.id)
        print(row(f"bulk POST /ports ({args.bulk} ports), per request", bulk))
        print(row(f"bulk POST /ports ({args.bulk} ports), per port", [b / args.bulk for b in bulk]))

        floor: list[float] = []
        plug_active: list[float] = []
        for _ in range(args.count):
            started = time.perf_counter()
            (port,) = await neutron.create_ports(
                [spec_for(request, tagging.free(request.pool_key))]
            )
            created = time.perf_counter()
            netns = await plug_until_active(ctx, conn, neutron, port.id, subnet, topo.mtu)
            netnses.append(netns)
            done = time.perf_counter()
            floor.append(done - started)
            plug_active.append(done - created)
        print(row("create + plug + ACTIVE (the floor)", floor))
        print(row("  of which plug -> ACTIVE", plug_active))
        for netns in netnses:
            hostplug.unplug(ctx, netns)
        netnses.clear()
        for port in await neutron.list_ports(tags=[tagging.cluster_tag]):
            await neutron.delete_port(port.id)

        pool = PooledPortProvider(
            neutron, tagging, VifPoolSettings(True, 0, args.count, 0, 3600.0), NoOwners()
        )
        await pool.rebuild()
        await pool.acquire(request, "warm-up", "bench/warm-up")  # fills the pool
        await asyncio.sleep(REVISION_REFRESH_DELAY + 1.0)  # warm = bindings settled
        before = dict(neutron.stats.calls), dict(neutron.stats.seconds)
        acquire: list[float] = []
        pooled: list[float] = []
        owned: list[tuple[str, str]] = []
        for i in range(args.count - 1):
            started = time.perf_counter()
            port = await pool.acquire(request, f"uid-{i}", f"bench/pod-{i}")
            acquired = time.perf_counter()
            owned.append((port.id, f"uid-{i}"))
            netnses.append(await plug_until_active(ctx, conn, neutron, port.id, subnet, topo.mtu))
            acquire.append(acquired - started)
            pooled.append(time.perf_counter() - started)
        print(row("warm pool acquire (lookup+claim+tags)", acquire))
        print(row("warm pool acquire + plug + ACTIVE", pooled))
        if floor and pooled:
            ratio = statistics.median(pooled) / statistics.median(floor)
            print(f"{'pooled / floor (medians)':<44} {ratio:.2f}")
        for op, n in sorted(neutron.stats.calls.items()):
            spent = neutron.stats.seconds[op] - before[1].get(op, 0.0)
            k = n - before[0].get(op, 0)
            if k:
                print(
                    f"{'  pooled phase: ' + op:<44} {k:3d} calls, mean {spent / k * 1000:6.1f} ms"
                )
        calls = sum(neutron.stats.calls.values())
        errors = sum(neutron.stats.errors.values())
        print(f"{'Neutron calls / errors (whole run)':<44} {calls} / {errors}")
    finally:
        for netns in netnses:
            hostplug.unplug(ctx, netns)
        for port in await neutron.list_ports(tags=[tagging.cluster_tag]):
            await neutron.delete_port(port.id)
        neutron.close()
        conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10, help="samples per single-port series")
    parser.add_argument("--bulk", type=int, default=10, help="ports per bulk request")
    parser.add_argument("--runs", type=int, default=3, help="bulk requests")
    asyncio.run(main(parser.parse_args()))
