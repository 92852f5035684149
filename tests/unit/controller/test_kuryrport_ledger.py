"""The KuryrPort reconciler over the real pooled provider (ledger, marks) and the batched
status watcher, both on the in-memory Neutron (``docs/design/pool-ownership.md``): a
DOWN port is watched, never ``GET`` one by one; the lease fences new ports; the wiring
histogram comes from the daemon's annotation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field

import pytest

from kuryr_k8s.controller.kuryrports import (
    FirstSeen,
    KuryrPortReconciler,
    PodNetwork,
    PodSubnet,
    port_ids_in,
)
from kuryr_k8s.controller.metrics import Metrics
from kuryr_k8s.controller.pods import PodReconciler
from kuryr_k8s.controller.pool import PooledPortProvider
from kuryr_k8s.controller.portstatus import PortStatusWatcher
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.k8s import KURYRPORTS
from kuryr_k8s.model import kuryrport as kp_model
from kuryr_k8s.model.errors import TemporaryError
from kuryr_k8s.openstack.ports import PortRequest
from unit.controller.fakes import FakeEvents, FakePorts
from unit.controller.test_reconcilers import NS, World, condition, start_caches, vif_of
from unit.k8s.fakeapi import FakeApi, FakeClock
from unit.openstack.world import PROJECT
from unit.openstack.world import World as Cloud
from unit.openstack.world import make_world as make_cloud

KEY = f"{NS}/web"


@dataclass
class Lease:
    """``may_claim``: answers in order, then ``default``."""

    answers: list[bool] = field(default_factory=list)
    default: bool = True

    def __call__(self) -> bool:
        return self.answers.pop(0) if self.answers else self.default


@dataclass
class Setup:
    k8s: World
    cloud: Cloud
    provider: PooledPortProvider
    statuses: PortStatusWatcher
    changed: list[str]
    lease: Lease
    first_seen: FirstSeen
    network: PodNetwork

    async def kuryrport_only(self) -> None:
        """The pod reconciler's part: the KuryrPort exists, no port asked for yet."""
        await self.k8s.synced()
        await self.k8s.pod_rec.reconcile(KEY)
        await self.k8s.synced()
        assert self.k8s.kp("web") is not None

    def gets_of_single_ports(self) -> int:
        return sum(
            1 for m, path in self.cloud.fake.requests if m == "GET" and path.startswith("/ports/")
        )

    def k8s_request(self) -> PortRequest:
        """The pool request of a pod on node1 with the default SGs."""
        return PortRequest(
            "node1", PROJECT, self.cloud.network, self.cloud.subnet, (self.cloud.sg,)
        )

    def port_of(self, name: str) -> str:
        kp = self.k8s.kp(name)
        assert kp is not None
        (pid,) = port_ids_in(kp)
        return pid


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    api, clock, cloud = FakeApi(), FakeClock(), make_cloud()
    async with api.client() as client:
        pods, kps, tasks = await start_caches(client, clock)

        async def live_owners() -> Collection[str]:
            return {str(kp["spec"]["podUid"]) for kp in kps.store.items()}

        async def live_refs() -> Mapping[str, str]:
            items = kps.store.items()
            return {pid: str(kp["spec"]["podUid"]) for kp in items for pid in port_ids_in(kp)}

        provider = PooledPortProvider(
            cloud.neutron, cloud.tagging, VifPoolSettings(True, 0, 4, 0, 3600), live_owners,
            live_refs=live_refs, mark_delay=3600,
        )  # fmt: skip
        await provider.rebuild()
        changed: list[str] = []
        statuses = PortStatusWatcher(cloud.neutron, changed.append, interval=0, slow_interval=0)
        network = PodNetwork(
            project_id=PROJECT,
            network_id=cloud.network,
            subnet_id=cloud.subnet,
            security_groups=(cloud.sg,),
            subnets=(PodSubnet(cloud.subnet, "10.0.0.0/24", "10.0.0.1"),),
            mtu=1442,
        )
        lease, first_seen, events, metrics = Lease(), FirstSeen(clock), FakeEvents(), Metrics()
        kp_rec = KuryrPortReconciler(
            client, pods.store, kps.store, provider, network, events, metrics=metrics,
            clock=clock, statuses=statuses, may_claim=lease, first_seen=first_seen,
        )  # fmt: skip
        pod_rec = PodReconciler(client, pods.store, kps.store, on_seen=first_seen.saw)
        # FakePorts is unused here: World's converge drives the two reconcilers only.
        k8s = World(api, client, pods, kps, FakePorts(), events, pod_rec, kp_rec, metrics)
        yield Setup(k8s, cloud, provider, statuses, changed, lease, first_seen, network)
        await provider.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.end_watches()


async def test_a_down_port_is_watched_and_becomes_active_when_the_watcher_says_so(
    setup: Setup,
) -> None:
    uid = await setup.k8s.add_pod("web")
    assert await setup.k8s.converge(KEY) == []
    kp = setup.k8s.kp("web")
    assert kp is not None and kp["status"]["state"] == "Allocated"
    pid = setup.port_of("web")
    assert (await setup.provider.find(uid)).id == pid  # type: ignore[union-attr]
    assert setup.statuses.watching == 1
    result = await setup.k8s.kp_rec.reconcile(KEY)
    assert result.requeue_after == 10.0  # a safety net only: the watcher tells
    assert await setup.statuses.poll_once() == 0 and setup.changed == []
    setup.cloud.fake.ports[pid]["status"] = "ACTIVE"
    assert await setup.statuses.poll_once() == 1
    assert setup.changed == [KEY]
    assert (await setup.k8s.kp_rec.reconcile(KEY)).requeue_after is None
    await setup.k8s.converge(KEY)
    kp = setup.k8s.kp("web")
    assert kp is not None and kp["status"]["state"] == "Active"
    assert vif_of(kp).active and condition(kp, "Active")["status"] == "True"
    assert setup.gets_of_single_ports() == 0  # statuses came from lists, owners from the ledger


async def test_a_port_deleted_in_neutron_is_replaced(setup: Setup) -> None:
    uid = await setup.k8s.add_pod("web")
    await setup.k8s.converge(KEY)
    old = setup.port_of("web")
    del setup.cloud.fake.ports[old]
    assert await setup.statuses.poll_once() == 1
    await setup.k8s.converge(KEY)
    new = setup.port_of("web")
    assert new != old and new in setup.cloud.fake.ports
    assert (await setup.provider.find(uid)).id == new  # type: ignore[union-attr]
    assert not setup.provider.owns(old)
    kp = setup.k8s.kp("web")
    assert kp is not None and condition(kp, "Repaired")["reason"] == "PortGone"


async def test_without_the_lease_no_port_is_taken(setup: Setup) -> None:
    uid = await setup.k8s.add_pod("web")
    await setup.kuryrport_only()
    other = await setup.provider.acquire(setup.k8s_request(), "other", "ns/other")
    await setup.provider.release(other.id, "other")  # free ports are there to take
    sizes = setup.provider.sizes()
    assert sum(sizes.values()) == 4
    setup.lease.default = False
    with pytest.raises(TemporaryError, match="lease may have expired"):
        await setup.k8s.kp_rec.reconcile(KEY)
    assert await setup.provider.find(uid) is None
    assert setup.provider.sizes() == sizes
    kp = setup.k8s.kp("web")
    assert kp is not None and not port_ids_in(kp)
    setup.lease.default = True
    await setup.k8s.converge(KEY)
    assert setup.port_of("web") == (await setup.provider.find(uid)).id  # type: ignore[union-attr]


async def test_a_lease_lost_between_acquire_and_status_write_names_no_port(
    setup: Setup,
) -> None:
    uid = await setup.k8s.add_pod("web")
    await setup.kuryrport_only()
    setup.lease.answers = [True, False]  # acquire allowed, then the status write fenced
    with pytest.raises(TemporaryError, match="not writing port"):
        await setup.k8s.kp_rec.reconcile(KEY)
    await setup.k8s.synced()
    kp = setup.k8s.kp("web")
    assert kp is not None and not port_ids_in(kp)
    held = await setup.provider.find(uid)
    assert held is not None  # in this leader's ledger, named by no KuryrPort
    await setup.k8s.converge(KEY)
    assert setup.port_of("web") == held.id  # the same port: one per owner
    assert setup.provider.ledger.owner_of(held.id) == uid


async def test_pod_wiring_is_observed_once_from_the_daemons_annotation(setup: Setup) -> None:
    uid = await setup.k8s.add_pod("web")
    await setup.k8s.converge(KEY)
    registry = setup.k8s.metrics.registry
    assert registry.get_sample_value("kuryr_port_allocation_seconds_count") == 1
    assert registry.get_sample_value("kuryr_pod_wiring_seconds_count") == 0
    first = setup.first_seen.wall(uid)
    assert first is not None
    plugged = {"at": first + 1.25, "node": "node1", "container": "c1", "addSeconds": 0.5}
    patch = {"metadata": {"annotations": {kp_model.PLUGGED_ANNOTATION: json.dumps(plugged)}}}
    await setup.k8s.client.patch(KURYRPORTS, "web", patch, NS)
    await setup.k8s.converge(KEY)
    await setup.k8s.kp_rec.reconcile(KEY)
    assert registry.get_sample_value("kuryr_pod_wiring_seconds_count") == 1
    assert registry.get_sample_value("kuryr_pod_wiring_seconds_sum") == pytest.approx(1.25)


async def test_a_malformed_annotation_is_ignored(setup: Setup) -> None:
    await setup.k8s.add_pod("web")
    await setup.k8s.converge(KEY)
    patch = {"metadata": {"annotations": {kp_model.PLUGGED_ANNOTATION: "{not json"}}}
    await setup.k8s.client.patch(KURYRPORTS, "web", patch, NS)
    assert await setup.k8s.converge(KEY) == []
    registry = setup.k8s.metrics.registry
    assert registry.get_sample_value("kuryr_pod_wiring_seconds_count") == 0


def test_first_seen_keeps_the_first_sight_and_tells_wiring_once() -> None:
    clock = FakeClock()
    seen = FirstSeen(clock)
    assert seen.since("u1") is None and seen.wall("u1") is None
    seen.saw("u1")
    wall = seen.wall("u1")
    clock.advance(2.5)
    seen.saw("u1")  # a later sighting does not move the start
    seen.saw("")  # pods without a uid are not tracked
    assert seen.since("u1") == 2.5 and seen.wall("u1") == wall
    assert seen.since("") is None
    assert seen.wired_once("u1") and not seen.wired_once("u1")
    seen.drop("u1")
    assert seen.since("u1") is None
    assert seen.wired_once("u1")  # a pod of the same uid seen anew counts again


async def test_without_a_watcher_the_poll_fallback_sees_the_port_become_active(
    setup: Setup,
) -> None:
    k8s = setup.k8s
    polling = KuryrPortReconciler(
        k8s.client, k8s.pods.store, k8s.kps.store, setup.provider, setup.network, k8s.events
    )
    await k8s.add_pod("web")
    await setup.kuryrport_only()
    await polling.reconcile(KEY)
    await k8s.synced()
    pid = setup.port_of("web")
    setup.cloud.fake.ports[pid]["status"] = "ACTIVE"
    for _ in range(3):
        await polling.reconcile(KEY)
        await k8s.synced()
    kp = k8s.kp("web")
    assert kp is not None and kp["status"]["state"] == "Active"


async def test_a_lease_lost_while_the_status_was_written_takes_the_naming_back(
    setup: Setup,
) -> None:
    """A process frozen between the fence and its write (the two-controllers crash test:
    a 7 s SIGSTOP) lands the write after a successor took over: the naming is undone."""
    await setup.k8s.add_pod("web")
    await setup.kuryrport_only()
    setup.lease.answers = [True, True, False]  # acquire, fence, then gone after the write
    with pytest.raises(TemporaryError, match="taken back"):
        await setup.k8s.kp_rec.reconcile(KEY)
    await setup.k8s.synced()
    kp = setup.k8s.kp("web")
    assert kp is not None and not port_ids_in(kp)
    setup.lease.default = True
    await setup.k8s.converge(KEY)
    assert setup.port_of("web")
