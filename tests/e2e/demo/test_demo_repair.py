"""A rerun of ``kuryr sandbox demo`` verifies what it reuses and repairs it, saying so.

Breaks by hand, on the default sandbox: the host side of ``busybox-sleep``'s veth (the pod
end goes with it), the address of ``busybox-sleep-2``'s eth0, and the VM stand-in's veth.
The next ``demo --side-by-side`` must print one "repaired ..." line for the stand-in and
for ``busybox-sleep-2``, be green, and leave nothing broken. ``busybox-sleep`` is repaired
either by the demo (a "repaired pod busybox-sleep" line) or, if it came first, by the
product's daemon, which plugs a vanished attachment again every 10 s (a ``PortRecovered``
Event on the pod); one of the two must have happened.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.model.vif import Vif
from kuryr_k8s.sandbox import demo
from kuryr_k8s.sandbox.kuryr_components import nodeagent_state
from kuryr_k8s.sandbox.nodeagent import find_sandbox
from kuryr_k8s.sandbox.openstack import hostplug

pytestmark = pytest.mark.e2e

DemoRun = tuple[subprocess.CompletedProcess[str], float]


def _kubectl(sandbox: Sandbox, *args: str) -> Any:
    out = subprocess.run(
        ["kubectl", f"--kubeconfig={sandbox.ctx.paths.kubeconfig}", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _port_recovered_events(sandbox: Sandbox, pod: str) -> list[Any]:
    events = _kubectl(sandbox, "get", "events", "-n", "default")["items"]
    return [
        e
        for e in events
        if e.get("reason") == "PortRecovered" and (e.get("involvedObject") or {}).get("name") == pod
    ]


def test_rerun_repairs_broken_pods_and_vm_stand_in_and_says_so(
    sandbox: Sandbox, demo_cli: Callable[..., DemoRun], remove_demo: Callable[..., None]
) -> None:
    ctx = sandbox.ctx
    try:
        first, _ = demo_cli("--side-by-side")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

        kp = _kubectl(sandbox, "get", "kuryrport", "busybox-sleep")
        pod1_veth = Vif.from_dict(kp["status"]["vifs"]["eth0"]["vif"]).host_ifname
        recovered_before = len(_port_recovered_events(sandbox, "busybox-sleep"))
        pod2_netns = find_sandbox(
            "default", "busybox-sleep-2", state_dir=nodeagent_state(ctx)
        ).netns
        stand_in_netns = demo.vm_netns(ctx)
        stand_in_veth = hostplug.host_ifname(ctx, stand_in_netns)

        _sh("ip", "link", "del", pod1_veth)
        _sh("ip", "-n", pod2_netns, "addr", "flush", "dev", "eth0")
        _sh("ip", "link", "del", stand_in_veth)
        broken = demo.broken_pods(ctx)
        assert "busybox-sleep-2" in broken, broken

        second, _ = demo_cli("--side-by-side")
        out = second.stdout
        assert second.returncode == 0, out[-4000:] + second.stderr[-3000:]
        repairs = [line.strip() for line in out.splitlines() if "repaired" in line]
        assert any(
            re.match(r"repaired VM stand-in vm0 \(netns \S+_vm0, port \S+\): .*eth0 is missing", r)
            for r in repairs
        ), out
        assert any(
            re.match(r"repaired pod busybox-sleep-2: .*eth0 in \S+ has no address", r)
            for r in repairs
        ), out
        by_demo = any(r.startswith("repaired pod busybox-sleep:") for r in repairs)
        by_daemon = len(_port_recovered_events(sandbox, "busybox-sleep")) > recovered_before
        assert by_demo or by_daemon, f"nobody repaired busybox-sleep:\n{out}"
        assert len(repairs) == 2 + by_demo, repairs
        assert "all checks passed" in out, out

        # Nothing is left broken.
        assert demo.broken_pods(ctx) == {}
        port = next(iter(sandbox.conn.network.ports(name=demo.VM_NAME)))
        subnet = sandbox.conn.network.get_subnet(port.fixed_ips[0]["subnet_id"])
        assert hostplug.problems(ctx, stand_in_netns, port, subnet) == []

        # A third run finds nothing to repair.
        third, _ = demo_cli("--side-by-side")
        assert third.returncode == 0, third.stdout[-3000:]
        assert "repaired" not in third.stdout, third.stdout
    finally:
        remove_demo(ctx, sandbox.conn)
