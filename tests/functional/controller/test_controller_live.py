"""``kuryr controller`` as a process, against the sandbox's real Neutron and a Kubernetes
API: pods get distinct, correctly tagged and bound ports; deletion gives them back; a
restart rebuilds the pools without losing or double-assigning a port.

Ports stay DOWN here (no CNI plugs them); nothing waits for ACTIVE and nothing is timed.
"""

from __future__ import annotations

from collections import Counter

import pytest

from functional.controller.conftest import World
from functional.controller.harness import (
    Ports,
    allocated,
    converged,
    port_id_of,
    wait_for,
)

pytestmark = pytest.mark.functional


def check_ports(world: World, pod_uids: dict[str, str]) -> None:
    """Every pod has exactly one port, ours, bound to its node, with the pod's SGs."""
    # A pool claim flips the owner tag off the pod's critical path: give it a moment.
    wait_for(
        "owner tags on every pod's port",
        lambda: (
            {f"kuryr.owner:{uid}" for uid in pod_uids.values()}
            <= {t for p in world.ports.all() for t in p.tags}
        ),
    )
    kps = {k["metadata"]["name"]: k for k in world.kube.kuryrports()}
    assert set(kps) == set(pod_uids)
    ports = {p.id: p for p in world.ports.all()}
    owned = Counter(Ports.owner(p) for p in ports.values() if Ports.owner(p))
    for name, uid in pod_uids.items():
        kp = kps[name]
        assert kp["spec"]["podUid"] == uid
        port = ports[port_id_of(kp)]
        assert Ports.owner(port) == uid, name
        assert owned[uid] == 1, f"{name} owns {owned[uid]} ports"
        assert f"kuryr.owner:{uid}" in port.tags
        assert f"kuryr.cluster:{world.cluster_id}" in port.tags
        assert world.extra_tag in port.tags, "[neutron_defaults] resource_tags"
        assert port.binding_host_id == world.node
        assert port.device_owner == "compute:kuryr"
        assert list(port.security_group_ids) == [world.sandbox.topo.default_sg_id]
        vif = kp["status"]["vifs"]["eth0"]["vif"]
        assert vif["macAddress"] == port.mac_address
        assert [ip["address"] for ip in vif["ips"]] == [ip["ip_address"] for ip in port.fixed_ips]
        assert vif["mtu"] == world.sandbox.topo.mtu
    used = [port_id_of(k) for k in kps.values()]
    assert len(set(used)) == len(used), "two pods share a port"
    ips = [ip["ip_address"] for p in ports.values() for ip in p.fixed_ips]
    assert len(set(ips)) == len(ips), "duplicate IPs"


def no_port_owned_by(world: World, uids: set[str]) -> bool:
    return not any(Ports.owner(p) in uids for p in world.ports.all())


def test_fifty_pods_at_once_get_distinct_ports_and_give_them_back(world: World) -> None:
    ctl = world.start_controller()
    ctl.wait_role("leader")
    names = [f"web-{i:02d}" for i in range(50)]
    uids = {n: world.kube.create_pod(n, world.node)["metadata"]["uid"] for n in names}
    world.kube.create_pod("hostnet", world.node, host_network=True)

    wait_for(
        "50 allocated KuryrPorts",
        lambda: sum(allocated(k) for k in world.kube.kuryrports()) == 50,
    )
    check_ports(world, uids)
    hostnet = next(p for p in world.kube.pods() if p["metadata"]["name"] == "hostnet")
    assert not hostnet["metadata"].get("finalizers"), "hostNetwork pods are left alone"

    def allocated_events() -> set[str]:
        """Pods with a PortAllocated Event (Events are sent in the background)."""
        events = world.kube.events()
        return {e["involvedObject"]["name"] for e in events if e["reason"] == "PortAllocated"}

    wait_for("a PortAllocated Event per pod", lambda: allocated_events() == set(names))
    assert ctl.metric("kuryr_port_allocation_seconds_count") == 50

    for n in names:
        world.kube.delete_pod(n)
    wait_for(
        "the pods to be gone",
        lambda: {p["metadata"]["name"] for p in world.kube.pods()} == {"hostnet"},
    )
    assert world.kube.kuryrports() == []
    wait_for("ports to be released", lambda: no_port_owned_by(world, set(uids.values())))
    leftovers = world.ports.all()
    # On a real v1.36.2 (issue 11) one port kept an owner that was none of the 50 pods:
    # say whose it is, so the next such run tells (a pod of this test? a KuryrPort?).
    known = {o["metadata"]["uid"]: f"pod {o['metadata']['name']}" for o in world.kube.pods()}
    known.update({u: f"deleted pod {n}" for n, u in uids.items()})
    owned = [
        f"{p.id} owner={Ports.owner(p)} ({known.get(Ports.owner(p), 'unknown uid')}) "
        f"device_id={p.device_id!r} tags={sorted(p.tags)} created={p.created_at} "
        f"updated={p.updated_at}"
        for p in leftovers
        if Ports.owner(p)
    ]
    assert not owned, "only free pool ports remain; owned: " + "; ".join(owned)
    assert all(any(t.startswith("kuryr.pool:") for t in p.tags) for p in leftovers)
    assert ctl.alive()


def test_without_pools_ports_are_created_and_deleted(world: World) -> None:
    ctl = world.start_controller(pool=False)
    ctl.wait_role("leader")
    names = [f"plain-{i}" for i in range(5)]
    uids = {n: world.kube.create_pod(n, world.node)["metadata"]["uid"] for n in names}
    wait_for("allocated", lambda: converged(world.kube, set(names)))
    check_ports(world, uids)
    for n in names:
        world.kube.delete_pod(n)
    wait_for("the pods to be gone", lambda: world.kube.pods() == [])
    wait_for("every port deleted", lambda: world.ports.all() == [])


def test_pools_are_rebuilt_after_a_kill_without_losing_or_sharing_a_port(world: World) -> None:
    ctl = world.start_controller()
    ctl.wait_role("leader")
    first = {
        f"a-{i}": world.kube.create_pod(f"a-{i}", world.node)["metadata"]["uid"] for i in range(5)
    }
    wait_for("first pods allocated", lambda: converged(world.kube, set(first)))
    before = {k["metadata"]["name"]: port_id_of(k) for k in world.kube.kuryrports()}
    named = set(before.values())
    wait_for(
        "the pool to refill", lambda: len([p for p in world.ports.all() if p.id not in named]) >= 3
    )

    # Killed with Neutron's marks possibly still on their way (they follow the ledger in
    # the background): what the KuryrPorts name is in use, every other port is free.
    ctl.kill()
    ctl.start()
    ctl.wait_role("leader")
    free = [p for p in world.ports.all() if p.id not in named]
    assert ctl.metric("kuryr_port_pool_free") == len(free), "the pool holds every free port"
    after = {k["metadata"]["name"]: port_id_of(k) for k in world.kube.kuryrports()}
    assert after == before, "pods keep their ports across the restart"

    second = {
        f"b-{i}": world.kube.create_pod(f"b-{i}", world.node)["metadata"]["uid"] for i in range(5)
    }
    wait_for("second pods allocated", lambda: converged(world.kube, set(first) | set(second)))
    check_ports(world, {**first, **second})
