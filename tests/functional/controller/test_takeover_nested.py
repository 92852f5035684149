"""The takeover of upstream's nested pods against the real sandbox Neutron (ML2/OVN).

A "VM" is what Neutron and Kubernetes see of one (as in ``test_nested_live.py``): a parent
port on net0 with a trunk, and a Node (in a private API emulator) whose InternalIP is its
address. On the trunk, ports made as upstream's nested driver makes them (device owner
``compute:kuryr``, upstream's resource tag, no ``device_id``, unbound; Neutron rewrites
the owner to ``trunk:subport`` on attach): pod A's (VLAN 101) with its upstream-format
KuryrPort, pod B's (VLAN 102) whose KuryrPort claims VLAN 103, and a free pool subport
(VLAN 104). The takeover (``adopt_upstream``, run in-process as the leader runs it) must
convert A in place, refuse B with nothing changed, and put the free one into the trunk's
pool; our subport provider's rebuild must then see A in use and hand out the free one.

Everything carries the test's own resource tag and lives in a private API, so the
takeover sees nothing of anybody else's; the ``neutron`` fixture deletes the trunk and
every tagged port at the end and fails on a leak.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.kubeapi import KubeApi
from fixtures.sandbox import NeutronTracker, Sandbox
from functional.controller.harness import private_api, unique_name
from kuryr_k8s.controller.crds import upgrade_crds
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.controller.subports import SubportProvider
from kuryr_k8s.controller.takeover import Scope, TakeoverReport, adopt_upstream
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.resources import CRDS, KURYRPORTS, NODES
from kuryr_k8s.model.kuryrport import crd_manifests, parse_vifs, to_upstream_vif, upstream_vifs
from kuryr_k8s.model.vif import Vif
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import PortRequest
from kuryr_k8s.openstack.provider import PortTagging

pytestmark = pytest.mark.functional

UPSTREAM_CRD = Path(__file__).parents[2] / "fixtures" / "upstream" / "kuryrport-crd-10.0.0.yaml"


@dataclass
class Upstream:
    """What upstream left on the sandbox for this test."""

    node: str
    trunk: str
    pod_a: str
    pod_b: str
    free: str


@pytest.fixture
async def api(kube_api: KubeApi, tmp_path: Path) -> AsyncIterator[KubeClient]:
    if not kube_api.is_emulator:
        pytest.skip("the takeover reads every KuryrPort: only on a private API emulator")
    with private_api(kube_api, tmp_path) as private:
        async with KubeClient.from_settings(load_kubeconfig(private.kubeconfig)) as client:
            crd = next(d for d in yaml.safe_load_all(UPSTREAM_CRD.read_text()) if d)
            await client.create(CRDS, crd)
            await upgrade_crds(client, crd_manifests())  # what our leader does first
            for _ in range(100):  # until the emulator serves the CRD
                try:
                    await client.list(KURYRPORTS, namespace="default")
                    break
                except NotFound:
                    await asyncio.sleep(0.1)
            yield client


def _upstream_subport(
    sandbox: Sandbox, neutron: NeutronTracker, trunk: str, vlan: int
) -> dict[str, Any]:
    """A port as upstream's nested driver makes it, attached with ``vlan``."""
    topo = sandbox.topo
    port = neutron.port(
        topo.net1_id,
        fixed_ips=[{"subnet_id": topo.subnet1_id}],
        device_owner="compute:kuryr",
        security_group_ids=[topo.default_sg_id],
    )
    sandbox.conn.network.add_trunk_subports(
        trunk, [{"port_id": port.id, "segmentation_type": "vlan", "segmentation_id": vlan}]
    )
    return dict(sandbox.conn.network.get_port(port.id).to_dict())


async def _kuryrport(
    client: KubeClient, name: str, uid: str, node: str, port: dict[str, Any], vlan: int, topo: Any
) -> None:
    """The KuryrPort upstream wrote for the pod: its VIFVlanNested primitive (built by our
    ``to_upstream_vif``, equal to upstream 10.0.0's own output: unit-tested)."""
    fixed = port["fixed_ips"][0]
    vif = Vif.from_dict(
        {
            "vifType": "vlan",
            "portId": port["id"],
            "macAddress": port["mac_address"],
            "networkId": port["network_id"],
            "mtu": topo.mtu,
            "vlanId": vlan,
            "ips": [
                {
                    "address": fixed["ip_address"],
                    "cidr": topo.subnet1_cidr,
                    "subnetId": fixed["subnet_id"],
                }
            ],
        }
    )
    kp = await client.create(
        KURYRPORTS,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrPort",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"podUid": uid, "podNodeName": node},
        },
        namespace="default",
    )
    kp["status"] = {"vifs": {"eth0": {"default": True, "vif": to_upstream_vif(vif)}}}
    await client.replace(KURYRPORTS, kp, subresource="status")


async def test_upstreams_nested_pod_and_pool_subport_are_taken_over_in_place(
    sandbox: Sandbox, neutron: NeutronTracker, api: KubeClient
) -> None:
    topo, net = sandbox.topo, sandbox.conn.network
    node = unique_name("vm")
    parent = neutron.port(topo.net0_id, name=node)
    trunk = neutron.trunk(parent.id, name=node).id
    await api.create(
        NODES,
        {
            "metadata": {"name": node},
            "status": {
                "addresses": [{"type": "InternalIP", "address": parent.fixed_ips[0]["ip_address"]}]
            },
        },
    )
    uid_a, uid_b = str(uuid.uuid4()), str(uuid.uuid4())
    port_a = _upstream_subport(sandbox, neutron, trunk, 101)
    port_b = _upstream_subport(sandbox, neutron, trunk, 102)
    free = _upstream_subport(sandbox, neutron, trunk, 104)
    assert port_a["device_owner"] == "trunk:subport" and not port_a["device_id"]
    await _kuryrport(api, "pod-a", uid_a, node, port_a, 101, topo)
    await _kuryrport(api, "pod-b", uid_b, node, port_b, 103, topo)  # not the trunk's VLAN
    kp_b = await api.get(KURYRPORTS, "pod-b", "default")

    adapter = Neutron.connect(NeutronSettings(endpoint=sandbox.settings.neutron_url, timeout=120))
    try:
        worker = await adapter.get_subnet(topo.subnet0_id)
        assert worker is not None
        tagging = PortTagging(f"kt-{uuid.uuid4().hex[:10]}", (neutron.tag,))
        scope = Scope(tagging, topo.project_id, topo.net1_id, True, worker_subnets=(worker,))
        report = await adopt_upstream(api, adapter, scope)

        assert report.converted == ["default/pod-a"], report
        assert report.pool_adopted == [free["id"]], report
        assert len(report.refused) == 1 and "KuryrPort default/pod-b" in report.refused[0]
        assert "VLAN 102 on trunk" in report.refused[0] and "VLAN 103" in report.refused[0]
        # A: converted in place, marked as ours, still the same subport with the same VLAN
        (entry,) = parse_vifs(await api.get(KURYRPORTS, "pod-a", "default")).values()
        assert (entry.vif.port_id, entry.vif.vlan_id, entry.vif.adopted) == (
            port_a["id"],
            101,
            True,
        )
        seen_a = net.get_port(port_a["id"])
        assert seen_a.device_id == uid_a and seen_a.device_owner == "trunk:subport"
        assert set(tagging.in_use(uid_a, trunk)) <= set(seen_a.tags)
        on_trunk = {s["port_id"]: s["segmentation_id"] for s in net.get_trunk(trunk).sub_ports}
        assert on_trunk == {port_a["id"]: 101, port_b["id"]: 102, free["id"]: 104}
        # B: left exactly as upstream made it
        seen_b = net.get_port(port_b["id"])
        assert (seen_b.device_id, seen_b.tags) == ("", [neutron.tag])
        assert upstream_vifs(await api.get(KURYRPORTS, "pod-b", "default"))
        assert (await api.get(KURYRPORTS, "pod-b", "default"))["status"] == kp_b["status"]
        # the free one: our cluster, pool and trunk tags
        free_tags = set(net.get_port(free["id"]).tags)
        assert {tagging.cluster_tag, f"kuryr.trunk:{trunk}", neutron.tag} < free_tags
        assert any(t.startswith("kuryr.pool:") for t in free_tags)
        # idempotent: a restart (or a second replica) changes nothing more
        again = await adopt_upstream(api, adapter, scope)
        assert again == TakeoverReport(refused=report.refused)

        # our subport provider's rebuild: A in use (its VLAN is not handed out), the free
        # subport in the trunk's pool, claimed for the next pod with its VLAN
        async def live() -> Collection[str]:
            return {uid_a, uid_b}

        settings = VifPoolSettings(enabled=True, ports_pool_min=0, ports_pool_batch=1)
        provider = SubportProvider(adapter, tagging, settings, live)
        await provider.rebuild()
        request = PortRequest(
            node, topo.project_id, topo.net1_id, topo.subnet1_id, (topo.default_sg_id,), trunk
        )
        mine = await provider.acquire(request, uid_a, "default/pod-a")
        assert (mine.id, mine.vlan_id) == (port_a["id"], 101)
        uid_c = str(uuid.uuid4())
        got = await provider.acquire(request, uid_c, "default/pod-c")
        assert (got.id, got.vlan_id) == (free["id"], 104)
        assert net.get_port(free["id"]).device_id == uid_c
    finally:
        adapter.close()
