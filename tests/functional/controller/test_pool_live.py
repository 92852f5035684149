"""Port providers against the sandbox's real Neutron: pools, claims, restart, races.

Ownership is the ledger's (``docs/design/pool-ownership.md``): an acquire does not touch
Neutron; Neutron's marks (``device_id``, name, tags) follow once the mark writer runs, so
the tests ``flush()`` it before they look at marks. Sizes are small (one Neutron API
worker: a bulk of 20 ports takes ~3.5 s); nothing is timed. Every test frees its pool and
releases its ports; the ``cluster`` fixture fails the test if any port tagged with its
cluster id is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Collection, Mapping

import pytest

from fixtures.sandbox import NeutronTracker
from functional.openstack.cluster import TIMEOUT, Cluster, cluster_fixture  # noqa: F401
from kuryr_k8s.controller.pool import PooledPortProvider, make_provider
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import PermanentError, TemporaryError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import IpExhausted, Neutron
from kuryr_k8s.openstack.ports import NeutronPort
from kuryr_k8s.openstack.provider import PlainPortProvider

pytestmark = pytest.mark.functional


class Owners:
    def __init__(self) -> None:
        self.uids: set[str] = set()

    async def __call__(self) -> Collection[str]:
        return set(self.uids)


class Refs:
    """What the KuryrPorts' statuses name (port id -> owner uid)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    async def __call__(self) -> Mapping[str, str]:
        return dict(self.names)


def _settings(min_: int = 0, batch: int = 3, max_: int = 0) -> VifPoolSettings:
    return VifPoolSettings(True, min_, batch, max_, 3600.0)


async def _pool(
    cluster: Cluster, owners: Owners, settings: VifPoolSettings, refs: Refs | None = None
) -> PooledPortProvider:
    pool = PooledPortProvider(
        cluster.neutron, cluster.tagging, settings, owners, live_refs=refs or Refs()
    )
    await pool.rebuild()
    return pool


def _free_ids(cluster: Cluster) -> set[str]:
    return {p.id for p in cluster.ports() if not p.device_id}


async def test_pooled_ports_are_bound_tagged_and_claimed(cluster: Cluster) -> None:
    pool = await _pool(cluster, Owners(), _settings(batch=3))
    port = await pool.acquire(cluster.request(), "uid-1", "ns/pod-1")
    await pool.marks.flush()
    seen = cluster.neutron_port(port.id)
    assert (seen.device_id, seen.name) == ("uid-1", "ns/pod-1")
    assert set(seen.tags) == set(cluster.tagging.in_use("uid-1"))
    assert seen.binding_host_id == cluster.node
    assert seen.binding_vif_type == "ovs"
    assert seen.security_group_ids == [cluster.sandbox.topo.default_sg_id]
    free = [p for p in cluster.ports() if not p.device_id]
    assert len(free) == 2
    for p in free:
        assert set(p.tags) == set(cluster.tagging.free(cluster.request().pool_key))
        assert p.binding_host_id == cluster.node
    await pool.release(port.id, "uid-1")
    assert await pool.free_all() == 3


async def test_acquire_is_idempotent_across_a_crash(cluster: Cluster) -> None:
    owners, refs = Owners(), Refs()
    doomed = await _pool(cluster, owners, _settings(batch=2), refs)
    await doomed.acquire(cluster.request(), "uid-0", "ns/warm")  # makes the pool
    first = await doomed.acquire(cluster.request(), "uid-1", "ns/pod")
    owners.uids.update({"uid-0", "uid-1"})
    refs.names[first.id] = "uid-1"  # the reconciler wrote the KuryrPort status
    # killed before its marks were written: Neutron still shows the port as free
    assert cluster.neutron_port(first.id).device_id == ""
    restarted = await _pool(cluster, owners, _settings(batch=2), refs)
    again = await restarted.acquire(cluster.request(), "uid-1", "ns/pod")
    assert again.id == first.id
    await restarted.marks.flush()
    owned = {p.device_id: p.id for p in cluster.ports() if p.device_id}
    assert owned["uid-1"] == first.id and len(owned) == 2
    await restarted.release(first.id, "uid-1")
    await restarted.release(owned["uid-0"], "uid-0")
    await restarted.free_all()


async def test_release_recycles_the_reset_port_or_deletes_above_max(cluster: Cluster) -> None:
    pool = await _pool(cluster, Owners(), _settings(batch=2, max_=1))
    a = await pool.acquire(cluster.request(), "uid-a", "ns/a")
    b = await pool.acquire(cluster.request(), "uid-b", "ns/b")
    await pool.marks.flush()
    assert _free_ids(cluster) == set()
    await pool.release(a.id, "uid-a")
    await pool.marks.flush()
    seen = cluster.neutron_port(a.id)
    assert (seen.device_id, seen.name) == ("", "")
    assert set(seen.tags) == set(cluster.tagging.free(cluster.request().pool_key))
    assert seen.security_group_ids == [cluster.sandbox.topo.default_sg_id]
    await pool.release(b.id, "uid-b")  # the pool already holds max = 1 free port
    assert cluster.neutron_port(a.id) is not None
    assert {p.id for p in cluster.ports()} == {a.id}
    c = await pool.acquire(cluster.request(), "uid-c", "ns/c")
    assert c.id == a.id  # recycled
    await pool.release(c.id, "uid-c")
    await pool.free_all()


async def test_rebuild_finds_every_free_port_and_no_used_one(cluster: Cluster) -> None:
    owners = Owners()
    pool = await _pool(cluster, owners, _settings(batch=4))
    used = await pool.acquire(cluster.request(), "alive", "ns/alive")
    owners.uids.add("alive")
    await pool.marks.flush()
    free_before = _free_ids(cluster)
    assert len(free_before) == 3

    restarted = await _pool(cluster, owners, _settings(batch=4))
    assert restarted.sizes() == {cluster.request().pool_key: 3}
    taken = [await restarted.acquire(cluster.request(), f"new-{i}", "ns/new") for i in range(3)]
    assert {p.id for p in taken} == free_before
    assert used.id not in {p.id for p in taken}
    for i, port in enumerate(taken):
        await restarted.release(port.id, f"new-{i}")
    await restarted.release(used.id, "alive")
    assert await restarted.free_all() == 4


async def test_concurrent_acquires_for_20_owners_never_share_a_port(cluster: Cluster) -> None:
    pool = await _pool(cluster, Owners(), _settings(batch=5))
    owners = [f"uid-{i}" for i in range(20)]
    ports = await asyncio.gather(
        *(pool.acquire(cluster.request(), uid, f"ns/{uid}") for uid in owners)
    )
    assert len({p.id for p in ports}) == 20
    assert len({p.fixed_ips[0].ip_address for p in ports}) == 20
    await pool.marks.flush()
    by_owner = {p.device_id: p.id for p in cluster.ports() if p.device_id}
    assert by_owner == {uid: port.id for uid, port in zip(owners, ports, strict=True)}
    await asyncio.gather(
        *(pool.release(port.id, uid) for uid, port in zip(owners, ports, strict=True))
    )
    await pool.free_all()


async def test_plain_provider_creates_on_demand_and_deletes_on_release(cluster: Cluster) -> None:
    owners = Owners()
    provider = make_provider(cluster.neutron, cluster.tagging, VifPoolSettings(), owners)
    assert isinstance(provider, PlainPortProvider)
    await provider.start()
    port = await provider.acquire(cluster.request(), "uid-1", "ns/pod")
    owners.uids.add("uid-1")
    # restarted before the status named the port: found by its marks (created with them)
    crash_restarted = PlainPortProvider(cluster.neutron, cluster.tagging, live_owners=owners)
    await crash_restarted.start()
    assert (await crash_restarted.acquire(cluster.request(), "uid-1", "ns/pod")).id == port.id
    seen = cluster.neutron_port(port.id)
    assert set(seen.tags) == set(cluster.tagging.in_use("uid-1"))
    assert seen.binding_host_id == cluster.node
    await crash_restarted.release(port.id, "uid-1")
    assert cluster.ports() == []


async def test_a_free_port_deleted_behind_the_pools_back_is_noticed_and_replaced(
    cluster: Cluster,
) -> None:
    """The pool does not re-read a port before handing it out (no Neutron call on the
    warm path); a port someone deleted is reported GONE by the one-list status read, the
    reconciler calls ``lost`` and the owner gets another port."""
    pool = await _pool(cluster, Owners(), _settings(batch=3))
    first = await pool.acquire(cluster.request(), "uid-1", "ns/one")
    await pool.marks.flush()
    victims = sorted(_free_ids(cluster))
    for victim in victims:
        await cluster.neutron.delete_port(victim)
    handed: list[str] = []
    for _ in range(len(victims) + 1):
        port = await pool.acquire(cluster.request(), "uid-2", "ns/two")
        statuses = await cluster.neutron.port_statuses([first.id, port.id])
        assert first.id in statuses
        if port.id in statuses:
            break
        handed.append(port.id)
        pool.lost(port.id)  # what the reconciler does when the watcher says GONE
    third = port
    assert set(handed) <= set(victims)
    assert third.id not in (*victims, first.id)
    assert cluster.neutron_port(third.id) is not None
    await pool.release(first.id, "uid-1")
    await pool.release(third.id, "uid-2")
    await pool.free_all()
    await pool.stop()


async def test_ip_exhaustion_through_the_pool_is_permanent_with_neutrons_reason(
    cluster: Cluster, neutron: NeutronTracker
) -> None:
    net = neutron.network(name="kt-pool-tiny")
    sub = neutron.subnet(net.id, "192.0.2.0/29", name="kt-pool-tiny-sub")  # 5 addresses
    request = cluster.request(network_id=net.id, subnet_id=sub.id)
    pool = await _pool(cluster, Owners(), _settings(batch=3))
    ports = []
    with pytest.raises(IpExhausted, match="No more IP addresses available") as info:
        for i in range(6):
            ports.append(await pool.acquire(request, f"uid-{i}", f"ns/p{i}"))
    assert isinstance(info.value, PermanentError)
    # The second batch of 3 would not fit: it is capped to what is left. (An overflowing
    # bulk would fail *and* leak its addresses on Zed, leaving 3 usable instead of 5.)
    assert len(ports) == 5
    assert len({p.fixed_ips[0].ip_address for p in ports}) == len(ports)
    for i, port in enumerate(ports):
        await pool.release(port.id, f"uid-{i}")
    assert await pool.free_all() == len(ports)


async def test_a_crash_before_the_marks_land_keeps_one_port_per_owner(cluster: Cluster) -> None:
    """Killed after it handed a pool port out (the status names it) but before any mark
    was written: the restarted provider gives the owner that port, no other."""
    owners, refs = Owners(), Refs()
    doomed = await _pool(cluster, owners, _settings(batch=3), refs)
    first = await doomed.acquire(cluster.request(), "uid-1", "ns/one")
    second = await doomed.acquire(cluster.request(), "uid-2", "ns/two")  # a pool port
    owners.uids.update({"uid-1", "uid-2"})
    refs.names.update({first.id: "uid-1", second.id: "uid-2"})
    assert cluster.neutron_port(second.id).device_id == ""  # no mark yet
    restarted = await _pool(cluster, owners, _settings(batch=3), refs)
    assert restarted.sizes() == {cluster.request().pool_key: 1}
    assert (await restarted.acquire(cluster.request(), "uid-2", "ns/two")).id == second.id
    await restarted.marks.flush()
    assert {p.device_id: p.id for p in cluster.ports() if p.device_id} == {
        "uid-1": first.id,
        "uid-2": second.id,
    }
    assert len(cluster.ports()) == 3  # no port was made
    await restarted.release(first.id, "uid-1")
    await restarted.release(second.id, "uid-2")
    await restarted.free_all()


async def _acquire_retrying(pool: PooledPortProvider, cluster: Cluster, uid: str) -> NeutronPort:
    """As the reconcile engine would: retry temporary errors. ML2/OVN answers 500
    (MechanismDriverError, Logical_Switch_Port not found) to updates of ports whose
    creation it has not finished, which a kill in the middle of a bulk makes likely."""
    for _ in range(4):
        try:
            return await pool.acquire(cluster.request(), uid, f"ns/{uid}")
        except TemporaryError:
            await asyncio.sleep(2.0)
    return await pool.acquire(cluster.request(), uid, f"ns/{uid}")


@pytest.mark.parametrize("seed", [1, 2])
async def test_killed_mid_burst_then_restarted_every_owner_has_exactly_one_port(
    cluster: Cluster, seed: int
) -> None:
    """The controller dies at a random moment of a 12-pod burst (its tasks are cancelled;
    what it already sent to Neutron completes), a new one rebuilds and converges."""
    rng = random.Random(seed)
    owners = Owners()
    uids = [f"uid-{seed}-{i}" for i in range(12)]
    owners.uids.update(uids)
    doomed_neutron = Neutron.connect(
        NeutronSettings(endpoint=cluster.sandbox.settings.neutron_url, timeout=TIMEOUT)
    )
    doomed = PooledPortProvider(doomed_neutron, cluster.tagging, _settings(batch=4), owners)
    await doomed.rebuild()
    burst = asyncio.gather(*(doomed.acquire(cluster.request(), u, f"ns/{u}") for u in uids))
    await asyncio.sleep(rng.uniform(0.3, 3.0))
    burst.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await burst
    await doomed.stop()
    doomed_neutron.close(wait=True)  # the process is gone; Neutron finishes what it got

    restarted = await _pool(cluster, owners, _settings(batch=4))
    ports = await asyncio.gather(*(_acquire_retrying(restarted, cluster, u) for u in uids))
    await restarted.marks.flush()
    by_owner: dict[str, list[str]] = {}
    for p in cluster.ports():
        if p.device_id:
            by_owner.setdefault(p.device_id, []).append(p.id)
    assert by_owner == {u: [p.id] for u, p in zip(uids, ports, strict=True)}
    assert len({p.fixed_ips[0].ip_address for p in ports}) == len(uids)
    for uid, port in zip(uids, ports, strict=True):
        await restarted.release(port.id, uid)
    await restarted.free_all()
