"""Crash safety: the controller is SIGKILLed at random moments during a 100-pod
create/delete burst and restarted each time; after convergence every live pod has
exactly one port, no port belongs to a pod that is gone, and no IP is used twice. The
second test runs two controllers that fight over the Lease: kills of the leader and of
the standby, and leaders frozen (SIGSTOP) past the lease and woken up again; a sampler
checks *during* the run that no port is ever named by two live KuryrPorts at once.

Ownership rests on the KuryrPort status written by the lease holder
(``docs/design/pool-ownership.md``); Neutron's marks follow, so "settled" also waits for
them.

A killed controller's last Neutron requests still land after it is dead (one API worker
takes ~3.5 s for a bulk create), possibly after its successor looked the pod's port up.
Convergence therefore includes the duplicate sweep (a live pod's extra port is released,
``port_sweep_interval``) and garbage collection (a gone pod's port is deleted once
Neutron's ``updated_at`` is older than the grace period, 20 s here).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from functional.controller.conftest import World
from functional.controller.harness import (
    ControllerProcess,
    Ports,
    allocated,
    converged,
    port_id_of,
    wait_for,
)
from kuryr_k8s.k8s.objects import Obj

pytestmark = pytest.mark.functional

PODS = 100
KILLS = 20


def burst(
    world: World,
    rng: random.Random,
    live: set[str],
    done: threading.Event,
    *,
    node: str | None = None,
    pods: int = PODS,
) -> None:
    """Create ``pods`` pods (on ``node``, default the sandbox host); delete about a third of
    them, some at once, some later."""
    try:
        created: list[str] = []
        for i in range(pods):
            name = f"crash-{i:03d}"
            world.kube.create_pod(name, node or world.node)
            created.append(name)
            live.add(name)
            if rng.random() < 0.35 and created:
                victim = rng.choice(created)
                created.remove(victim)
                live.discard(victim)
                world.kube.delete_pod(victim)
            time.sleep(rng.uniform(0.0, 0.15))
    finally:
        done.set()


def kill_until(
    ctl: ControllerProcess,
    rng: random.Random,
    done: threading.Event,
    kills: int,
    pause: tuple[float, float] = (0.5, 4.0),
    *,
    after_leading: bool = False,
) -> int:
    """SIGKILL and restart the controller at random moments, at least ``kills`` times and
    until ``done``; returns how many kills. ``after_leading``: each pause starts once the
    controller leads, so every kill lands while it reconciles (not while it starts)."""
    n = 0
    while n < kills or not done.is_set():
        if after_leading:
            ctl.wait_role("leader")
        time.sleep(rng.uniform(*pause))
        ctl.kill()
        n += 1
        time.sleep(rng.uniform(0.0, 1.0))
        ctl.start()
    return n


def shared_ports(kps: list[Obj]) -> dict[str, list[str]]:
    """Port ids named by more than one live (not deleting) KuryrPort -> their names."""
    by_port: dict[str, list[str]] = {}
    for kp in kps:
        if kp["metadata"].get("deletionTimestamp") or not allocated(kp):
            continue
        pid = port_id_of(kp)
        if pid:
            by_port.setdefault(pid, []).append(kp["metadata"]["name"])
    return {pid: names for pid, names in by_port.items() if len(names) > 1}


def check_end_state(world: World, live: set[str]) -> None:
    def settled() -> bool:
        if not converged(world.kube, live):
            return False
        uids = {p["metadata"]["uid"] for p in world.kube.pods()}
        owners = Counter(Ports.owner(p) for p in world.ports.all() if Ports.owner(p))
        return set(owners) == uids and set(owners.values()) == {1}

    wait_for("convergence after the burst", settled)
    kps = {k["metadata"]["name"]: k for k in world.kube.kuryrports()}
    pod_uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.kube.pods()}
    ports = world.ports.all()
    owners = Counter(Ports.owner(p) for p in ports if Ports.owner(p))
    live_uids = set(pod_uids.values())
    assert set(pod_uids) == live and set(kps) == live
    assert shared_ports(list(kps.values())) == {}
    for name, uid in pod_uids.items():
        mine = [(p.id, p.device_id, sorted(p.tags), p.name) for p in ports if Ports.owner(p) == uid]
        assert owners[uid] == 1, f"{name} ({uid}) owns {owners[uid]} ports: {mine}"
        port = next(p for p in ports if p.id == port_id_of(kps[name]))
        assert Ports.owner(port) == uid
    leaked = {uid: n for uid, n in owners.items() if uid not in live_uids}
    assert leaked == {}, f"ports of pods that are gone: {leaked}"
    ips = [ip["ip_address"] for p in ports for ip in p.fixed_ips]
    assert len(ips) == len(set(ips)), "duplicate IPs"
    free = [p for p in ports if not Ports.owner(p)]
    assert all(any(t.startswith("kuryr.pool:") for t in p.tags) for p in free)


@pytest.mark.parametrize("seed", [20261128])
def test_two_controllers_fighting_over_the_lease_never_share_a_port(
    world: World, seed: int
) -> None:
    rng = random.Random(seed)
    ctls = [world.start_controller(gc_grace=20.0), world.start_controller(gc_grace=20.0)]
    wait_for("a leader", lambda: any(c.is_leader() for c in ctls))
    live: set[str] = set()
    done = threading.Event()
    violations: list[dict[str, list[str]]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            shared = shared_ports(world.kube.kuryrports())
            if shared:
                violations.append(shared)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    producer = threading.Thread(target=burst, args=(world, rng, live, done), daemon=True)
    producer.start()
    disruptions = frozen = 0
    while disruptions < 20 or not done.is_set():
        time.sleep(rng.uniform(0.5, 3.0))
        leaders = [c for c in ctls if c.alive() and c.is_leader()]
        victim = leaders[0] if leaders and rng.random() < 0.7 else rng.choice(ctls)
        if leaders and victim is leaders[0] and rng.random() < 0.3:
            victim.pause()  # frozen past the lease: the other one takes over
            time.sleep(rng.uniform(7.0, 10.0))
            victim.resume()  # wakes up believing it leads, with a stale pool in memory
            frozen += 1
        else:
            victim.kill()
            time.sleep(rng.uniform(0.0, 1.0))
            victim.start()
        disruptions += 1
    producer.join()
    wait_for("a leader", lambda: any(c.alive() and c.is_leader() for c in ctls))
    check_end_state(world, live)
    sampling.set()
    sampler.join()
    assert violations == [], f"ports named by two live KuryrPorts at once: {violations[:3]}"
    assert frozen >= 1, "the seed froze no leader: pick another"


@pytest.mark.parametrize("seed", [20261126])
def test_sigkill_during_a_burst_leaks_nothing_and_duplicates_nothing(
    world: World, seed: int
) -> None:
    rng = random.Random(seed)
    ctl = world.start_controller(gc_grace=20.0)
    ctl.wait_role("leader")
    live: set[str] = set()
    done = threading.Event()
    producer = threading.Thread(target=burst, args=(world, rng, live, done), daemon=True)
    producer.start()
    kills = kill_until(ctl, rng, done, KILLS)
    producer.join()
    ctl.wait_role("leader")
    check_end_state(world, live)
    assert ctl.starts == kills + 1
