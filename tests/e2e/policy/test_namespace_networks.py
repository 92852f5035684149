"""Namespace networks on the real sandbox: Namespace → KuryrNetwork → network, subnet from
the subnet pool, interface on router1; traffic between namespaces through the router;
a restarted controller adopts (no second network); deleting a namespace waits for its
ports, then removes network, subnet and router interface, and nothing is left.

The namespace reconciler runs in-process against a private API emulator; pod ports are
created on the network the :class:`NamespacePlacement` answers (what the KuryrPort
reconciler will do once it calls the placement).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest

from e2e.policy.env import TEST_DEVICE_OWNER, sandbox_pod_network
from fixtures.kubeapi import KubeApi
from fixtures.sandbox import Sandbox
from functional.traffic import ping
from kuryr_k8s.controller.crds import ensure_crds
from kuryr_k8s.controller.health import HealthState
from kuryr_k8s.controller.namespaces import (
    NAMESPACE_TAG,
    NamespaceParts,
    PlacementSettings,
    build_namespace_parts,
)
from kuryr_k8s.controller.service import Controller
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.resources import KURYRNETWORKS, NAMESPACES
from kuryr_k8s.model import kuryrnetwork
from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.openstack.neutron import Neutron, SdkTransport
from kuryr_k8s.openstack.security import SecurityApi
from kuryr_k8s.sandbox.openstack import hostplug, topology

pytestmark = pytest.mark.e2e


class Running:
    def __init__(self, parts: NamespaceParts) -> None:
        self.parts = parts
        ctl = Controller(
            informers=[],
            engines=[parts.engine],
            elector=None,
            health=HealthState(),
            caches=parts.caches,
        )
        self.task = asyncio.ensure_future(ctl.run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


async def _until(what: str, check: Any, within: float = 90) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            value = await check()
            if value:
                return value
        except ResourceNotReady:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {within} s")
        await asyncio.sleep(0.2)


def test_namespace_networks(sandbox: Sandbox, kube_api: KubeApi) -> None:
    cluster = f"ktns-{uuid.uuid4().hex[:8]}"
    topo = sandbox.topo
    assert topo.pod_subnet_pool_id, "the sandbox topology has no subnet pool"
    conn = sandbox.conn
    ports: list[Any] = []
    netnses: list[str] = []
    cluster_tag = f"kuryr.cluster:{cluster}"

    async def scenario() -> None:
        client = KubeClient.from_settings(load_kubeconfig(kube_api.kubeconfig))
        await ensure_crds(client, kuryrnetwork.crd_manifests())
        neutron = Neutron(SdkTransport(topology.connect(sandbox.settings)))
        api = SecurityApi(neutron)
        settings = PlacementSettings(
            "namespace", "default", topo.router_id, topo.pod_subnet_pool_id
        )
        defaults = sandbox_pod_network(topo)

        def make() -> Running:
            parts = build_namespace_parts(
                client, api, settings, cluster_id=cluster, project_id=topo.project_id
            )
            return Running(parts)

        running = make()
        names = [f"ktns-a-{cluster[-4:]}", f"ktns-b-{cluster[-4:]}"]
        for name in names:
            await client.create(NAMESPACES, {"metadata": {"name": name, "labels": {"t": name}}})
        placement = running.parts.placement(defaults)
        nets = {}
        for name in names:
            pod = {"metadata": {"name": "p", "namespace": name}}
            nets[name] = await _until(
                f"network of {name}", lambda pod=pod: placement.network_for(pod)
            )
        a, b = (nets[n] for n in names)
        assert a.network_id != b.network_id and a.subnet_id != b.subnet_id
        for net in (a, b):
            cidr = net.subnets[0].cidr
            assert cidr.startswith("10.40.") and cidr.endswith("/24"), cidr
        kn = await client.get(KURYRNETWORKS, names[0], names[0])
        assert kn["spec"]["nsName"] == names[0] and kn["spec"]["nsLabels"]["t"] == names[0]
        assert kn["status"]["routerId"] == topo.router_id and kn["status"]["populated"]

        # a restart adopts: same network, never a second one
        await running.stop()
        running = make()
        placement = running.parts.placement(defaults)
        pod_a = {"metadata": {"name": "p", "namespace": names[0]}}
        again = await _until("adopted", lambda: placement.network_for(pod_a))
        await running.parts.engine.wait_idle()
        assert again.network_id == a.network_id
        tagged = await api.list_networks([cluster_tag, NAMESPACE_TAG + names[0]])
        assert [n.id for n in tagged] == [a.network_id]

        # pods of the two namespaces reach each other through router1
        plugged = []
        for net in (a, b):
            port = await asyncio.to_thread(
                conn.network.create_port,
                network_id=net.network_id,
                project_id=topo.project_id,
                device_owner=TEST_DEVICE_OWNER,
                binding_host_id=sandbox.settings.hostname,
                security_group_ids=list(net.security_groups),
                tags=[cluster_tag],
            )
            ports.append(port)
            netns = f"kt-{uuid.uuid4().hex[:10]}"
            netnses.append(netns)
            subnet = await asyncio.to_thread(conn.network.get_subnet, net.subnet_id)
            await asyncio.to_thread(hostplug.plug, sandbox.ctx, netns, port, subnet, mtu=topo.mtu)
            plugged.append((netns, port.fixed_ips[0]["ip_address"]))
        result = await asyncio.to_thread(ping, plugged[0][0], plugged[1][1])
        assert result.returncode == 0, result.stdout + result.stderr

        # deleting a namespace waits for its ports, then removes everything
        await client.delete(NAMESPACES, names[0])
        await asyncio.sleep(3)
        assert await asyncio.to_thread(conn.network.find_network, a.network_id) is not None
        await asyncio.to_thread(hostplug.unplug, sandbox.ctx, netnses[0])
        await asyncio.to_thread(conn.network.delete_port, ports[0])

        async def gone() -> bool:
            net = await asyncio.to_thread(conn.network.find_network, a.network_id)
            try:
                await client.get(NAMESPACES, names[0])
            except NotFound:
                return net is None
            return False

        await _until("namespace network removed", gone)
        routed = await api.router_subnets(topo.router_id)
        assert a.subnet_id not in routed and b.subnet_id in routed
        await asyncio.to_thread(hostplug.unplug, sandbox.ctx, netnses[1])
        await asyncio.to_thread(conn.network.delete_port, ports[1])
        await client.delete(NAMESPACES, names[1])

        async def b_gone() -> bool:
            return await asyncio.to_thread(conn.network.find_network, b.network_id) is None

        await _until("second namespace network removed", b_gone)
        await running.stop()
        await client.aclose()
        neutron.close()

    try:
        asyncio.run(scenario())
    finally:
        for netns in netnses:
            with contextlib.suppress(Exception):
                hostplug.unplug(sandbox.ctx, netns)
        for port in ports:
            conn.network.delete_port(port, ignore_missing=True)
        for sub in conn.network.subnets(tags=cluster_tag):
            with contextlib.suppress(Exception):
                conn.network.remove_interface_from_router(topo.router_id, subnet_id=sub.id)
            conn.network.delete_subnet(sub, ignore_missing=True)
        for net in conn.network.networks(tags=cluster_tag):
            conn.network.delete_network(net, ignore_missing=True)
        assert list(conn.network.networks(tags=cluster_tag)) == []
