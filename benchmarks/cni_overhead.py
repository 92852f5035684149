"""What ``kuryr-cni`` costs a runtime per call, against ``python -c pass`` in the same run.

* ``baseline``: ``<python> -c pass`` (interpreter start, the floor for any Python plugin);
* ``VERSION``: the installed plugin answering ``VERSION`` itself (start + imports);
* ``ADD``: the installed plugin's full ADD round trip to a live daemon server over its
  unix socket (plugin start, request, daemon dispatch, result), with the VIF already in
  the cache and a binding that does no host work: the protocol overhead, excluding the
  VIF wait and the plugging itself (those are Neutron/OVN's and the kernel's).

* ``ADD+plug`` (``--sandbox``, root): the same round trip with the real OVS binding on the
  sandbox: a real Neutron port bound to this chassis, veth into a fresh netns, br-int row,
  and the wait for ``ovn-installed``; each ADD is followed by a DEL (not timed).

Usage: ``python benchmarks/cni_overhead.py [-n RUNS] [--sandbox]``. Without ``--sandbox``
neither root nor the sandbox is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from kuryr_k8s.cni.binding import Attachment, Drivers, Plugged
from kuryr_k8s.cni.daemon.server import DaemonServer, Metrics
from kuryr_k8s.cni.daemon.service import CniService
from kuryr_k8s.cni.install import InstallSettings, install
from kuryr_k8s.model.vif import Vif

VIF = Vif.from_dict(
    {
        "vifType": "ovs",
        "portId": str(uuid.uuid4()),
        "macAddress": "fa:16:3e:00:00:01",
        "networkId": str(uuid.uuid4()),
        "mtu": 1442,
        "active": True,
        "bridge": "br-int",
        "ips": [
            {
                "address": "10.20.0.5",
                "cidr": "10.20.0.0/24",
                "subnetId": str(uuid.uuid4()),
                "gateway": "10.20.0.1",
            }
        ],
    }
)


class ReadyVifs:
    synced = True

    def __init__(self, vif: Vif = VIF) -> None:
        self.vif = vif

    async def wait_vif(self, *args: object) -> Vif:
        return self.vif

    def current_vif(self, *args: object) -> Vif:
        return self.vif

    def has_pod(self, pod_key: str) -> bool:
        return True


class NoopBinding:
    vif_type = "ovs"

    def plug(self, att: Attachment, vif: Vif) -> None:
        pass

    def unplug(self, plugged: Plugged) -> None:
        pass

    def plugged(self) -> list[Plugged]:
        return []

    def check(self, att: Attachment, vif: Vif) -> list[str]:
        return []

    def ready(self, att: Attachment, vif: Vif) -> bool:
        return True

    def healthy(self) -> None:
        return None


def serve(socket_path: Path, service: CniService) -> Callable[[], None]:
    """A daemon server in a background thread; returns its stop function."""
    loop = asyncio.new_event_loop()
    server = DaemonServer(service, Metrics(), lambda: None)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start(socket_path, None))
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait()

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    return stop


TIMER = """
import json, subprocess, sys, time
out = []
for job in json.load(sys.stdin):
    start = time.perf_counter()
    proc = subprocess.run(job["argv"], input=job["stdin"], env=job["env"],
                          capture_output=True, text=True)
    out.append([time.perf_counter() - start, proc.returncode, proc.stdout[-300:]])
print(json.dumps(out))
"""


def timed(jobs: list[tuple[list[str], dict[str, str], str]]) -> list[float]:
    """Run the jobs one after another from a small, fresh timer process and return each
    one's wall time. Forking from this (large) process would add its own cost, which a
    runtime (a Go binary) does not pay."""
    body = json.dumps([{"argv": a, "env": e, "stdin": i} for a, e, i in jobs])
    proc = subprocess.run(
        [sys.executable, "-I", "-c", TIMER], input=body, capture_output=True, text=True, check=True
    )
    out = []
    for (argv, _, _), (elapsed, rc, stdout) in zip(jobs, json.loads(proc.stdout), strict=True):
        if rc != 0:
            raise SystemExit(f"{argv[0]} failed: {stdout}")
        out.append(float(elapsed))
    return out


def summary(name: str, samples: list[float], baseline: float | None) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    ratio = f"{median / baseline:5.2f}x" if baseline else "  1.00x"
    return f"{name:<10} median {median * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms   {ratio}"


def add_env(i: int, netns: Path, plugin: Path, command: str = "ADD") -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": f"bench{i}",
        "CNI_NETNS": str(netns),
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod",
        "CNI_PATH": str(plugin.parent),
    }


def measure(runs: int, sandbox: bool) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sock, sock_real = root / "run" / "cni.sock", root / "run-real" / "cni.sock"
        plugin, conflist = install(
            InstallSettings(root / "bin", root / "net.d", daemon_socket=str(sock))
        )
        net = json.loads(conflist.read_text())
        plugin_conf = {**net["plugins"][0], "name": net["name"], "cniVersion": "1.1.0"}
        conf = json.dumps(plugin_conf)
        conf_real = json.dumps({**plugin_conf, "daemonSocket": str(sock_real)})
        netns = root / "netns"
        netns.write_text("")  # the no-op binding never enters it
        version_stdin = '{"cniVersion":"1.1.0"}'
        results: dict[str, list[float]] = {"baseline": [], "VERSION": [], "ADD": []}
        stop = serve(sock, CniService(ReadyVifs(), Drivers([NoopBinding()])))
        try:
            for i in range(runs):  # interleaved, so drift hits all alike
                jobs = [
                    ([sys.executable, "-c", "pass"], {}, ""),
                    ([str(plugin)], {"CNI_COMMAND": "VERSION"}, version_stdin),
                    ([str(plugin)], add_env(i, netns, plugin), conf),
                ]
                for name, elapsed in zip(results, timed(jobs), strict=True):
                    results[name].append(elapsed)
        finally:
            stop()
        if not sandbox:
            return results
        # Separately: OVS/OVN work after each plug would disturb the numbers above.
        real = RealPlug()
        stop = serve(sock_real, real.service())
        results["ADD+plug"] = []
        try:
            for i in range(runs):
                pod_ns = real.netns(i)
                add, _ = timed(
                    [
                        ([str(plugin)], add_env(i, pod_ns, plugin), conf_real),
                        ([str(plugin)], add_env(i, pod_ns, plugin, "DEL"), conf_real),
                    ]
                )
                results["ADD+plug"].append(add)
        finally:
            stop()
            real.close()
    return results


class RealPlug:
    """A Neutron port bound to this chassis and the real OVS binding (``--sandbox``)."""

    def __init__(self) -> None:
        from kuryr_k8s.cni.host.ovs import Ovsdb
        from kuryr_k8s.sandbox.openstack import topology
        from kuryr_k8s.sandbox.paths import paths_for
        from kuryr_k8s.sandbox.settings import settings_from_env

        settings = settings_from_env()
        self.conn = topology.connect(settings)
        topo = topology.ensure_base_topology(self.conn, lambda msg: None)
        subnet = self.conn.network.get_subnet(topo.subnet1_id)
        self.port = self.conn.network.create_port(
            network_id=topo.net1_id,
            project_id=topo.project_id,
            binding_host_id=settings.hostname,
            device_owner="compute:kuryr-bench",
            security_group_ids=[topo.default_sg_id],
        )
        fixed = self.port.fixed_ips[0]
        doc = VIF.to_dict() | {
            "portId": self.port.id,
            "macAddress": self.port.mac_address,
            "networkId": topo.net1_id,
            "mtu": topo.mtu,
            "ips": [
                {
                    "address": fixed["ip_address"],
                    "cidr": subnet.cidr,
                    "subnetId": subnet.id,
                    "gateway": subnet.gateway_ip,
                }
            ],
        }
        self.vif = Vif.from_dict(doc)
        self.ovsdb = Ovsdb(f"unix:{paths_for(settings).ovs_db_sock}")
        self.namespaces: list[str] = []

    def service(self) -> CniService:
        from kuryr_k8s.cni.ovs_binding import OvsBinding

        binding = OvsBinding(self.ovsdb, f"bench-{uuid.uuid4().hex[:8]}")
        return CniService(ReadyVifs(self.vif), Drivers([binding]))

    def netns(self, i: int) -> Path:
        name = f"kbench-{uuid.uuid4().hex[:6]}-{i}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)
        return Path("/var/run/netns") / name

    def close(self) -> None:
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "delete", name], check=False)
        self.ovsdb.close()
        self.conn.network.delete_port(self.port, ignore_missing=True)
        self.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=50)
    parser.add_argument("--sandbox", action="store_true", help="also ADD with real plugging")
    args = parser.parse_args()
    results = measure(args.runs, args.sandbox)
    base = statistics.median(results["baseline"])
    print(f"kuryr-cni overhead, {args.runs} runs each ({sys.executable})")
    for name, samples in results.items():
        print(summary(name, samples, None if name == "baseline" else base))


if __name__ == "__main__":
    main()
