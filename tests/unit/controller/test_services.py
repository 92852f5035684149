"""The Service reconciler over an in-memory Kubernetes API (the real client and informers
through ``httpx.MockTransport``): Service + EndpointSlices -> KuryrLoadBalancer. Each test
reconciles to a fixed point and asserts on the objects the API holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from kuryr_k8s.controller.services import SLICES_BY_SERVICE, ServiceReconciler, slice_service_key
from kuryr_k8s.k8s import ENDPOINTSLICES, SERVICES, Informer, KubeClient
from kuryr_k8s.k8s.resources import KURYRLOADBALANCERS
from kuryr_k8s.model import kuryrloadbalancer as m
from unit.controller.fakes import FakeEvents
from unit.k8s.fakeapi import FakeApi, FakeClock

NS = "ns1"
SVC_C = "/api/v1/services"
KLB_C = "/apis/openstack.org/v1/kuryrloadbalancers"
SETTINGS = m.ServiceLbSettings("ovn", "p1", "svc-sub", "10.96.0.0/12")


@dataclass
class World:
    api: FakeApi
    client: KubeClient
    informers: list[Informer]
    events: FakeEvents
    rec: ServiceReconciler

    async def synced(self) -> None:
        for _ in range(400):
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
                for c, inf in zip(
                    (SVC_C, "/apis/discovery.k8s.io/v1/endpointslices", KLB_C),
                    self.informers,
                    strict=True,
                )
            ):
                return
            await asyncio.sleep(0)
        raise AssertionError("informers did not catch up")

    async def converge(self, key: str = f"{NS}/web") -> None:
        for _ in range(20):
            await self.synced()
            before = self.api.rv
            await self.rec.reconcile(key)
            await self.synced()
            if self.api.rv == before:
                return
        raise AssertionError("did not converge")

    def klb(self) -> dict[str, Any] | None:
        return self.api.objects.get(KLB_C, {}).get((NS, "web"))

    def svc(self) -> dict[str, Any] | None:
        return self.api.objects.get(SVC_C, {}).get((NS, "web"))

    async def put_service(self, **spec: Any) -> dict[str, Any]:
        body = {
            "metadata": {"name": "web"},
            "spec": {
                "clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                **spec,
            },
        }
        old = self.svc()
        if old is None:
            return await self.client.create(SERVICES, body, NS)
        body["metadata"] = old["metadata"]
        return await self.client.replace(SERVICES, {**old, **body})

    async def put_slice(self, *ips: str, ready: bool = True) -> None:
        body = {
            "metadata": {"name": "web-1", "labels": {m.SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }
        old = self.api.objects.get("/apis/discovery.k8s.io/v1/endpointslices", {}).get(
            (NS, "web-1")
        )
        if old is None:
            await self.client.create(ENDPOINTSLICES, body, NS)
        else:
            body["metadata"] = old["metadata"]
            await self.client.replace(ENDPOINTSLICES, {**old, **body})


@pytest.fixture
async def world() -> AsyncIterator[World]:
    api = FakeApi()
    clock = FakeClock()
    async with api.client() as client:
        services = Informer(client, SERVICES, clock=clock)
        slices = Informer(
            client, ENDPOINTSLICES, clock=clock, indexers={SLICES_BY_SERVICE: slice_service_key}
        )
        klbs = Informer(client, KURYRLOADBALANCERS, clock=clock)
        informers = [services, slices, klbs]
        tasks = [asyncio.ensure_future(i.run()) for i in informers]
        for i in informers:
            await i.wait_synced()
        events = FakeEvents()
        rec = ServiceReconciler(client, services.store, slices.store, klbs.store, SETTINGS, events)
        yield World(api, client, informers, events, rec)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.end_watches()


async def test_service_and_slices_become_an_owned_klb_that_follows_the_endpoints(
    world: World,
) -> None:
    w = world
    svc = await w.put_service()
    await w.put_slice("10.20.0.5")
    await w.converge()
    klb = w.klb()
    assert klb is not None
    assert klb["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert m.KLB_FINALIZER in klb["metadata"]["finalizers"]
    assert m.SERVICE_FINALIZER in (w.svc() or {})["metadata"]["finalizers"]
    assert klb["spec"]["ip"] == "10.96.0.10"
    assert klb["spec"]["endpointSlices"][0]["endpoints"][0]["addresses"] == ["10.20.0.5"]

    await w.put_slice("10.20.0.6", "10.20.0.7")
    await w.converge()
    klb = w.klb()
    assert klb is not None
    addresses = [e["addresses"][0] for e in klb["spec"]["endpointSlices"][0]["endpoints"]]
    assert addresses == ["10.20.0.6", "10.20.0.7"]


async def test_headless_service_gets_no_klb_and_loses_the_one_it_had(world: World) -> None:
    w = world
    await w.put_service()
    await w.converge()
    assert w.klb() is not None
    await w.client.delete(SERVICES, "web", NS)  # finalizer: only marked as deleting
    await w.converge()
    # the KLB is deleting (its own finalizer is the LB reconciler's); drop it as that would
    klb = w.klb()
    assert klb is not None and klb["metadata"].get("deletionTimestamp")
    await w.client.patch(KURYRLOADBALANCERS, "web", {"metadata": {"finalizers": None}}, NS)
    await w.converge()
    assert w.klb() is None
    assert w.svc() is None  # the Service finalizer went once its KLB was gone


async def test_unsupported_features_are_warning_events_not_failures(world: World) -> None:
    w = world
    await w.put_service(sessionAffinity="ClientIP")
    await w.converge()
    assert w.klb() is not None
    # one distinct Event (repeats are counted by the real recorder)
    [(key, kind, reason, message)] = set(w.events.emitted)
    assert (key, kind, reason) == (f"{NS}/web", "Warning", "UnsupportedServiceFeature")
    assert "sessionAffinity" in message


async def test_a_klb_of_an_earlier_service_of_that_name_is_replaced(world: World) -> None:
    w = world
    await w.put_service()
    await w.converge()
    old = w.klb()
    assert old is not None
    # The Service is replaced by another of that name (new uid), the old KLB still there.
    await w.client.patch(SERVICES, "web", {"metadata": {"finalizers": None}}, NS)
    await w.client.delete(SERVICES, "web", NS)
    new = await w.put_service()
    await w.converge()
    klb = w.klb()
    assert klb is not None and klb["metadata"].get("deletionTimestamp")  # the old one goes
    await w.client.patch(KURYRLOADBALANCERS, "web", {"metadata": {"finalizers": None}}, NS)
    await w.converge()
    klb = w.klb()
    assert klb is not None
    assert klb["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]


async def test_source_ranges_are_left_to_the_load_balancer_or_named_as_ignored(
    world: World,
) -> None:
    """On ``type: LoadBalancer`` the KuryrLoadBalancer reconciler applies (or reports)
    them, so no blanket "ignored" warning; on a ClusterIP Service they are ignored, said so."""
    w = world
    await w.put_service(type="LoadBalancer", loadBalancerSourceRanges=["192.0.2.0/24"])
    await w.converge()
    assert w.klb() is not None
    assert not w.events.emitted
    await w.put_service(type="ClusterIP", loadBalancerSourceRanges=["192.0.2.0/24"])
    await w.converge()
    [(_, kind, reason, message)] = set(w.events.emitted)
    assert (kind, reason) == ("Warning", "UnsupportedServiceFeature")
    assert "loadBalancerSourceRanges are ignored" in message and "type LoadBalancer" in message
