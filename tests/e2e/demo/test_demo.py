"""The quick side-by-side run, end to end: ``kuryr sandbox demo --side-by-side``.

Runs the CLI exactly as the README's first command ends up doing, checks its exit code
and the table of checks it prints, then removes what it made (pods via kubectl, the VM
port and its netns) so the test leaks nothing. A second run must be fast and still green.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.sandbox import demo

pytestmark = pytest.mark.e2e

DemoRun = tuple[subprocess.CompletedProcess[str], float]


def test_demo_runs_green_twice_and_cleans_up(
    sandbox: Sandbox, demo_cli: Callable[..., DemoRun], remove_demo: Callable[..., None]
) -> None:
    try:
        first, _ = demo_cli("--side-by-side")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        checks = [line for line in first.stdout.splitlines() if " -> " in line]
        assert len(checks) == 4, first.stdout
        assert all(" ok " in line for line in checks), "\n".join(checks)
        assert "all checks passed" in first.stdout
        # issue 12: the output shows namespaces and their subnets
        assert "namespaces and their subnets" in first.stdout, first.stdout
        assert any(ln.split()[:1] == ["default"] for ln in first.stdout.splitlines())

        again, took = demo_cli("--side-by-side")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "pod/busybox-sleep unchanged" in again.stdout
        assert took < 120, f"a second run took {took:.0f} s"
    finally:
        remove_demo(sandbox.ctx, sandbox.conn)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert demo.vm_netns(sandbox.ctx) not in left
