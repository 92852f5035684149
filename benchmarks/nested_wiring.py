"""Nested pod wiring: a pod on a worker VM, from its POST until it is Ready.

The overcloud of the hybrid scenario (``kuryr sandbox demo``): a second Kubernetes API
(127.0.0.1:6444) whose node ``worker0`` is a real QEMU VM (TCG software emulation) on a
trunk parent port. A pod there gets a Neutron port on ``net1`` that is a VLAN subport of
the VM's trunk; inside the VM, the node agent (kubelet stand-in) makes the pod's netns and
calls ``kuryr-cni ADD``; ``kuryr daemon`` (``vlan`` binding) creates the VLAN device on
``eth0`` directly in the netns; the node agent marks the pod Ready when ADD succeeded.
Times are taken on the host, client-side: just before the POST, when the KuryrPort's
status first carries an ACTIVE VIF (the controller's part is done), and when the watch
shows the pod Ready.

Scenarios, each with warm trunk pools (``vif_pool_driver = neutron``, worker0's pool
filled with attached subports before each measurement) and with pools disabled
(``noop``: per pod one ``POST /ports`` + ``add_subports`` + wait ACTIVE; release is
``remove_subports`` + ``DELETE``): single pods one at a time, then a burst of N pods at
once (default 20), all on worker0. With pools, the first pod on the trunk (the pool is
empty: it waits for a batch of N subports created and attached) is reported too: that is
upstream's "cold pool" case.

Floors, measured in the same run without our code:

* Neutron (host), before and again after the pod scenarios (its latency drifts with
  the load of the shared single-worker neutron-server): ``POST /ports`` on net1 +
  ``add_subports`` to worker0's trunk + poll until ACTIVE (the parent is plugged, so it
  goes ACTIVE by itself), one port at a time; the same for N ports at once (one bulk
  ``POST``, one ``add_subports``); and the warm path's one unavoidable call, a ``PUT`` of
  ``device_id`` on an attached subport, alone and N at once.
* guest (inside worker0, timed *inside* the guest so the command channel's round trip is
  not counted): ``ip netns add``; a VLAN device (id 3990+, unused on the trunk) born in the
  netns, renamed, address, up, default route — once with ``ip`` commands (one process
  each), once with pyroute2 in one process (netlink sockets opened in the netns with
  ``setns``, as the daemon does; import time reported apart);
* the CNI plugin's start in the guest: ``kuryr-cni VERSION`` vs ``python3 -IS -c pass``.

Ratios: a single pod against the Neutron floor (warm: the claim ``PUT``; cold: create +
attach + ACTIVE) + the guest's VLAN device floor; a burst against the larger of its
Neutron part (warm: N claim ``PUT``s at once; cold: the bulk create + attach + ACTIVE)
and N guest VLAN devices on the one vCPU (they could overlap). During the
burst it also samples the guest's CPU (``/proc/stat``), the QEMU process's CPU time and
the host's CPU, to show where the time goes.

It stops the sandbox's ``overcloud-controller`` for the duration and runs its own
controller (``nested-vlan``, private cluster id ``kuryr-bench-nested``, health on
127.0.0.1:8093) in each pool mode against the overcloud API, then starts the sandbox's
one again. The demo's pods (``default`` namespace) are not touched. Everything it makes
is removed at the end, also on failure or Ctrl-C (and what an interrupted run left, at
the start of the next): its pods and namespaces, every port
tagged with its cluster id or its floor tag (detached from the trunk first: Neutron
refuses to delete a subport), the guest netns of the floors.

Needs: ``kuryr sandbox demo`` (hybrid) up, worker0 running and Ready in the overcloud.
Runtime with the defaults: about 7 minutes (TCG guest, 2 host cores).

Usage: .venv/bin/python benchmarks/nested_wiring.py [--singles 6] [--burst 20]
       [--modes pool,nopool] [--floor 6] [--guest-floor 10] [--worker worker0]
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pod_wiring import http_ok, is_ready, pct, wait_for

from kuryr_k8s.k8s import PODS, KubeClient, load_kubeconfig
from kuryr_k8s.k8s.resources import KURYRPORTS, NAMESPACES
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX
from kuryr_k8s.sandbox import manager, overcloud
from kuryr_k8s.sandbox import vm as vms
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.openstack import topology
from kuryr_k8s.sandbox.settings import settings_from_env

BENCH_CLUSTER = "kuryr-bench-nested"
BENCH_HEALTH = "127.0.0.1:8093"
NS_PREFIX = "bench-nested-"
GUEST_NETNS_PREFIX = "kbn"
GUEST_VLAN_BASE = 3990
"""Guest floor VLAN ids: far above what the controllers allocate (lowest free first)."""
FLOOR_VLAN_BASE = 3000
READY_TIMEOUT = 600.0
UPSTREAM = {  # shared/research/kuryr-upstream.md section 2: devstack, 1 VM, 2017, charts
    "single, cold pool": 50.0,  # bulk-create 10 ports + attach, then the pod
    "4 pods, warm pool": 15.0,
    "1 pod, no pools": 17.0,
    "20 pods, no pools": 175.0,
    "20 pods, pools": 48.0,
}


def say(msg: str) -> None:
    print(msg, flush=True)


def fmt_s(name: str, values: list[float], extra: str = "") -> str:
    if not values:
        return f"{name:<44} (no samples)"
    return (
        f"{name:<44} n={len(values):<3} p50 {statistics.median(values):7.2f} s  "
        f"p95 {pct(values, 95):7.2f} s  max {max(values):7.2f} s {extra}"
    )


def fmt_ms(name: str, values: list[float], extra: str = "") -> str:
    if not values:
        return f"{name:<44} (no samples)"
    return (
        f"{name:<44} n={len(values):<3} p50 {statistics.median(values) * 1000:8.1f} ms  "
        f"p95 {pct(values, 95) * 1000:8.1f} ms  max {max(values) * 1000:8.1f} ms {extra}"
    )


# -- floors: Neutron ---------------------------------------------------------------------


def trunk_vlans(conn: Any, trunk_id: str) -> set[int]:
    subs = conn.network.get_trunk_subports(trunk_id)["sub_ports"]
    return {int(s["segmentation_id"]) for s in subs}


def free_vlans(conn: Any, trunk_id: str, n: int, base: int) -> list[int]:
    used = trunk_vlans(conn, trunk_id)
    return [v for v in range(base, 4095) if v not in used][:n]


def wait_ports_active(conn: Any, ids: set[str], tag: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        if len(ids) == 1:
            (pid,) = ids
            if conn.network.get_port(pid).status == "ACTIVE":
                return
        else:
            active = {p.id for p in conn.network.ports(tags=tag) if p.status == "ACTIVE"}
            if ids <= active:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"floor: ports not ACTIVE after 120 s ({tag})")
        time.sleep(0.02)


def remove_tagged_ports(conn: Any, tag: str, trunk_ids: list[str]) -> int:
    """Detach (from whichever of ``trunk_ids`` holds them) and delete ports tagged ``tag``."""
    ports = list(conn.network.ports(tags=tag))
    if not ports:
        return 0
    ids = {p.id for p in ports}
    for trunk_id in trunk_ids:
        try:
            subs = conn.network.get_trunk_subports(trunk_id)["sub_ports"]
        except Exception as exc:
            say(f"   (trunk {trunk_id}: {exc})")
            continue
        mine = [{"port_id": s["port_id"]} for s in subs if s["port_id"] in ids]
        if mine:
            conn.network.delete_trunk_subports(trunk_id, mine)
    for p in ports:
        conn.network.delete_port(p.id, ignore_missing=True)
    return len(ports)


FLOOR_TAG_PREFIX = "kuryr-bench-nested-floor-"


def remove_floor_leftovers(conn: Any, topo: topology.Topology) -> int:
    """Floor ports of this run or of an interrupted earlier one (any floor tag), detached
    from whichever trunk holds them, then deleted."""
    ports = [
        p
        for p in conn.network.ports(network_id=topo.net1_id)
        if any(t.startswith(FLOOR_TAG_PREFIX) for t in p.tags)
    ]
    ids = {p.id for p in ports}
    if ids:
        for trunk in conn.network.trunks():
            mine = [{"port_id": sp["port_id"]} for sp in trunk.sub_ports if sp["port_id"] in ids]
            if mine:
                conn.network.delete_trunk_subports(trunk.id, mine)
        for p in ports:
            conn.network.delete_port(p.id, ignore_missing=True)
    return len(ports)


def neutron_floor(
    conn: Any, topo: topology.Topology, trunk_id: str, n: int, burst: int
) -> dict[str, list[float]]:
    """Subport create + attach + ACTIVE without our code; bulk of ``burst``; claim PUT."""
    net = conn.network
    tag = f"{FLOOR_TAG_PREFIX}{uuid.uuid4().hex[:8]}"
    out: dict[str, list[float]] = {
        "create": [],
        "attach": [],
        "until ACTIVE": [],
        "single": [],
        "claim PUT": [],
        "bulk": [],
        "bulk claim PUTs": [],
    }
    body = {
        "network_id": topo.net1_id,
        "project_id": topo.project_id,
        "security_group_ids": [topo.default_sg_id],
        "tags": [tag],
    }
    try:
        for i in range(n):
            vid = free_vlans(conn, trunk_id, 1, FLOOR_VLAN_BASE)[0]
            t0 = time.monotonic()
            port = net.create_port(name=f"bench-floor-{i}", **body)
            t1 = time.monotonic()
            net.add_trunk_subports(
                trunk_id,
                [{"port_id": port.id, "segmentation_type": "vlan", "segmentation_id": vid}],
            )
            t2 = time.monotonic()
            wait_ports_active(conn, {port.id}, tag)
            t3 = time.monotonic()
            net.update_port(port.id, device_id=str(uuid.uuid4()))
            t4 = time.monotonic()
            out["create"].append(t1 - t0)
            out["attach"].append(t2 - t1)
            out["until ACTIVE"].append(t3 - t2)
            out["single"].append(t3 - t0)
            out["claim PUT"].append(t4 - t3)
            remove_tagged_ports(conn, tag, [trunk_id])
        if burst < 1:
            return out
        say(f"   {n} single subports done; now {burst} at once (bulk POST + one add_subports)")
        vids = free_vlans(conn, trunk_id, burst, FLOOR_VLAN_BASE)
        t0 = time.monotonic()
        ports = list(
            net.create_ports([{**body, "name": f"bench-floor-b{i}"} for i in range(burst)])
        )
        ids = {p.id for p in ports}
        net.add_trunk_subports(
            trunk_id,
            [
                {"port_id": p.id, "segmentation_type": "vlan", "segmentation_id": v}
                for p, v in zip(ports, vids, strict=True)
            ],
        )
        wait_ports_active(conn, ids, tag)
        out["bulk"].append(time.monotonic() - t0)
        # The warm burst's Neutron part: one claim PUT per attached subport, all at once.
        with ThreadPoolExecutor(max_workers=burst) as pool:
            t0 = time.monotonic()
            list(pool.map(lambda p: net.update_port(p.id, device_id=str(uuid.uuid4())), ports))
            out["bulk claim PUTs"].append(time.monotonic() - t0)
    finally:
        remove_tagged_ports(conn, tag, [trunk_id])
    return out


# -- floors: inside the guest ------------------------------------------------------------

GUEST_IP_SCRIPT = r"""
set -u
N=__N__; BASE=__BASE__
cleanup() { for i in $(seq 0 $((N-1))); do ip netns del kbni$i 2>/dev/null; done; }
trap cleanup EXIT
for i in $(seq 0 $((N-1))); do
  ns=kbni$i; vid=$((BASE+i)); mac=$(printf '02:00:00:00:%02x:%02x' $((i/256)) $((i%256)))
  t0=$EPOCHREALTIME
  ip netns add $ns || exit 1
  t1=$EPOCHREALTIME
  ip link add link eth0 name kbt$vid netns $ns address $mac mtu 1442 type vlan id $vid || exit 1
  ip -n $ns link set kbt$vid name eth0 || exit 1
  ip -n $ns link set lo up || exit 1
  ip -n $ns addr add 10.99.$i.2/24 dev eth0 || exit 1
  ip -n $ns link set eth0 up || exit 1
  ip -n $ns route add default via 10.99.$i.1 dev eth0 || exit 1
  t2=$EPOCHREALTIME
  ip netns del $ns
  t3=$EPOCHREALTIME
  echo "sample $t0 $t1 $t2 $t3"
done
"""

GUEST_PYROUTE2_SCRIPT = r"""
import ctypes, os, socket, sys, time
t0 = time.monotonic()
from pyroute2 import IPRoute
print("import", time.monotonic() - t0)
N, BASE = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000

def ns_socket(path):
    me = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        finally:
            libc.setns(me, CLONE_NEWNET)
    finally:
        os.close(fd)
        os.close(me)

names = [f"kbnp{i}" for i in range(N)]
try:
    with IPRoute() as ipr:
        parent = ipr.link_lookup(ifname="eth0")[0]
        for i, ns in enumerate(names):
            vid = BASE + i
            os.system(f"ip netns add {ns}")  # untimed: the bash floor times netns creation
            path = f"/var/run/netns/{ns}"
            a = time.monotonic()
            fd = os.open(path, os.O_RDONLY)
            try:
                ipr.link("add", ifname=f"kbt{vid}", kind="vlan", link=parent, vlan_id=vid,
                         net_ns_fd=fd, address="02:00:00:01:%02x:%02x" % (i // 256, i % 256),
                         mtu=1442)
            finally:
                os.close(fd)
            sock = ns_socket(path)
            n = IPRoute(use_socket=sock)
            try:
                idx = n.link_lookup(ifname=f"kbt{vid}")[0]
                n.link("set", index=idx, ifname="eth0")
                n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
                n.addr("add", index=idx, address=f"10.98.{i}.2", prefixlen=24)
                n.link("set", index=idx, state="up")
                n.route("add", dst="0.0.0.0/0", gateway=f"10.98.{i}.1", oif=idx)
            finally:
                n.close()
                sock.close()
            b = time.monotonic()
            print("sample", b - a, flush=True)
            os.system(f"ip netns del {ns}")
finally:
    os.system("for n in " + " ".join(names) + "; do ip netns del $n 2>/dev/null; done")
"""

GUEST_CNI_SCRIPT = r"""
N=__N__
for i in $(seq 1 $N); do
  t0=$EPOCHREALTIME; python3 -IS -c pass; t1=$EPOCHREALTIME
  echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION __PLUGIN__ >/dev/null || exit 1
  t2=$EPOCHREALTIME
  echo "sample $t0 $t1 $t2"
done
"""


def _samples(text: str) -> list[list[float]]:
    return [
        [float(x) for x in line.split()[1:]]
        for line in text.splitlines()
        if line.startswith("sample ")
    ]


def guest_floor(vm: Any, n: int, trunk_vlans_in_use: set[int]) -> dict[str, list[float]]:
    vlans = set(range(GUEST_VLAN_BASE, GUEST_VLAN_BASE + n))
    if vlans & trunk_vlans_in_use:
        raise SystemExit(f"guest floor: VLAN ids {sorted(vlans & trunk_vlans_in_use)} are in use")
    out: dict[str, list[float]] = {}
    script = GUEST_IP_SCRIPT.replace("__N__", str(n)).replace("__BASE__", str(GUEST_VLAN_BASE))
    res = vm.exec(["bash", "-c", script], timeout=600).check()
    rows = _samples(res.out)
    out["netns add (ip)"] = [r[1] - r[0] for r in rows]
    out["VLAN dev + L3 (ip, 6 processes)"] = [r[2] - r[1] for r in rows]
    out["netns del (ip)"] = [r[3] - r[2] for r in rows]
    say(f"   ip: {len(rows)} samples")
    res = vm.exec(
        ["python3", "-c", GUEST_PYROUTE2_SCRIPT, str(n), str(GUEST_VLAN_BASE)], timeout=600
    ).check()
    out["VLAN dev + L3 (pyroute2, one process)"] = [r[0] for r in _samples(res.out)]
    imports = [float(line.split()[1]) for line in res.out.splitlines() if line.startswith("import")]
    out["pyroute2 import"] = imports
    say("   pyroute2: done")
    plugin = f"{overcloud.GUEST_CNI_BIN}/kuryr-cni"
    script = GUEST_CNI_SCRIPT.replace("__N__", str(n)).replace("__PLUGIN__", plugin)
    res = vm.exec(["bash", "-c", script], timeout=600).check()
    rows = _samples(res.out)
    out["python3 -IS -c pass"] = [r[1] - r[0] for r in rows]
    out["kuryr-cni VERSION"] = [r[2] - r[1] for r in rows]
    say("   CNI plugin start: done")
    return out


def guest_cleanup(vm: Any) -> None:
    vm.exec_sh(
        f"for n in $(ip netns list | awk '{{print $1}}' | grep '^{GUEST_NETNS_PREFIX}'); "
        "do ip netns del $n; done; true",
        timeout=120,
    )


@dataclass(frozen=True)
class CpuSample:
    """The guest's CPU counters and the QEMU process's CPU time (host), at one moment."""

    wall: float
    guest_busy: float
    guest_total: float
    qemu_cpu: float
    host_busy: float
    host_total: float

    @staticmethod
    def _stat(text: str) -> tuple[float, float]:
        fields = [float(x) for x in text.splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    @classmethod
    def take(cls, vm: Any) -> CpuSample:
        gbusy, gtotal = cls._stat(vm.exec(["cat", "/proc/stat"], timeout=60).out)
        qemu = psutil.Process(vm.info.pid).cpu_times()
        hbusy, htotal = cls._stat(Path("/proc/stat").read_text())
        return cls(time.monotonic(), gbusy, gtotal, qemu.user + qemu.system, hbusy, htotal)

    def since(self, before: CpuSample) -> dict[str, float]:
        return {
            "guest vCPU busy": (self.guest_busy - before.guest_busy)
            / max(1.0, self.guest_total - before.guest_total),
            "QEMU process, host cores": (self.qemu_cpu - before.qemu_cpu)
            / max(1e-6, self.wall - before.wall),
            "host CPUs busy": (self.host_busy - before.host_busy)
            / max(1.0, self.host_total - before.host_total),
        }


# -- the controller under test -----------------------------------------------------------


@dataclass
class BenchController:
    ctx: Context
    topo: topology.Topology
    mode: str
    trunk_id: str
    pool: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return overcloud.overcloud_dir(self.ctx) / f"kuryr-bench-nested-{self.mode}.conf"

    def write_conf(self) -> None:
        text = overcloud.controller_conf(self.ctx, self.topo)
        driver = "neutron" if self.mode == "pool" else "noop"
        host, port = BENCH_HEALTH.split(":")
        text = text.replace(f"cluster_id = {overcloud.CLUSTER_ID}", f"cluster_id = {BENCH_CLUSTER}")
        text = text.replace("vif_pool_driver = neutron", f"vif_pool_driver = {driver}")
        text = re.sub(r"ports_pool_min = \d+", f"ports_pool_min = {self.pool}", text)
        text = re.sub(r"ports_pool_batch = \d+", f"ports_pool_batch = {self.pool}", text)
        text = re.sub(r"ports_pool_max = \d+", f"ports_pool_max = {self.pool}", text)
        text = re.sub(
            r"(\[health_server\]\nhost = )\S+\nport = \d+", rf"\g<1>{host}\nport = {port}", text
        )
        if f"cluster_id = {BENCH_CLUSTER}" not in text or f"port = {port}" not in text:
            raise SystemExit("could not derive the benchmark controller's config")
        self.conf_path.write_text(text)

    def start(self) -> None:
        if http_ok(f"http://{BENCH_HEALTH}/healthz") or http_ok(f"http://{BENCH_HEALTH}/readyz"):
            raise SystemExit(f"something already serves {BENCH_HEALTH}: another benchmark?")
        self.write_conf()
        log = open(self.ctx.paths.logfile(f"bench-nested-controller-{self.mode}"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kuryr_k8s.cli.main",
                "controller",
                "--config-file",
                str(self.conf_path),
                "--kubeconfig",
                str(overcloud.overcloud_kubeconfig(self.ctx)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        t0 = time.monotonic()
        wait_for(lambda: http_ok(f"http://{BENCH_HEALTH}/readyz"), 120, "controller ready")
        say(f"   controller ({self.mode}) ready in {time.monotonic() - t0:.1f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.conf_path.unlink(missing_ok=True)

    def pool_free(self) -> float:
        url = f"http://{BENCH_HEALTH}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("kuryr_port_pool_free{") and f'node="{self.trunk_id}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_pool(self, what: str) -> None:
        t0 = time.monotonic()
        wait_for(lambda: self.pool_free() >= self.pool, READY_TIMEOUT, what)
        say(
            f"   pool holds {self.pool_free():.0f} attached subports "
            f"({time.monotonic() - t0:.1f} s)"
        )


# -- pods --------------------------------------------------------------------------------


def pod_body(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kuryr-bench-nested"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000000"]}],
        },
    }


def vif_active(kp: dict[str, Any]) -> bool:
    vif = (((kp.get("status") or {}).get("vifs") or {}).get("eth0") or {}).get("vif") or {}
    return bool(vif.get("active")) and vif.get("vlanId") is not None


@dataclass
class Timeline:
    posted: dict[str, float] = field(default_factory=dict)
    port: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)

    def total(self) -> list[float]:
        return [self.ready[n] - self.posted[n] for n in self.ready]

    def controller(self) -> list[float]:
        return [self.port[n] - self.posted[n] for n in self.ready if n in self.port]

    def node(self) -> list[float]:
        return [self.ready[n] - self.port[n] for n in self.ready if n in self.port]


async def create_and_wait(client: KubeClient, ns: str, names: list[str], node: str) -> Timeline:
    """POST all pods at once; record POST, port ACTIVE in the KuryrPort, pod Ready."""
    tl = Timeline()
    pods_rv = (await client.list(PODS, ns)).resource_version
    kps_rv = (await client.list(KURYRPORTS, ns)).resource_version
    done = asyncio.Event()

    async def watch_pods() -> None:
        async for ev in client.watch(
            PODS, ns, resource_version=pods_rv, timeout_seconds=int(READY_TIMEOUT)
        ):
            name = ev.object.get("metadata", {}).get("name")
            if name in tl.posted and name not in tl.ready and is_ready(ev.object):
                tl.ready[name] = time.monotonic()
                if len(tl.ready) == len(names):
                    done.set()
                    return

    async def watch_kps() -> None:
        async for ev in client.watch(
            KURYRPORTS, ns, resource_version=kps_rv, timeout_seconds=int(READY_TIMEOUT)
        ):
            name = ev.object.get("metadata", {}).get("name")
            if name in tl.posted and name not in tl.port and vif_active(ev.object):
                tl.port[name] = time.monotonic()

    watchers = [asyncio.create_task(watch_pods()), asyncio.create_task(watch_kps())]

    async def create(name: str) -> None:
        tl.posted[name] = time.monotonic()
        await client.create(PODS, pod_body(name, node), ns)

    try:
        await asyncio.gather(*(create(n) for n in names))
        await asyncio.wait_for(done.wait(), READY_TIMEOUT)
        await asyncio.sleep(0)  # a KuryrPort event queued with the last Ready
    finally:
        for w in watchers:
            w.cancel()
    return tl


async def delete_all(client: KubeClient, ns: str) -> float:
    t0 = time.monotonic()
    pods = (await client.list_all(PODS, ns)).items
    await asyncio.gather(*(client.delete(PODS, p["metadata"]["name"], ns) for p in pods))
    deadline = time.monotonic() + READY_TIMEOUT
    while (await client.list(PODS, ns)).items or (await client.list(KURYRPORTS, ns)).items:
        if time.monotonic() > deadline:
            raise SystemExit(f"pods in {ns} not gone after {READY_TIMEOUT} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def run_mode(
    client: KubeClient, bench: BenchController, vm: Any, node: str, singles: int, burst: int
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    ns = f"{NS_PREFIX}{bench.mode}-{uuid.uuid4().hex[:6]}"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    say(f"   namespace {ns} in the overcloud API")
    try:
        bench.start()
        if bench.mode == "pool":
            # The first pod on the trunk makes the pool; then wait until it is full.
            tl = await create_and_wait(client, ns, ["warmup"], node)
            res["first pod, empty pool"] = tl.total()
            say(f"   warm-up pod Ready in {tl.total()[0]:.2f} s (fills the pool)")
            await delete_all(client, ns)
            bench.wait_pool("pool warm-up")
        singles_tl = Timeline()
        deletes: list[float] = []
        for i in range(singles):
            name = f"single-{i}"
            tl = await create_and_wait(client, ns, [name], node)
            for part in ("posted", "port", "ready"):
                getattr(singles_tl, part).update(getattr(tl, part))
            say(
                f"   {name}: Ready {tl.total()[0]:.2f} s (port ACTIVE in the KuryrPort after "
                f"{tl.controller()[0] if tl.controller() else float('nan'):.2f} s)"
            )
            deletes.append(await delete_all(client, ns))
            if bench.mode == "pool":
                bench.wait_pool("pool refill")
        res["single"] = singles_tl
        res["single delete"] = deletes
        if burst:
            say(f"   burst of {burst} pods on {node}")
            cpu0 = CpuSample.take(vm)
            t0 = time.monotonic()
            tl = await create_and_wait(client, ns, [f"b{i}" for i in range(burst)], node)
            res["burst"] = tl
            res["burst total"] = time.monotonic() - t0
            res["burst cpu"] = CpuSample.take(vm).since(cpu0)
            say(f"   all {burst} Ready after {res['burst total']:.1f} s; deleting them")
            res["burst delete"] = await delete_all(client, ns)
            say(f"   deleted (pods and KuryrPorts gone) in {res['burst delete']:.1f} s")
    finally:
        try:
            await delete_all(client, ns)
            await client.delete(NAMESPACES, ns)
        finally:
            bench.stop()
    return res


# -- main --------------------------------------------------------------------------------


async def cleanup_namespaces(client: KubeClient) -> None:
    for item in (await client.list(NAMESPACES)).items:
        name = item["metadata"]["name"]
        if name.startswith(NS_PREFIX):
            say(f"   leftover namespace {name}: deleting its pods")
            try:
                await delete_all(client, name)
            except SystemExit as exc:
                say(f"   {exc}")
            await client.delete(NAMESPACES, name)


async def clean_up(ctx: Context, conn: Any, topo: topology.Topology, kube: Any, vm: Any) -> None:
    """Every step on its own: one failing (the sandbox went down) does not skip the others,
    and the next run removes what is left before it starts."""

    async def namespaces() -> None:
        async with KubeClient.from_settings(kube) as client:
            await cleanup_namespaces(client)

    def ports() -> None:
        trunks = [i.trunk_id for i in vms.list_vms(ctx) if i.trunk_id]
        n = remove_tagged_ports(conn, f"{CLUSTER_TAG_PREFIX}{BENCH_CLUSTER}", trunks)
        n += remove_floor_leftovers(conn, topo)
        say(f"   removed {n} ports (cluster {BENCH_CLUSTER} and floor), detached first")

    steps: list[tuple[str, Any]] = [
        ("namespaces and pods", namespaces),
        ("ports", ports),
        ("guest netns", lambda: guest_cleanup(vm)),
    ]
    for what, step in steps:
        try:
            out = step()
            if asyncio.iscoroutine(out):
                await out
        except Exception as exc:  # the sandbox may be down: report, go on
            say(f"   clean-up of {what} failed: {exc!r}; the next run removes it first")


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


async def main_async(args: argparse.Namespace) -> None:
    settings = settings_from_env()
    if not settings.hybrid:
        raise SystemExit("the sandbox does not run the hybrid scenario: 'kuryr sandbox demo'")
    ctx = manager.context(settings)
    try:
        vm = vms.get_vm(ctx, args.worker)
    except Exception as exc:
        raise SystemExit(f"{exc}: run 'kuryr sandbox demo' first") from exc
    if vm.info.state != "running" or not vm.info.trunk_id:
        raise SystemExit(f"{args.worker} is not a running trunk VM: run 'kuryr sandbox demo'")
    trunk_id = vm.info.trunk_id
    conn = topology.connect(settings)
    topo = topology.ensure_base_topology(conn, lambda m: None)
    kube = load_kubeconfig(overcloud.overcloud_kubeconfig(ctx))
    sandbox_controller = overcloud.OvercloudController(ctx)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [load_line()]
    say(f"-- {started}, {load_line()}; worker {args.worker}, trunk {trunk_id}")
    results: dict[str, dict[str, Any]] = {}
    nfloor: dict[str, list[float]] = {}
    nfloor_phases: list[dict[str, list[float]]] = []
    gfloor: dict[str, list[float]] = {}
    stopped = False
    try:
        if http_ok(f"http://{BENCH_HEALTH}/readyz"):
            raise SystemExit(f"something serves {BENCH_HEALTH}: is another benchmark running?")
        say("-- leftovers of interrupted runs")
        await clean_up(ctx, conn, topo, kube, vm)
        async with KubeClient.from_settings(kube) as client:
            say(
                f"-- floor: Neutron subport create + attach + ACTIVE "
                f"({args.floor} single, bulk of {args.burst})"
            )
            nfloor = neutron_floor(conn, topo, trunk_id, args.floor, args.burst)
            nfloor_phases.append(nfloor)
            say(
                f"-- floor: guest VLAN device + CNI plugin start, inside {args.worker} "
                f"({args.guest_floor} each)"
            )
            gfloor = guest_floor(vm, args.guest_floor, trunk_vlans(conn, trunk_id))
            say("-- stopping the sandbox's overcloud-controller")
            stopped = sandbox_controller.stop()
            for mode in args.modes:
                say(f"-- mode {mode} ({load_line()})")
                bench = BenchController(ctx, topo, mode, trunk_id, args.burst)
                results[mode] = await run_mode(
                    client, bench, vm, args.worker, args.singles, args.burst
                )
                loads.append(load_line())
                # The next controller must not start with this one's free subports to
                # release (a noop-pool controller deletes them: Neutron work in the way).
                t0 = time.monotonic()
                n = remove_tagged_ports(conn, f"{CLUSTER_TAG_PREFIX}{BENCH_CLUSTER}", [trunk_id])
                say(
                    f"   removed its {n} free subports (detach + delete) in "
                    f"{time.monotonic() - t0:.1f} s"
                )
            say("-- floor again (Neutron load drifts): subport create + attach + ACTIVE")
            nfloor_phases.append(neutron_floor(conn, topo, trunk_id, args.floor, args.burst))
            nfloor = {k: [v for ph in nfloor_phases for v in ph[k]] for k in nfloor_phases[0]}
    finally:
        say("-- clean-up")
        await clean_up(ctx, conn, topo, kube, vm)
        # Only if this run stopped it and the rest of the sandbox is still up (someone may
        # have taken the sandbox down meanwhile: do not start a lone controller then).
        if stopped and sandbox_controller.pid() is None:
            if overcloud.OvercloudKubeApi(ctx).pid() is not None:
                say("   starting the sandbox's overcloud-controller again")
                sandbox_controller.start()
            else:
                say("   the sandbox is down: not starting its overcloud-controller")
        conn.close()
    loads.append(load_line())
    report(settings, started, loads, nfloor, nfloor_phases, gfloor, results, args)


def report(
    settings: Any,
    started: str,
    loads: list[str],
    nfloor: dict[str, list[float]],
    nfloor_phases: list[dict[str, list[float]]],
    gfloor: dict[str, list[float]],
    results: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    med = statistics.median
    say("")
    say(
        f"machine: {os.cpu_count()} cores, {platform.platform()}; Neutron {settings.neutron}; "
        f"started {started}; {args.worker} under QEMU TCG (1 vCPU)"
    )
    say("load: " + " -> ".join(loads))
    say("\n[floor: Neutron, from the host; both phases pooled]")
    names = {
        "create": "subport: POST /ports",
        "attach": "subport: add_subports",
        "until ACTIVE": "subport: then until ACTIVE",
        "single": "subport: create + attach + ACTIVE",
        "claim PUT": "warm path: PUT device_id (attached)",
    }
    for key, label in names.items():
        phases = ", ".join(f"{med(ph[key]) * 1000:.0f}" for ph in nfloor_phases if ph[key])
        say(fmt_ms(label, nfloor[key], f"| p50 per phase (ms): {phases}"))
    bulk = med(nfloor["bulk"]) if nfloor["bulk"] else float("nan")
    say(
        f"{args.burst} subports: 1 bulk POST + 1 add_subports + all ACTIVE: "
        + ", ".join(f"{b:.2f} s" for b in nfloor["bulk"])
    )
    bulk_claims = med(nfloor["bulk claim PUTs"]) if nfloor["bulk claim PUTs"] else float("nan")
    say(
        f"{args.burst} claim PUTs at once on attached subports: "
        + ", ".join(f"{b:.2f} s" for b in nfloor["bulk claim PUTs"])
    )
    say(f"\n[floor: inside {args.worker}, timed in the guest]")
    for key, values in gfloor.items():
        say(fmt_ms(key, values))
    dev = min(
        med(gfloor["VLAN dev + L3 (pyroute2, one process)"]),
        med(gfloor["VLAN dev + L3 (ip, 6 processes)"]),
    )
    netns = med(gfloor["netns add (ip)"])
    n_single = med(nfloor["single"])
    claim = med(nfloor["claim PUT"])
    py = med(gfloor["python3 -IS -c pass"])
    say(
        f"guest floor: VLAN device + L3 {dev * 1000:.0f} ms (+ netns {netns * 1000:.0f} ms, "
        "which overlaps the controller's work in a pod's life)"
    )
    say(
        f"guest critical path with a CNI exec (netns + python3 -IS start + VLAN device + L3): "
        f"{(netns + py + dev) * 1000:.0f} ms; kuryr-cni start "
        f"{med(gfloor['kuryr-cni VERSION']) * 1000:.0f} ms"
    )
    for mode, res in results.items():
        warm = mode == "pool"
        neutron = claim if warm else n_single
        floor = neutron + dev
        label = "warm trunk pool" if warm else "pools disabled (cold)"
        say(
            f"\n[{label}]  single-pod floor = Neutron {neutron * 1000:.0f} ms "
            f"({'claim PUT' if warm else 'create + attach + ACTIVE'}) + guest VLAN device "
            f"{dev * 1000:.0f} ms = {floor * 1000:.0f} ms"
        )
        if res.get("first pod, empty pool"):
            first = res["first pod, empty pool"][0]
            cold_up = UPSTREAM["single, cold pool"]
            say(
                f"first pod on the trunk, empty pool (waits for a batch of {args.burst} "
                f"created + attached): {first:.1f} s | upstream cold pool (batch of 10) "
                f"~{cold_up:.0f} s = {cold_up / first:.1f}x"
            )
        tl: Timeline = res["single"]
        if tl.ready:
            total = med(tl.total())
            up = (
                f"upstream no pools ~{UPSTREAM['1 pod, no pools']:.0f} s = "
                f"{UPSTREAM['1 pod, no pools'] / total:.1f}x"
                if not warm
                else f"upstream: 4 pods on a warm pool ~{UPSTREAM['4 pods, warm pool']:.0f} s"
            )
            say(
                fmt_s(
                    "single pod: POST -> Ready", tl.total(), f"| {total / floor:.1f}x floor, {up}"
                )
            )
            say(
                fmt_s(
                    "  POST -> port ACTIVE in the KuryrPort",
                    tl.controller(),
                    f"| {med(tl.controller()) / neutron:.1f}x Neutron floor",
                )
            )
            say(
                fmt_s(
                    "  port ACTIVE -> pod Ready (node side)",
                    tl.node(),
                    f"| {med(tl.node()) / dev:.1f}x guest floor",
                )
            )
            say(fmt_s("  delete (pod and KuryrPort gone)", res["single delete"]))
        if "burst" in res:
            btl: Timeline = res["burst"]
            total = res["burst total"]
            size = len(btl.ready)
            n_part = bulk_claims if warm else bulk
            if not warm:
                say(
                    f"per-pod Neutron work of a noop pool ({size} x create + attach + ACTIVE, "
                    f"one at a time): {size * n_single:.1f} s"
                )
            g_part = size * dev
            bfloor = max(n_part, g_part)
            up_key = f"{size} pods, pools" if warm else f"{size} pods, no pools"
            up = UPSTREAM.get(up_key)
            up_txt = f", upstream ~{up:.0f} s = {up / total:.1f}x" if up else ""
            say(
                f"burst floor: max(Neutron {n_part:.1f} s "
                f"({f'{size} claim PUTs at once' if warm else 'bulk create + attach + ACTIVE'}), "
                f"guest {g_part:.1f} s ({size} VLAN devices on 1 vCPU)) = {bfloor:.1f} s"
            )
            say(
                fmt_s(
                    f"burst of {size}: POST -> Ready, per pod",
                    btl.total(),
                    f"| all Ready {total:.1f} s = {size / total:.2f} pods/s, "
                    f"{total / bfloor:.1f}x floor{up_txt}",
                )
            )
            say(fmt_s("  POST -> port ACTIVE", btl.controller()))
            say(fmt_s("  port ACTIVE -> Ready", btl.node()))
            cpu = res.get("burst cpu") or {}
            if cpu:
                say("  during the burst: " + ", ".join(f"{k} {v:.0%}" for k, v in cpu.items()))
            say(f"  delete all {size}: {res['burst delete']:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--singles", type=int, default=6, help="single pods per mode, one at a time")
    p.add_argument("--burst", type=int, default=20, help="pods in the burst (0: no burst)")
    p.add_argument("--modes", default="pool,nopool", help="pool, nopool or both (comma-separated)")
    p.add_argument("--floor", type=int, default=6, help="samples of the Neutron floor")
    p.add_argument("--guest-floor", type=int, default=10, help="samples of each guest floor")
    p.add_argument("--worker", default="worker0", help="the overcloud worker VM to use")
    args = p.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("pool", "nopool") for m in args.modes):
        p.error("--modes takes pool and/or nopool")
    if args.burst < 0 or args.singles < 0 or args.floor < 1 or args.guest_floor < 1:
        p.error("counts must be positive")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
