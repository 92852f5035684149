"""Pod and KuryrPort reconcilers over an in-memory Kubernetes API (the real client and
informers through ``httpx.MockTransport``) and an in-memory port provider. Each test
drives both reconcilers to a fixed point, then asserts on the objects and the ports."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Never

import pytest

from kuryr_k8s.controller.kuryrports import (
    PENDING_AFTER,
    KuryrPortReconciler,
    PodNetwork,
    PodSubnet,
)
from kuryr_k8s.controller.metrics import Metrics
from kuryr_k8s.controller.pods import PodReconciler, workload_of
from kuryr_k8s.k8s import KURYRPORTS, PODS, Informer, KubeClient, PatchType
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.model import kuryrport as kp_model
from kuryr_k8s.model.errors import PermanentError
from kuryr_k8s.model.vif import Vif
from kuryr_k8s.openstack.ports import OWNER_TAG_PREFIX
from unit.controller.fakes import NETWORK_ID, SUBNET_ID, FakeEvents, FakePorts
from unit.k8s.fakeapi import FakeApi, FakeClock

PODS_C = "/api/v1/pods"
KPS_C = "/apis/openstack.org/v1/kuryrports"
NS = "ns1"

NETWORK = PodNetwork(
    project_id="p1",
    network_id=NETWORK_ID,
    subnet_id=SUBNET_ID,
    security_groups=("sg1",),
    subnets=(PodSubnet(SUBNET_ID, "10.20.0.0/24", "10.20.0.1"),),
    mtu=1442,
    bridge="br-int",
)


@dataclass
class World:
    api: FakeApi
    client: KubeClient
    pods: Informer
    kps: Informer
    ports: FakePorts
    events: FakeEvents
    pod_rec: PodReconciler
    kp_rec: KuryrPortReconciler
    metrics: Metrics

    async def synced(self) -> None:
        """Wait until both caches hold exactly what the API holds."""
        for _ in range(200):
            if all(
                {
                    k: o["metadata"]["resourceVersion"]
                    for k, o in self.api.objects.get(c, {}).items()
                }
                == {
                    (o["metadata"].get("namespace"), o["metadata"]["name"]): o["metadata"][
                        "resourceVersion"
                    ]
                    for o in inf.store.items()
                }
                for c, inf in ((PODS_C, self.pods), (KPS_C, self.kps))
            ):
                return
            await asyncio.sleep(0)
        raise AssertionError("informers did not catch up")

    async def converge(self, *keys: str) -> list[Exception]:
        """Reconcile both kinds until the API stops changing; returns permanent errors."""
        errors: list[Exception] = []
        for _ in range(20):
            await self.synced()
            before = self.api.rv
            for key in keys:
                await self.pod_rec.reconcile(key)
                try:
                    await self.kp_rec.reconcile(key)
                except PermanentError as exc:
                    errors.append(exc)
            await self.synced()
            if self.api.rv == before:
                return errors
        raise AssertionError("did not converge")

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.api.objects.get(PODS_C, {}).get((NS, name))

    def kp(self, name: str) -> dict[str, Any] | None:
        return self.api.objects.get(KPS_C, {}).get((NS, name))

    async def add_pod(
        self, name: str, *, node: str | None = "node1", host_network: bool = False
    ) -> str:
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
        if node:
            spec["nodeName"] = node
        if host_network:
            spec["hostNetwork"] = True
        obj = await self.client.create(PODS, {"metadata": {"name": name}, "spec": spec}, NS)
        return str(obj["metadata"]["uid"])

    async def delete_pod(self, name: str) -> None:
        await self.client.delete(PODS, name, NS)


async def start_caches(
    client: KubeClient, clock: FakeClock
) -> tuple[Informer, Informer, list[asyncio.Task[Never]]]:
    """Synced pod and KuryrPort informers, and their tasks (cancel them at the end)."""
    pods = Informer(client, PODS, clock=clock)
    kps = Informer(client, KURYRPORTS, clock=clock)
    tasks = [asyncio.ensure_future(pods.run()), asyncio.ensure_future(kps.run())]
    await pods.wait_synced()
    await kps.wait_synced()
    return pods, kps, tasks


@pytest.fixture
async def world() -> AsyncIterator[World]:
    api = FakeApi()
    clock = FakeClock()
    async with api.client() as client:
        pods, kps, tasks = await start_caches(client, clock)
        ports, events, metrics = FakePorts(), FakeEvents(), Metrics()
        w = World(
            api,
            client,
            pods,
            kps,
            ports,
            events,
            PodReconciler(client, pods.store, kps.store),
            KuryrPortReconciler(
                client, pods.store, kps.store, ports, NETWORK, events, metrics=metrics, clock=clock
            ),
            metrics,
        )
        yield w
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.end_watches()


def vif_of(kp: dict[str, Any]) -> Vif:
    return kp_model.parse_vifs(kp)["eth0"].vif


def condition(kp: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in kp["status"]["conditions"] if c["type"] == type_)


async def test_a_scheduled_pod_gets_a_kuryrport_and_exactly_one_port(world: World) -> None:
    uid = await world.add_pod("web")
    assert await world.converge(f"{NS}/web") == []

    pod = world.pod("web")
    assert pod is not None
    assert kp_model.POD_FINALIZER in pod["metadata"]["finalizers"]
    kp = world.kp("web")
    assert kp is not None
    assert kp["spec"] == {"podUid": uid, "podNodeName": "node1", "podStatic": False}
    assert kp["metadata"]["labels"] == {kp_model.NODE_LABEL: "node1"}
    assert kp["metadata"]["ownerReferences"][0]["uid"] == uid
    assert kp["metadata"]["finalizers"] == [kp_model.KURYRPORT_FINALIZER]
    [port] = world.ports.owned_by(uid)
    assert list(world.ports.ports) == [port.id]
    assert kp["status"]["state"] == "Allocated"
    assert kp["status"]["vifs"]["eth0"]["default"] is True
    vif = vif_of(kp)
    assert (vif.vif_type, vif.port_id, vif.mac_address) == ("ovs", port.id, port.mac_address)
    assert [ip.interface for ip in vif.ips] == [f"{port.fixed_ips[0].ip_address}/24"]
    assert vif.default_gateway == "10.20.0.1"
    assert (vif.mtu, vif.bridge, vif.active) == (1442, "br-int", False)
    assert condition(kp, "Allocated")["status"] == "True"
    assert condition(kp, "Active")["reason"] == "PortDown"
    assert world.events.reasons(f"{NS}/web") == ["PortAllocated"]


async def test_host_network_and_unscheduled_pods_are_left_alone(world: World) -> None:
    await world.add_pod("host", host_network=True)
    await world.add_pod("pending", node=None)
    await world.converge(f"{NS}/host", f"{NS}/pending")
    assert world.kp("host") is None and world.kp("pending") is None
    assert not (world.pod("host") or {})["metadata"].get("finalizers")
    assert not (world.pod("pending") or {})["metadata"].get("finalizers")
    assert world.ports.ports == {}


async def test_a_down_port_is_polled_with_growing_delays_until_active(world: World) -> None:
    """Without a status watcher (the fallback): the reconciler polls the port."""
    uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    delays = [(await world.kp_rec.reconcile(f"{NS}/web")).requeue_after for _ in range(3)]
    assert delays[0] is not None and delays[0] < delays[1] < delays[2]  # type: ignore[operator]
    [port] = world.ports.owned_by(uid)
    world.ports.set_status(port.id, "ACTIVE")
    result = await world.kp_rec.reconcile(f"{NS}/web")
    assert result.requeue_after is None
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None
    assert kp["status"]["state"] == "Active"
    assert vif_of(kp).active is True
    assert condition(kp, "Active")["status"] == "True"
    registry = world.metrics.registry
    assert registry.get_sample_value("kuryr_port_allocation_seconds_count") == 1
    # wiring ends when the daemon reports ADD success (see test_kuryrport_ledger.py)
    assert registry.get_sample_value("kuryr_pod_wiring_seconds_count") == 0


async def test_deleting_the_pod_releases_the_port_then_drops_the_finalizers(
    world: World,
) -> None:
    uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    assert world.ports.owned_by(uid)
    await world.delete_pod("web")
    await world.converge(f"{NS}/web")
    assert world.ports.ports == {}
    assert world.kp("web") is None
    assert world.pod("web") is None, "the pod finalizer is gone, so the pod is deleted"


async def test_a_status_naming_another_pods_port_is_repaired_not_trusted(world: World) -> None:
    other = world.ports.make("node1", (OWNER_TAG_PREFIX + "someone-else",))
    uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None
    hacked = copy.deepcopy(kp["status"])
    hacked["vifs"]["eth0"]["vif"]["portId"] = other.id
    await world.client.patch(KURYRPORTS, "web", {"status": hacked}, NS, subresource="status")
    await world.converge(f"{NS}/web")

    kp = world.kp("web")
    assert kp is not None
    [mine] = world.ports.owned_by(uid)
    assert vif_of(kp).port_id == mine.id
    assert other.id in world.ports.ports, "the foreign port is not touched"
    assert condition(kp, "Repaired")["reason"] == "ForeignPort"
    assert "KuryrPortRepaired" in world.events.reasons(f"{NS}/web")


async def test_a_malformed_vif_is_rewritten_from_neutron(world: World) -> None:
    uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    ops = [{"op": "add", "path": "/status/vifs/eth0/vif/mtu", "value": "huge"}]
    await world.client.patch(KURYRPORTS, "web", ops, NS, patch_type=PatchType.JSON)
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None
    assert vif_of(kp).mtu == 1442
    assert vif_of(kp).port_id == world.ports.owned_by(uid)[0].id
    assert condition(kp, "Repaired")["reason"] == "InvalidVif"


async def test_a_port_made_before_a_crash_is_found_again_not_duplicated(world: World) -> None:
    uid = await world.add_pod("web")
    before = world.ports.make("node1", (OWNER_TAG_PREFIX + uid,))  # acquired, status unwritten
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None
    assert [p.id for p in world.ports.owned_by(uid)] == [before.id]
    assert vif_of(kp).port_id == before.id


async def test_deleting_a_pending_kuryrport_releases_a_port_it_never_recorded(
    world: World,
) -> None:
    uid = await world.add_pod("web")
    await world.synced()
    await world.pod_rec.reconcile(f"{NS}/web")  # KuryrPort created
    await world.synced()
    world.ports.faults.append(PermanentError("simulated crash before the status write"))
    with pytest.raises(PermanentError):
        await world.kp_rec.reconcile(f"{NS}/web")
    world.ports.make("node1", (OWNER_TAG_PREFIX + uid,))  # it had reached Neutron after all
    await world.client.patch(
        KURYRPORTS, "web", {"status": {"state": "Pending"}}, NS, subresource="status"
    )
    await world.delete_pod("web")
    await world.converge(f"{NS}/web")
    assert world.ports.ports == {}
    assert world.pod("web") is None


async def test_neutron_refusal_is_reported_on_the_kuryrport_and_the_pod(world: World) -> None:
    await world.add_pod("web")
    world.ports.refusal = PermanentError("Quota exceeded for resources: ['port'].")
    errors = await world.converge(f"{NS}/web")
    assert {str(e) for e in errors} == {"Quota exceeded for resources: ['port']."}
    kp = world.kp("web")
    assert kp is not None
    assert kp["status"]["state"] == "Failed"
    cond = condition(kp, "Allocated")
    assert (cond["status"], cond["reason"]) == ("False", "NeutronError")
    assert "Quota exceeded" in cond["message"]
    [(_, kind, reason, message)] = world.events.emitted
    assert (kind, reason) == ("Warning", "PortAllocationFailed")
    assert "Quota exceeded" in message
    # Once Neutron has room again (e.g. on the periodic resync), it recovers.
    world.ports.refusal = None
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None and kp["status"]["state"] == "Allocated"


async def test_a_kuryrport_of_an_earlier_pod_with_the_same_name_is_replaced(
    world: World,
) -> None:
    old_uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    # The pod vanished without us (finalizer removed by hand), and a new one took its name.
    del world.api.objects[PODS_C][(NS, "web")]
    new_uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None
    assert kp["spec"]["podUid"] == new_uid
    assert world.ports.owned_by(old_uid) == []
    [port] = world.ports.owned_by(new_uid)
    assert vif_of(kp).port_id == port.id


async def test_a_pod_gone_before_its_finalizer_landed_leaves_no_port_and_no_kuryrport(
    world: World,
) -> None:
    """The pod reconciler writes the finalizer and creates the KuryrPort at once: when the
    pod is already gone, the KuryrPort it made anyway is released and deleted."""
    uid = await world.add_pod("web")
    await world.synced()
    del world.api.objects[PODS_C][(NS, "web")]  # gone, our cache does not know yet
    await world.pod_rec.reconcile(f"{NS}/web")
    assert world.kp("web") is not None
    world.api.compact()
    await world.api.end_watches()
    assert await world.converge(f"{NS}/web") == []
    assert world.ports.owned_by(uid) == []
    assert world.ports.ports == {}
    assert world.kp("web") is None


async def test_an_orphan_kuryrport_is_released_and_deleted(world: World) -> None:
    uid = await world.add_pod("web")
    await world.converge(f"{NS}/web")
    del world.api.objects[PODS_C][(NS, "web")]
    world.api.compact()
    await world.api.end_watches()  # forces the informer to re-list and see the pod gone
    await world.converge(f"{NS}/web")
    assert world.ports.owned_by(uid) == []
    assert world.kp("web") is None


async def test_a_late_second_port_of_a_live_pod_is_released_and_the_status_one_kept(
    world: World,
) -> None:
    uid = await world.add_pod("web")
    other_uid = await world.add_pod("db")
    await world.converge(f"{NS}/web", f"{NS}/db")
    kp = world.kp("web")
    assert kp is not None
    mine = vif_of(kp).port_id
    late = world.ports.make("node1", (OWNER_TAG_PREFIX + uid,))  # a killed create landing late
    released = await world.kp_rec.sweep_duplicates(list(world.ports.ports.values()))
    assert released == [late.id]
    assert [p.id for p in world.ports.owned_by(uid)] == [mine]
    assert len(world.ports.owned_by(other_uid)) == 1, "single ports are left alone"
    assert await world.kp_rec.sweep_duplicates(list(world.ports.ports.values())) == []


async def test_the_sweep_waits_while_a_pods_allocation_is_in_flight(world: World) -> None:
    uid = await world.add_pod("web")
    await world.synced()
    await world.pod_rec.reconcile(f"{NS}/web")
    await world.synced()
    a = world.ports.make("node1", (OWNER_TAG_PREFIX + uid,))
    b = world.ports.make("node1", (OWNER_TAG_PREFIX + uid,))
    assert await world.kp_rec.sweep_duplicates([a, b]) == [], "no port in the status yet"
    assert len(world.ports.owned_by(uid)) == 2


async def test_a_kuryrport_pointing_at_another_node_is_put_back(world: World) -> None:
    await world.add_pod("web")
    await world.converge(f"{NS}/web")
    patch = {"metadata": {"labels": {kp_model.NODE_LABEL: "node9"}}}
    await world.client.patch(KURYRPORTS, "web", patch, NS)
    await world.converge(f"{NS}/web")
    kp = world.kp("web")
    assert kp is not None
    assert kp["metadata"]["labels"][kp_model.NODE_LABEL] == "node1"
    assert kp["spec"]["podNodeName"] == "node1"
    assert condition(kp, "Repaired")["reason"] == "NodeMismatch"


def states_written(world: World, name: str) -> list[str]:
    """Every ``status.state`` the KuryrPort ``name`` had, in order (the API's history)."""
    states: list[str] = []
    for _rv, coll, _kind, obj in world.api.history:
        if coll == KPS_C and obj["metadata"]["name"] == name:
            state = (obj.get("status") or {}).get("state", "")
            if not states or states[-1] != state:
                states.append(state)
    return states


async def test_a_prompt_acquire_writes_no_pending_state(world: World) -> None:
    """A warm pool answers at once: its pods skip the Pending status write (one API round
    trip less on every pod's critical path)."""
    await world.add_pod("web")
    await world.converge(f"{NS}/web")
    assert states_written(world, "web") == ["", "Allocated"]


async def test_a_slow_acquire_says_pending_meanwhile(world: World) -> None:
    world.ports.gate = asyncio.Event()
    await world.add_pod("web")
    await world.synced()
    await world.pod_rec.reconcile(f"{NS}/web")
    await world.synced()
    reconcile = asyncio.create_task(world.kp_rec.reconcile(f"{NS}/web"))
    await asyncio.sleep(PENDING_AFTER + 0.3)
    kp = world.kp("web")
    assert kp is not None and kp["status"]["state"] == "Pending"
    assert not reconcile.done()
    world.ports.gate.set()
    await asyncio.wait_for(reconcile, 10)
    assert states_written(world, "web") == ["", "Pending", "Allocated"]


async def test_a_reconcile_on_a_stale_cache_counts_one_allocation(world: World) -> None:
    """The second reconcile runs before its own status write reached the cache: it gets
    the same port again (idempotent) and must not observe a second allocation."""
    await world.add_pod("web")
    await world.synced()
    await world.pod_rec.reconcile(f"{NS}/web")
    await world.synced()
    await world.kp_rec.reconcile(f"{NS}/web")
    await world.kp_rec.reconcile(f"{NS}/web")  # the cache still has no status
    await world.synced()
    assert len(world.ports.ports) == 1
    registry = world.metrics.registry
    assert registry.get_sample_value("kuryr_port_allocation_seconds_count") == 1


def test_pods_share_a_turn_per_workload_and_bare_pods_per_namespace() -> None:
    store = Store()

    def pod(name: str, ns: str = "web", owners: list[dict[str, Any]] | None = None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": ns}
        if owners is not None:
            meta["ownerReferences"] = owners
        store.put({"metadata": meta})

    rs = {"kind": "ReplicaSet", "name": "web-5d", "uid": "rs-uid", "controller": True}
    cm = {"kind": "ConfigMap", "name": "cfg", "uid": "cm-uid"}
    pod("web-5d-a", owners=[rs])
    pod("web-5d-b", owners=[cm, rs])  # the controlling owner wins, wherever it is listed
    pod("helper", owners=[cm])
    pod("debug")
    pod("debug", ns="ops")
    group = workload_of(store)
    assert group("web/web-5d-a") == group("web/web-5d-b") == "owner:rs-uid"
    assert group("web/helper") == "owner:cm-uid"
    assert group("web/debug") == "namespace:web" == group("web/not-in-the-cache-yet")
    assert group("ops/debug") == "namespace:ops"
