"""Upstream's Service load balancer taken over on the real sandbox (Octavia, OVN provider).

An LB shaped as upstream 10.0.0's lbaasv2 driver makes it (named ``<ns>/<svc>``, VIP =
the clusterIP on the service subnet, a listener + pool + member, only upstream's
resource tag) is made through Octavia directly, with an upstream-format
KuryrLoadBalancer in a private API emulator. The takeover tags it ours; our
KuryrLoadBalancer reconciler then converges on it: still one LB for the Service, the
same listener, pool and member, ``ACTIVE``, and the clusterIP answers from the backend
before, during (probed every 0.2 s) and after. Everything is deleted at the end."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import threading
import time
from typing import Any

import pytest

from fixtures.kubeapi import KubeApi
from fixtures.sandbox import NeutronTracker, Sandbox
from functional.traffic import tcp_request, tcp_server
from kuryr_k8s.controller.crds import ensure_crds
from kuryr_k8s.controller.loadbalancers import KuryrLoadBalancerReconciler, LbSettings
from kuryr_k8s.controller.takeover_services import adopt_upstream_services
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.k8s.resources import KURYRLOADBALANCERS, NAMESPACES, SERVICES
from kuryr_k8s.model import kuryrloadbalancer as m
from kuryr_k8s.model.errors import TemporaryError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.octavia import connect as octavia_connect

pytestmark = pytest.mark.functional

WAIT = {"interval": 0.2, "wait": 120}


class Events:
    async def emit(self, obj: Any, reason: str, message: str, *, type: Any = "Normal") -> None:
        print(f"event {reason}: {message}")


def free_cluster_ip(conn: Any, subnet_id: str, cidr: str) -> str:
    """An address of the service subnet no Neutron port holds (the Service's clusterIP)."""
    used = {
        ip["ip_address"]
        for p in conn.network.ports(fixed_ips=f"subnet_id={subnet_id}")
        for ip in p.fixed_ips
    }
    net = ipaddress.ip_network(cidr)
    while True:
        ip = str(net.network_address + 0x40000 + secrets.randbelow(0x10000))
        if ip not in used:
            return ip


class Prober:
    """Asks the clusterIP from the client netns every 0.2 s; records what answered."""

    def __init__(self, netns: str, vip: str) -> None:
        self.netns, self.vip = netns, vip
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(tcp_request(self.netns, self.vip, 80, "probe"))
            except AssertionError as exc:
                self.failures.append(f"{time.monotonic():.1f}: {exc}")
            time.sleep(0.2)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


async def _takeover_and_converge(
    api: KubeApi, sandbox: Sandbox, ns: str, settings: LbSettings
) -> tuple[dict[str, Any], list[str], list[str]]:
    neutron_settings = NeutronSettings(endpoint=sandbox.settings.neutron_url, timeout=60.0)
    octavia = octavia_connect(neutron_settings, sandbox.settings.octavia_url)
    neutron = Neutron.connect(neutron_settings)
    try:
        async with KubeClient.from_settings(load_kubeconfig(api.kubeconfig)) as client:
            report = await adopt_upstream_services(client, octavia, neutron, settings)
            klbs, services = Store(), Store()
            klbs.put(await client.get(KURYRLOADBALANCERS, "web", ns))
            services.put(await client.get(SERVICES, "web", ns))
            rec = KuryrLoadBalancerReconciler(
                client, klbs, services, octavia, neutron, settings, Events()
            )
            for _ in range(60):
                try:
                    await rec.reconcile(f"{ns}/web")
                    break
                except TemporaryError:
                    await asyncio.sleep(1.0)
            return await client.get(KURYRLOADBALANCERS, "web", ns), report.adopted, report.refused
    finally:
        octavia.close()
        neutron.close()


async def _seed_api(api: KubeApi, ns: str, cluster_ip: str, backend: str, lb: Any) -> None:
    """The namespace, the Service and the KuryrLoadBalancer upstream wrote for it."""
    async with KubeClient.from_settings(load_kubeconfig(api.kubeconfig)) as client:
        await ensure_crds(client, [m.crd_manifest()])
        await client.create(NAMESPACES, {"metadata": {"name": ns}})
        svc = await client.create(
            SERVICES,
            {
                "metadata": {
                    "name": "web",
                    "namespace": ns,
                    "finalizers": [m.SERVICE_FINALIZER],
                },
                "spec": {
                    "clusterIP": cluster_ip,
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
                },
            },
            ns,
        )
        assert svc["spec"]["clusterIP"] == cluster_ip
        slices = [
            {
                "metadata": {"name": "web-1"},
                "endpoints": [{"addresses": [backend], "conditions": {"ready": True}}],
                "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            }
        ]
        spec, _ = m.klb_spec(
            svc, slices, m.ServiceLbSettings("ovn", lb.project_id, lb.vip_subnet_id, "10.96.0.0/12")
        )
        owner = {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": svc["metadata"]["uid"],
        }
        await client.create(
            KURYRLOADBALANCERS,
            {
                "apiVersion": m.API_VERSION,
                "kind": m.KIND,
                "metadata": {
                    "name": "web",
                    "namespace": ns,
                    "finalizers": [m.KLB_FINALIZER],
                    "ownerReferences": [owner],
                },
                "spec": spec,
            },
            ns,
        )
        status = {
            "loadbalancer": {
                "id": lb.id,
                "ip": cluster_ip,
                "name": lb.name,
                "port_id": lb.vip_port_id,
                "project_id": lb.project_id,
                "provider": "ovn",
                "subnet_id": lb.vip_subnet_id,
                "security_groups": [],
            }
        }
        await client.patch(KURYRLOADBALANCERS, "web", {"status": status}, ns, subresource="status")


def test_upstreams_lb_is_adopted_one_lb_active_tagged_and_answering(
    neutron: NeutronTracker,
    sandbox: Sandbox,
    octavia: Any,
    netns_factory: Any,
    kube_api: KubeApi,
) -> None:
    topo = sandbox.topo
    subnet1 = neutron.conn.network.get_subnet(topo.subnet1_id)
    plugged = []
    for name in ("kt-to-backend", "kt-to-client"):
        port = neutron.port(
            topo.net1_id,
            name=name,
            device_owner="compute:kuryr-e2e",
            binding_host_id=sandbox.settings.hostname,
            security_group_ids=[topo.default_sg_id],  # allows TCP 8080 from anywhere
        )
        plugged.append(netns_factory(port, subnet1))
    for kind, res in neutron.created:
        if kind == "port":
            neutron.wait_port_status(res.id, "ACTIVE")
    backend, client = plugged
    ns = f"kt-takeover-{secrets.token_hex(3)}"
    cluster_ip = free_cluster_ip(octavia, topo.service_subnet_id, topo.service_cidr)
    lbs = octavia.load_balancer
    lb = lbs.create_load_balancer(
        name=f"{ns}/web",  # upstream: get_service_loadbalancer_name
        vip_subnet_id=topo.service_subnet_id,
        vip_address=cluster_ip,
        provider="ovn",
        project_id=topo.project_id,
        tags=["kt-upstream"],
    )
    try:
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        listener = lbs.create_listener(
            name=f"{ns}/web:TCP:80",
            loadbalancer_id=lb.id,
            protocol="TCP",
            protocol_port=80,
            project_id=topo.project_id,
            tags=["kt-upstream"],
        )
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        pool = lbs.create_pool(
            name=f"{ns}/web:TCP:80",
            listener_id=listener.id,
            protocol="TCP",
            lb_algorithm="SOURCE_IP_PORT",
            project_id=topo.project_id,
            tags=["kt-upstream"],
        )
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        member = lbs.create_member(
            pool,
            address=backend.ip,
            protocol_port=8080,
            subnet_id=topo.subnet1_id,
            project_id=topo.project_id,
        )
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        lb = lbs.get_load_balancer(lb.id)
        asyncio.run(_seed_api(kube_api, ns, cluster_ip, backend.ip, lb))
        cluster_id = f"kt-{secrets.token_hex(6)}"
        settings = LbSettings(
            cluster_id=cluster_id,
            project_id=topo.project_id,
            vip_subnet_id=topo.service_subnet_id,
            member_subnets=((topo.subnet1_id, topo.subnet1_cidr),),
        )
        with tcp_server(backend.netns, backend.ip, 8080, tag="backend"):
            assert tcp_request(client.netns, cluster_ip, 80, "before").startswith("backend")
            with Prober(client.netns, cluster_ip) as prober:
                klb, adopted, refused = asyncio.run(
                    _takeover_and_converge(kube_api, sandbox, ns, settings)
                )
                time.sleep(1.0)
            assert tcp_request(client.netns, cluster_ip, 80, "after").startswith("backend")
        assert adopted == [f"{ns}/web"] and refused == []
        assert prober.failures == [], prober.failures
        assert prober.answers and all(a.startswith("backend") for a in prober.answers)
        named = [x for x in lbs.load_balancers(name=f"{ns}/web")]
        assert [x.id for x in named] == [lb.id]  # one LB for the Service: upstream's
        now = lbs.get_load_balancer(lb.id)
        assert now.provisioning_status == "ACTIVE"
        assert {
            f"kuryr.cluster:{cluster_id}",
            f"kuryr.owner:{klb['metadata']['ownerReferences'][0]['uid']}",
            "kt-upstream",
        } <= set(now.tags)

        def of_lb(items: Any) -> list[str]:  # the SDK does not filter these by LB
            return [
                x.id
                for x in items
                if any(
                    r["id"] == lb.id
                    for key in ("load_balancers", "loadbalancers")
                    for r in x.to_dict().get(key) or ()
                )
            ]

        assert of_lb(lbs.listeners()) == [listener.id]
        assert of_lb(lbs.pools()) == [pool.id]
        assert [x.id for x in lbs.members(pool.id)] == [member.id]  # not re-created
        assert klb["status"]["loadbalancer"]["id"] == lb.id
        ready = {c["type"]: c["status"] for c in klb["status"]["conditions"]}
        assert ready == {"Ready": "True"}, klb["status"]["conditions"]
        print(f"probes during the takeover: {len(prober.answers)} answered, 0 failed")
    finally:  # upstream's, and any a failed run made beside it (same name)
        for made in [lb, *lbs.load_balancers(name=f"{ns}/web")]:
            with contextlib.suppress(Exception):
                lbs.delete_load_balancer(made.id, cascade=True, ignore_missing=True)
            with contextlib.suppress(Exception):
                lbs.wait_for_delete(lbs.get_load_balancer(made.id), interval=0.5, wait=180)
        assert not list(lbs.load_balancers(name=f"{ns}/web"))
