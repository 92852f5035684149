"""Leader election between two controller processes on one Lease: only the leader
reconciles; when it is SIGKILLed the standby takes over (after the lease expires: a few
seconds with this test's 6 s lease) and wires new pods."""

from __future__ import annotations

import pytest

from functional.controller.conftest import World
from functional.controller.harness import converged, wait_for

pytestmark = pytest.mark.functional


def reconciles(ctl_metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in ctl_metrics.splitlines()
        if line.startswith("kuryr_reconcile_total{")
    )


def test_only_the_leader_reconciles_and_a_standby_takes_over(world: World) -> None:
    a = world.start_controller()
    a.wait_role("leader")
    b = world.start_controller()
    b.wait_role("standby")

    world.kube.create_pod("one", world.node)
    wait_for("pod one wired", lambda: converged(world.kube, {"one"}))
    assert reconciles(a.metrics()) > 0
    assert reconciles(b.metrics()) == 0, "the standby must not reconcile"
    assert a.metric("kuryr_leader") == 1 and b.metric("kuryr_leader") == 0

    a.kill()
    b.wait_role("leader")
    world.kube.create_pod("two", world.node)
    wait_for("pod two wired by the new leader", lambda: converged(world.kube, {"one", "two"}))
    assert reconciles(b.metrics()) > 0
    assert b.metric("kuryr_leader") == 1
