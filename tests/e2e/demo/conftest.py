"""Helpers of the demo e2e tests: run ``kuryr sandbox demo`` as a user would, and remove
what the side-by-side demo made (its pods and the VM stand-in) so a test leaks nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kuryr_k8s.sandbox import demo
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.openstack import hostplug

DemoRun = tuple[subprocess.CompletedProcess[str], float]


def run_demo(*args: str, state_dir: Path | None = None, timeout: float = 900) -> DemoRun:
    """``kuryr sandbox demo ARGS`` in a child process; (result, seconds)."""
    env = dict(os.environ)
    if state_dir is not None:
        env["KURYR_SANDBOX_DIR"] = str(state_dir)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kuryr_k8s.cli.main", "sandbox", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    return proc, time.monotonic() - t0


def remove_side_by_side(ctx: Context, conn: object) -> None:
    """Delete the seed pods (their ports go back to the pool) and the VM stand-in."""
    subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={ctx.paths.kubeconfig}",
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
    hostplug.unplug(ctx, demo.vm_netns(ctx))
    network = conn.network  # type: ignore[attr-defined]
    for port in network.ports(name=demo.VM_NAME):
        network.delete_port(port)


@pytest.fixture
def demo_cli() -> Callable[..., DemoRun]:
    return run_demo


@pytest.fixture
def remove_demo() -> Callable[[Context, object], None]:
    return remove_side_by_side
