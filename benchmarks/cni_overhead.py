"""What ``kuryr-cni`` costs a runtime per call, against ``python -c pass`` in the same run.

* ``baseline``: ``<python> -c pass`` (interpreter start, the floor for any Python plugin);
* ``VERSION``: the installed plugin answering ``VERSION`` itself (start + imports);
* ``ADD``: the installed plugin's full ADD round trip to a live daemon server over its
  unix socket (plugin start, request, daemon dispatch, result), with the VIF already in
  the cache and a binding that does no host work: the protocol overhead, excluding the
  VIF wait and the plugging itself (those are Neutron/OVN's and the kernel's).

Usage: ``python benchmarks/cni_overhead.py [-n RUNS]``. No root or sandbox needed.
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
import time
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

    async def wait_vif(self, *args: object) -> Vif:
        return VIF

    def current_vif(self, *args: object) -> Vif:
        return VIF

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


def serve(socket_path: Path) -> Callable[[], None]:
    """A daemon server in a background thread; returns its stop function."""
    loop = asyncio.new_event_loop()
    service = CniService(ReadyVifs(), Drivers([NoopBinding()]))
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


def timed(argv: list[str], env: dict[str, str], stdin: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stdout}{proc.stderr}")
    return elapsed


def summary(name: str, samples: list[float], baseline: float | None) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    ratio = f"{median / baseline:5.2f}x" if baseline else "  1.00x"
    return f"{name:<10} median {median * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms   {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sock = root / "run" / "cni.sock"
        plugin, conflist = install(
            InstallSettings(root / "bin", root / "net.d", daemon_socket=str(sock))
        )
        net = json.loads(conflist.read_text())
        conf = json.dumps({**net["plugins"][0], "name": net["name"], "cniVersion": "1.1.0"})
        netns = root / "netns"
        netns.write_text("")  # the stub binding never enters it
        stop = serve(sock)
        try:
            results: dict[str, list[float]] = {"baseline": [], "VERSION": [], "ADD": []}
            for i in range(args.runs):  # interleaved, so drift hits all three alike
                results["baseline"].append(timed([sys.executable, "-c", "pass"], {}, ""))
                results["VERSION"].append(
                    timed([str(plugin)], {"CNI_COMMAND": "VERSION"}, '{"cniVersion":"1.1.0"}')
                )
                add_env = {
                    "CNI_COMMAND": "ADD",
                    "CNI_CONTAINERID": f"bench{i}",
                    "CNI_NETNS": str(netns),
                    "CNI_IFNAME": "eth0",
                    "CNI_ARGS": "K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod",
                    "CNI_PATH": str(plugin.parent),
                }
                results["ADD"].append(timed([str(plugin)], add_env, conf))
        finally:
            stop()
    base = statistics.median(results["baseline"])
    print(f"kuryr-cni overhead, {args.runs} runs each ({sys.executable})")
    for name, samples in results.items():
        print(summary(name, samples, None if name == "baseline" else base))


if __name__ == "__main__":
    main()
