"""The main job, end to end: ``kuryr sandbox demo`` (the seed's hybrid scenario).

Real Neutron/OVN/OVS, real QEMU VMs on trunks, the overcloud's node side inside them.
Checks the exit code and the printed tables, that a second run reuses the VMs and is
fast, that deleting a nested pod gives its subport back (to the trunk's pool, reset, or
detached), and that tearing everything down leaves no VM, tap, subport or port behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.sandbox import demo, demo_service, hybrid, naming, overcloud, vm
from kuryr_k8s.sandbox.openstack import hostplug

pytestmark = pytest.mark.e2e


def _demo() -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kuryr_k8s.cli.main", "sandbox", "demo"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    return proc, time.monotonic() - t0


def _kubectl(kubeconfig: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _vm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuryr_k8s.cli.main", "sandbox", "vm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _teardown(sandbox: Sandbox) -> None:
    okube = overcloud.overcloud_kubeconfig(sandbox.ctx)
    _kubectl(
        okube,
        "delete",
        "pod",
        "--wait=true",
        "--timeout=180s",
        "--ignore-not-found",
        *hybrid.NESTED_PODS,
    )
    # The Service first: its finalizer holds it until its Octavia LB is deleted.
    _kubectl(sandbox.ctx.paths.kubeconfig, "delete", "service", "--wait=true",
             "--timeout=180s", "--ignore-not-found", demo_service.SERVICE)  # fmt: skip
    _kubectl(
        sandbox.ctx.paths.kubeconfig,
        "delete",
        "pod",
        "--wait=true",
        "--timeout=180s",
        "--ignore-not-found",
        *demo.PODS,
    )
    for name in (hybrid.PLAIN_VM, *hybrid.WORKERS):
        _vm("delete", name)
    hostplug.unplug(sandbox.ctx, demo.vm_netns(sandbox.ctx))
    net = sandbox.conn.network
    for port in net.ports(name=demo.VM_NAME):
        net.delete_port(port)
    # The overcloud's pool subports (detached when their trunk went with its VM).
    for port in net.ports(tags=[f"kuryr.cluster:{overcloud.CLUSTER_ID}"]):
        net.delete_port(port)


def test_hybrid_scenario_green_twice_then_nothing_left(sandbox: Sandbox) -> None:
    try:
        first, took_first = _demo()
        out = first.stdout
        assert first.returncode == 0, out[-4000:] + first.stderr[-4000:]
        checks = [line for line in out.splitlines() if " -> " in line and "ok" in line.split()]
        assert len(checks) == 13, out[-4000:]  # 11 ICMP/HTTP + the Service from 2 clients
        assert "all checks passed" in out
        vlans = json.loads(re.search(r"nested VLAN ids (\[[^\]]*\])", out).group(1))  # type: ignore[union-attr]
        assert len(vlans) == 3 and all(isinstance(v, int) for v in vlans), vlans
        # nested-1 and nested-3 share worker0's trunk: their VLAN ids differ.
        assert vlans[0] != vlans[2], vlans

        again, took = _demo()
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        assert "pod/nested-1 unchanged" in again.stdout
        assert took < max(120.0, took_first / 2), f"a second run took {took:.0f} s"

        # A deleted nested pod gives its subport back: reset in the trunk's pool or gone.
        okube = overcloud.overcloud_kubeconfig(sandbox.ctx)
        kp = json.loads(_kubectl(okube, "get", "kuryrport", "nested-1", "-o", "json").stdout)
        port_id = kp["status"]["vifs"]["eth0"]["vif"]["portId"]
        uid = kp["spec"]["podUid"]
        deleted = _kubectl(okube, "delete", "pod", "nested-1", "--wait=true", "--timeout=180s")
        assert deleted.returncode == 0, deleted.stderr
        deadline = time.monotonic() + 120
        while True:
            port = sandbox.conn.network.find_port(port_id)
            if port is None or port.device_id != uid:
                break
            assert time.monotonic() < deadline, f"port {port_id} still owned by {uid}"
            time.sleep(1)
    finally:
        _teardown(sandbox)
    left = _vm("list").stdout
    for name in (hybrid.PLAIN_VM, *hybrid.WORKERS):
        assert not re.search(rf"^{name}\s", left, re.M), left
    qemu = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    assert str(sandbox.ctx.paths.root) not in qemu, qemu
    tagged = list(sandbox.conn.network.ports(tags=[f"kuryr.cluster:{overcloud.CLUSTER_ID}"]))
    assert tagged == [], [p.id for p in tagged]
    trunks = [t for t in sandbox.conn.network.trunks() if t.name.startswith("worker")]
    assert trunks == [], [t.name for t in trunks]
    assert vm.machine.orphan_taps(sandbox.ctx) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert demo.vm_netns(sandbox.ctx) not in netns.split()
    sid = naming.sandbox_id(sandbox.ctx.paths.root)
    pods = [n for n in naming.owned_netns(sid, netns.split()) if "_default-busybox" in n]
    assert pods == [], netns
