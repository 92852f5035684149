"""The quick side-by-side run, end to end: ``kuryr sandbox demo --side-by-side``.

Runs the CLI exactly as the README's first command ends up doing, checks its exit code
and the table of checks it prints, then removes what it made (pods via kubectl, the VM
port and its netns) so the test leaks nothing. A second run must be fast and still green.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.sandbox import demo
from kuryr_k8s.sandbox.openstack import hostplug

pytestmark = pytest.mark.e2e


def _demo() -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kuryr_k8s.cli.main", "sandbox", "demo", "--side-by-side"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return proc, time.monotonic() - t0


def test_demo_runs_green_twice_and_cleans_up(sandbox: Sandbox) -> None:
    try:
        first, _ = _demo()
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        checks = [line for line in first.stdout.splitlines() if " -> " in line]
        assert len(checks) == 4, first.stdout
        assert all(" ok " in line for line in checks), "\n".join(checks)
        assert "all checks passed" in first.stdout

        again, took = _demo()
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "pod/busybox-sleep unchanged" in again.stdout
        assert took < 120, f"a second run took {took:.0f} s"
    finally:
        kubeconfig = sandbox.ctx.paths.kubeconfig
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "delete",
                "pod",
                "--wait=true",
                "--timeout=120s",
                "--ignore-not-found",
                *demo.PODS,
            ],
            capture_output=True,
            timeout=180,
            check=False,
        )
        hostplug.unplug(sandbox.ctx, demo.VM_NETNS)
        for port in sandbox.conn.network.ports(name=demo.VM_NAME):
            sandbox.conn.network.delete_port(port)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert demo.VM_NETNS not in left
