"""Upstream's Services: its Octavia load balancer becomes ours in place (one LB per
Service, listeners, pools and members kept), or the KuryrLoadBalancer is left exactly as
upstream wrote it, with why. The in-memory Octavia of test_loadbalancers.py, plus the LB
tag update the takeover sends; our own KuryrLoadBalancer reconciler runs afterwards."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kuryr_k8s.controller.crds import REPLACED_SPEC, upgrade_crds, upgrade_reason
from kuryr_k8s.controller.loadbalancers import KuryrLoadBalancerReconciler, LbSettings
from kuryr_k8s.controller.takeover_services import (
    KLB_CRD,
    UPSTREAM_KLB_FINALIZER,
    UPSTREAM_SERVICE_FINALIZER,
    adopt_upstream_services,
    restore_upstream_crd,
    rollback_notes,
)
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.model import kuryrloadbalancer as m
from kuryr_k8s.model.errors import TemporaryError
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.octavia import Octavia
from unit.controller.fakes import FakeEvents
from unit.controller.test_loadbalancers import FakeCloud, FakeKube, spec_for
from unit.k8s.fakeapi import FakeApi

SVC_UID = "svc-uid-1"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "upstream"
CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
KLBS = "/apis/openstack.org/v1/kuryrloadbalancers"
SERVICES = "/api/v1/services"
SETTINGS = LbSettings(
    cluster_id="c1",
    project_id="p1",
    vip_subnet_id="svc-sub",
    member_subnets=(("pod-sub", "10.20.0.0/20"),),
    external_network_id="ext-net",
    resource_tags=("k8s",),
)
OURS = {"kuryr.cluster:c1", f"kuryr.owner:{SVC_UID}", "k8s"}


class UpstreamCloud(FakeCloud):
    """FakeCloud plus what the takeover sends: ``PUT`` of an LB's tags (Octavia takes
    the LB through ``PENDING_UPDATE``)."""

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method == "PUT" and parts[:2] == ["lbaas", "loadbalancers"] and len(parts) == 3:
            lb = self.lbs.get(parts[2])
            if lb is None:
                return 404, {"faultstring": "not found"}
            if lb["provisioning_status"] != "ACTIVE":
                return 409, {"faultstring": f"Load Balancer {lb['id']} is immutable"}
            lb["tags"] = list(body["loadbalancer"]["tags"])
            self._touch(lb["id"])
            return 200, {"loadbalancer": copy.deepcopy(lb)}
        return super().__call__(method, path, body=body, params=params, headers=headers)


def upstream_lb(cloud: FakeCloud, ips: list[str], **fields: Any) -> str:
    """What upstream 10.0.0's lbaasv2 driver leaves for Service ns/web (ovn provider):
    the LB named after the Service with its clusterIP, a listener + pool per port, members."""
    lb_id = "lb-upstream"
    cloud.lbs[lb_id] = {
        "id": lb_id,
        "name": "ns/web",
        "vip_address": "10.96.0.10",
        "vip_subnet_id": "svc-sub",
        "vip_port_id": "vip-upstream",
        "provider": "ovn",
        "project_id": "p1",
        "provisioning_status": "ACTIVE",
        "tags": ["k8s"],
        "created_at": "2025-01-01T00:00:00",
        **fields,
    }
    for n, (proto, port, target) in enumerate((("TCP", 80, 8080), ("UDP", 53, 5353))):
        li, pool = f"up-listener-{n}", f"up-pool-{n}"
        cloud.listeners[li] = {
            "id": li,
            "name": f"ns/web:{proto}:{port}",
            "protocol": proto,
            "protocol_port": port,
            "loadbalancer_id": lb_id,
            "default_pool_id": pool,
            "tags": ["k8s"],
        }
        cloud.pools[pool] = {
            "id": pool,
            "name": f"ns/web:{proto}:{port}",
            "protocol": proto,
            "loadbalancer_id": lb_id,
            "listeners": [{"id": li}],
            "tags": ["k8s"],
        }
        cloud.members[pool] = [
            {
                "id": f"up-m-{n}-{ip}",
                "address": ip,
                "protocol_port": target,
                "subnet_id": "pod-sub",
                "name": f"ns/web-{ip}:{target}",
            }
            for ip in ips
        ]
    return lb_id


def seed_service(api: FakeApi, *, lb_id: str = "lb-upstream", **status: Any) -> None:
    """The Service and the KuryrLoadBalancer upstream wrote for it."""
    api.seed(
        SERVICES,
        {
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "uid": SVC_UID,
                "finalizers": [UPSTREAM_SERVICE_FINALIZER],
            },
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        },
    )
    api.seed(
        KLBS,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrLoadBalancer",
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "finalizers": [UPSTREAM_KLB_FINALIZER],
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Service", "name": "web", "uid": SVC_UID}
                ],
            },
            "spec": spec_for(["10.20.0.5", "10.20.0.6"]),
            "status": {
                **({"loadbalancer": {"id": lb_id, "name": "ns/web"}} if lb_id else {}),
                **status,
            },
        },
    )


def clients(cloud: FakeCloud) -> tuple[Octavia, Neutron]:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    return Octavia(cloud, inline=True, sleep=sleep, clock=lambda: now[0]), Neutron(
        cloud, inline=True
    )


async def reconcile_ours(api: FakeApi, cloud: FakeCloud, octavia: Octavia) -> dict[str, Any]:
    """Our KuryrLoadBalancer reconciler on what the API holds, until it converges."""
    klbs, services = Store(), Store()
    klbs.put(copy.deepcopy(api.objects[KLBS][("ns", "web")]))
    services.put(copy.deepcopy(api.objects[SERVICES][("ns", "web")]))
    rec = KuryrLoadBalancerReconciler(
        FakeKube(klbs, services),  # type: ignore[arg-type]
        klbs,
        services,
        octavia,
        Neutron(cloud, inline=True),
        SETTINGS,
        FakeEvents(),
    )
    for _ in range(20):
        try:
            await rec.reconcile("ns/web")
            break
        except TemporaryError:
            continue
    klb = klbs.get("ns/web")
    assert klb is not None
    return klb


async def test_upstreams_lb_becomes_ours_in_place_and_ours_converges_without_changes() -> None:
    api, cloud = FakeApi(), UpstreamCloud()
    lb_id = upstream_lb(cloud, ["10.20.0.5", "10.20.0.6"])
    seed_service(api)
    listeners, pools = set(cloud.listeners), set(cloud.pools)
    members = copy.deepcopy(cloud.members)
    octavia, neutron = clients(cloud)
    async with api.client() as client:
        report = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
        again = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
    assert report.adopted == ["ns/web"] and report.refused == []
    assert again.adopted == [] and again.refused == []  # idempotent: ours now
    assert set(cloud.lbs[lb_id]["tags"]) == OURS
    klb = await reconcile_ours(api, cloud, octavia)
    assert list(cloud.lbs) == [lb_id]  # no second LB
    assert set(cloud.listeners) == listeners and set(cloud.pools) == pools
    assert cloud.members == members and cloud.member_puts == 0  # nothing re-created
    assert klb["status"]["loadbalancer"]["id"] == lb_id
    assert klb["status"]["conditions"][0]["status"] == "True"


async def test_without_a_status_the_one_lb_named_after_the_service_is_adopted() -> None:
    api, cloud = FakeApi(), UpstreamCloud()
    lb_id = upstream_lb(cloud, ["10.20.0.5"])
    seed_service(api, lb_id="")  # upstream made the LB, then stopped before its status write
    octavia, neutron = clients(cloud)
    async with api.client() as client:
        report = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
    assert report.adopted == ["ns/web"]
    assert set(cloud.lbs[lb_id]["tags"]) == OURS


async def test_an_lb_that_is_not_upstreams_for_that_service_is_left_alone() -> None:
    cases = {
        "named 'ns/other', not 'ns/web'": {"name": "ns/other"},
        "in project p2, not ours": {"project_id": "p2"},
        "has VIP 10.96.0.99, the Service's clusterIP is 10.96.0.10": {"vip_address": "10.96.0.99"},
        "not on the service subnet svc-sub": {"vip_subnet_id": "elsewhere"},
        "kuryr.cluster:other (another cluster's or owner's)": {
            "tags": ["k8s", "kuryr.cluster:other"]
        },
    }
    for why, fields in cases.items():
        api, cloud = FakeApi(), UpstreamCloud()
        lb_id = upstream_lb(cloud, ["10.20.0.5"], **fields)
        before = copy.deepcopy(cloud.lbs[lb_id])
        seed_service(api)
        klb_before = copy.deepcopy(api.objects[KLBS][("ns", "web")])
        octavia, neutron = clients(cloud)
        async with api.client() as client:
            report = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
        assert report.adopted == [], why
        assert len(report.refused) == 1 and why in report.refused[0], report.refused
        assert report.refused[0].startswith("KuryrLoadBalancer ns/web: not adopted")
        assert cloud.lbs[lb_id] == before
        assert api.objects[KLBS][("ns", "web")] == klb_before


async def test_a_klb_of_an_earlier_service_or_without_service_is_left_alone() -> None:
    api, cloud = FakeApi(), UpstreamCloud()
    lb_id = upstream_lb(cloud, ["10.20.0.5"])
    seed_service(api)
    api.objects[SERVICES][("ns", "web")]["metadata"]["uid"] = "svc-uid-2"  # re-created
    octavia, neutron = clients(cloud)
    async with api.client() as client:
        report = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
        del api.objects[SERVICES][("ns", "web")]
        gone = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
    assert "belongs to an earlier Service svc-uid-1" in report.refused[0]
    assert "its Service is gone" in gone.refused[0]
    assert cloud.lbs[lb_id]["tags"] == ["k8s"]


async def test_upstreams_pool_floating_ip_gets_our_tags_a_users_does_not() -> None:
    for method, tagged in (("pool", True), ("user", False)):
        api, cloud = FakeApi(), UpstreamCloud()
        upstream_lb(cloud, ["10.20.0.5"])
        cloud.fips["fip-1"] = {
            "id": "fip-1",
            "floating_ip_address": "172.24.4.50",
            "port_id": "vip-upstream",
            "tags": ["k8s"],
        }
        info = {"ip_id": "fip-1", "ip_addr": "172.24.4.50", "alloc_method": method}
        seed_service(api, service_pub_ip_info=info)
        octavia, neutron = clients(cloud)
        async with api.client() as client:
            await adopt_upstream_services(client, octavia, neutron, SETTINGS)
        assert (set(cloud.fips["fip-1"]["tags"]) == OURS) is tagged, method
        assert ("kuryr.cluster:c1" in cloud.fips["fip-1"]["tags"]) is tagged, method


async def test_finalizers_are_upstreams_and_the_rollback_has_nothing_to_convert() -> None:
    # Upstream 10.0.0 constants.KURYRLB_FINALIZER / SERVICE_FINALIZER, as it wrote them.
    assert m.KLB_FINALIZER == UPSTREAM_KLB_FINALIZER
    assert m.KLB_FINALIZER == "kuryr.openstack.org/kuryrloadbalancer-finalizers"
    assert m.SERVICE_FINALIZER == UPSTREAM_SERVICE_FINALIZER
    assert m.SERVICE_FINALIZER == "kuryr.openstack.org/service-finalizer"
    api = FakeApi()
    seed_service(api)
    async with api.client() as client:
        notes = await rollback_notes(client)
    assert notes and "format and finalizers are upstream's already" in notes[0]


async def test_octavia_down_at_start_holds_nothing_and_changes_nothing() -> None:
    api, cloud = FakeApi(), UpstreamCloud()
    lb_id = upstream_lb(cloud, ["10.20.0.5"])
    seed_service(api)
    cloud.down = True
    octavia, neutron = clients(cloud)
    async with api.client() as client:
        report = await adopt_upstream_services(client, octavia, neutron, SETTINGS)
    assert report.adopted == []
    assert "taken over at the next start" in report.refused[0]
    assert cloud.lbs[lb_id]["tags"] == ["k8s"]


async def test_upstreams_crd_is_upgraded_for_our_status_writes_and_given_back() -> None:
    """Upstream's kuryrloadbalancers CRD has no status subresource: ours' ``/status``
    writes would 404 (and be dropped) until the leader upgrades it; the rollback puts it
    back."""
    text = (FIXTURES / "kuryrloadbalancer-crd-10.0.0.yaml").read_text()
    upstream = next(d for d in yaml.safe_load_all(text) if d)
    reason = upgrade_reason(upstream, m.crd_manifest())
    assert reason is not None and "no status subresource" in reason
    api = FakeApi()
    api.seed(CRDS_PATH, copy.deepcopy(upstream))
    async with api.client() as client:
        await upgrade_crds(client, [m.crd_manifest()])
        assert api.objects[CRDS_PATH][(None, KLB_CRD)]["spec"] == m.crd_manifest()["spec"]
        assert await restore_upstream_crd(client) == [f"CRD {KLB_CRD}: upstream's spec restored"]
        assert await restore_upstream_crd(client) == []  # done
    crd = api.objects[CRDS_PATH][(None, KLB_CRD)]
    assert crd["spec"] == upstream["spec"]
    assert REPLACED_SPEC not in (crd["metadata"].get("annotations") or {})
