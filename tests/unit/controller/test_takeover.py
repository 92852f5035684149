"""Which upstream ports a takeover may adopt: only upstream's, never another cluster's."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kuryr_k8s.controller.crds import REPLACED_SPEC
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.controller.subports import SubportProvider
from kuryr_k8s.controller.takeover import (
    Scope,
    TakeoverReport,
    adopt_upstream,
    came_from_upstream,
    free_upstream_port,
    upstream_port_problem,
)
from kuryr_k8s.model.kuryrport import parse_vifs
from kuryr_k8s.openstack.fake import FakeNeutron
from kuryr_k8s.openstack.neutron import Neutron, NeutronSubnet, SubPort
from kuryr_k8s.openstack.ports import FixedIp, NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import PortTagging
from unit.k8s.fakeapi import FakeApi
from unit.openstack.world import PROJECT, World, make_world

SCOPE = Scope(PortTagging("c1", ("kuryr-upstream-bench",)), "proj", "net", pools=True)
POD = "2b9c7a1e-0000-4000-8000-000000000001"
# An upstream pool port as Neutron lists it (device_owner compute:kuryr, upstream's
# resource tag, bound, an address; device_id: the pod that triggered the bulk create, as
# upstream 10.0.0 did on the sandbox with port_debug off)
FREE = NeutronPort(
    id="5f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
    mac_address="fa:16:3e:12:34:56",
    network_id="net",
    fixed_ips=(FixedIp("sub", "10.20.1.193"),),
    status="DOWN",
    binding_host_id="vm",
    security_groups=("sg",),
    tags=("kuryr-upstream-bench",),
    device_owner="compute:kuryr",
    project_id="proj",
    device_id="uid-of-the-pod-that-triggered-the-refill",
)


def test_upstream_pod_port_is_adoptable() -> None:
    assert upstream_port_problem(dataclasses.replace(FREE, device_id=POD), POD, SCOPE) is None
    # a pool port: its device_id names whichever pod triggered the bulk create
    assert upstream_port_problem(FREE, POD, SCOPE) is None
    # already adopted (a restart): still fine
    adopted = dataclasses.replace(FREE, tags=SCOPE.tagging.in_use(POD))
    assert upstream_port_problem(adopted, POD, SCOPE) is None


def test_ports_of_others_are_refused_with_why() -> None:
    other_pod = dataclasses.replace(FREE, tags=("kuryr.owner:another-uid",))
    assert "kuryr.owner:another-uid" in (upstream_port_problem(other_pod, POD, SCOPE) or "")
    other_cluster = dataclasses.replace(FREE, tags=("kuryr.cluster:kuryr-real",))
    assert "kuryr.cluster:kuryr-real" in (upstream_port_problem(other_cluster, POD, SCOPE) or "")
    vm = dataclasses.replace(FREE, device_owner="compute:nova")
    assert "compute:nova" in (upstream_port_problem(vm, POD, SCOPE) or "")


def test_free_pool_port_criteria() -> None:
    assert free_upstream_port(FREE, set(), SCOPE, None)
    refused = {
        "named by a KuryrPort": (FREE, {FREE.id}),
        "another pod's (ours)": (
            dataclasses.replace(FREE, tags=(*FREE.tags, f"kuryr.owner:{POD}")),
            set(),
        ),
        "ours": (dataclasses.replace(FREE, tags=(*FREE.tags, "kuryr.cluster:c1")), set()),
        "another cluster's pool": (
            dataclasses.replace(FREE, tags=(*FREE.tags, "kuryr.pool:abc")),
            set(),
        ),
        "without upstream's tag": (dataclasses.replace(FREE, tags=()), set()),
        "other project": (dataclasses.replace(FREE, project_id="x"), set()),
        "other network": (dataclasses.replace(FREE, network_id="x"), set()),
        "unbound": (dataclasses.replace(FREE, binding_host_id=""), set()),
        "no address": (dataclasses.replace(FREE, fixed_ips=()), set()),
        "trunk parent": (dataclasses.replace(FREE, trunk_parent_of="t"), set()),
        "a VM's": (dataclasses.replace(FREE, device_owner="compute:nova"), set()),
    }
    for why, (port, referenced) in refused.items():
        assert not free_upstream_port(port, referenced, SCOPE, None), why


def test_without_resource_tags_only_ports_bound_to_our_nodes() -> None:
    untagged = Scope(PortTagging("c1"), "proj", "net", pools=True)
    port = dataclasses.replace(FREE, tags=())
    assert free_upstream_port(port, set(), untagged, {"vm"})
    assert not free_upstream_port(port, set(), untagged, {"other-node"})


def test_recorded_upstream_port_is_adoptable_despite_its_device_id() -> None:
    """Recorded on the sandbox: upstream 10.0.0 (pools on, port_debug off) gave pod up-0 a
    pool port whose device_id is up-1's uid (the pod that triggered the bulk create)."""
    import json
    from pathlib import Path

    data = Path(__file__).parents[2] / "fixtures" / "upstream" / "kuryrport-recorded.json"
    recorded = json.loads(data.read_text())
    kp, raw = recorded["kuryrport"], recorded["neutronPort"]
    port = dataclasses.replace(
        FREE,
        id=raw["id"],
        device_id=raw["device_id"],
        tags=tuple(raw["tags"]),
        device_owner=raw["device_owner"],
    )
    uid = kp["spec"]["podUid"]
    assert port.device_id != uid  # the quirk, as recorded
    scope = Scope(PortTagging("c1", tuple(raw["tags"])), "proj", "net", pools=True)
    assert upstream_port_problem(port, uid, scope) is None


# -- only in a cluster upstream ran ------------------------------------------------------

CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _cluster(annotated: bool) -> tuple[FakeApi, FakeNeutron, Scope]:
    """A KuryrPort CRD (upgraded from upstream's or not) and, on the pod network, an
    unowned bound port with our device owner (what a free upstream pool port looks like,
    and also what someone else's port may look like)."""
    api = FakeApi()
    annotations = {REPLACED_SPEC: "{}"} if annotated else {}
    api.seed(
        CRDS_PATH,
        {"metadata": {"name": "kuryrports.openstack.org", "annotations": annotations}},
    )
    api.seed("/api/v1/nodes", {"metadata": {"name": "node1"}})
    fake = FakeNeutron()
    net = fake.add_network("proj")
    sub = fake.add_subnet(net, "10.20.0.0/24")
    port = fake.add_port(net, sub)
    fake.ports[port["id"]].update({"device_owner": "compute:kuryr", "binding:host_id": "node1"})
    scope = Scope(PortTagging("c1", ()), "proj", net, pools=True)
    return api, fake, scope


async def test_a_cluster_upstream_never_ran_takes_no_port() -> None:
    api, fake, scope = _cluster(annotated=False)
    async with api.client() as client:
        assert not await came_from_upstream(client)
        report = await adopt_upstream(client, Neutron(fake, inline=True), scope)
    assert report == TakeoverReport()
    assert all(not p.get("tags") for p in fake.ports.values())


async def test_after_an_upgrade_from_upstream_its_free_ports_join_our_pools() -> None:
    api, fake, scope = _cluster(annotated=True)
    async with api.client() as client:
        assert await came_from_upstream(client)
        report = await adopt_upstream(client, Neutron(fake, inline=True), scope)
    (port,) = fake.ports.values()
    assert report.pool_adopted == [port["id"]]
    assert "kuryr.cluster:c1" in port["tags"]


# -- nested pods: upstream's VIFVlanNested on a subport of the node's trunk ---------------

KPS_PATH = "/apis/openstack.org/v1/kuryrports"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "upstream"
UPSTREAM_VLAN: dict[str, Any] = json.loads(
    (FIXTURES / "os-vif-primitives-generated.json").read_text()
)["vlan"]
RESOURCE_TAG = "extra"  # world.tagging's resource tag: upstream tagged its ports with it
VLAN = 101


@dataclass
class Nested:
    """An upstream nested cluster: VM ``vm1`` (a parent port with a trunk, a Node with its
    address), upstream's subport of pod ``POD`` attached with VLAN 101, its KuryrPort."""

    api: FakeApi
    world: World
    scope: Scope
    trunk: str
    subport: str

    def kuryrport(self) -> dict[str, Any]:
        return self.api.objects[KPS_PATH][("ns", "pod-a")]

    def port(self, port_id: str | None = None) -> dict[str, Any]:
        return self.world.fake.ports[port_id or self.subport]

    def attached(self, trunk: str | None = None) -> dict[str, int]:
        subs = self.world.fake.trunks[trunk or self.trunk]["sub_ports"]
        return {sp["port_id"]: sp["segmentation_id"] for sp in subs}

    async def takeover(self, scope: Scope | None = None) -> TakeoverReport:
        async with self.api.client() as client:
            return await adopt_upstream(client, self.world.neutron, scope or self.scope)

    async def upstream_subport(self, trunk: str, vlan: int, **fields: Any) -> str:
        """A port as upstream's nested driver makes it: compute:kuryr, its resource tag,
        no device_id, unbound; then attached (Neutron makes it trunk:subport)."""
        port = self.world.fake.add_port(self.world.network, self.world.subnet)
        self.world.fake.ports[port["id"]].update(
            {"device_owner": "compute:kuryr", "tags": [RESOURCE_TAG], **fields}
        )
        await self.world.neutron.add_subports(trunk, [SubPort(port["id"], vlan)])
        return str(port["id"])

    async def our_subports(self, pool_min: int) -> tuple[SubportProvider, PortRequest]:
        """Our subport provider (pooled, rebuilt from Neutron; live pods POD and pod-b)
        and a request for a pod on vm1."""
        world = self.world
        settings = VifPoolSettings(enabled=True, ports_pool_min=pool_min, ports_pool_batch=3)
        provider = SubportProvider(world.neutron, world.tagging, settings, _owners(POD, "pod-b"))
        await provider.rebuild()
        sgs = (world.sg,)
        return provider, PortRequest("vm1", PROJECT, world.network, world.subnet, sgs, self.trunk)

    def vm(self, name: str, subnet: str | None = None) -> str:
        """A VM Node: a parent port (its address on ``subnet``) with a trunk."""
        parent = self.world.fake.add_port(self.world.network, subnet or self.world.subnet)
        self.api.seed(
            "/api/v1/nodes",
            {
                "metadata": {"name": name},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": parent["fixed_ips"][0]["ip_address"]}
                    ]
                },
            },
        )
        return self.world.fake.add_trunk(parent["id"])


def _vlan_primitive(port: dict[str, Any], cidr: str, vlan: int) -> dict[str, Any]:
    """Upstream 10.0.0's VIFVlanNested primitive (the generated fixture) for ``port``."""
    prim = copy.deepcopy(UPSTREAM_VLAN)
    data = prim["versioned_object.data"]
    data.update({"id": port["id"], "address": port["mac_address"], "vlan_id": vlan})
    net = data["network"]["versioned_object.data"]
    net["id"] = port["network_id"]
    subnet = net["subnets"]["versioned_object.data"]["objects"][0]["versioned_object.data"]
    subnet["cidr"] = cidr
    subnet["gateway"] = str(next(ipaddress.ip_network(cidr).hosts()))
    fixed = subnet["ips"]["versioned_object.data"]["objects"][0]["versioned_object.data"]
    fixed["address"] = port["fixed_ips"][0]["ip_address"]
    return prim


async def _nested(*, pools: bool = True, vif_vlan: int = VLAN) -> Nested:
    api, world = FakeApi(), make_world()
    api.seed(
        CRDS_PATH,
        {"metadata": {"name": "kuryrports.openstack.org", "annotations": {REPLACED_SPEC: "{}"}}},
    )
    sub = world.fake.subnets[world.subnet]
    worker = NeutronSubnet(sub["id"], sub["network_id"], sub["project_id"], sub["cidr"], 4, None)
    scope = Scope(world.tagging, PROJECT, world.network, pools, worker_subnets=(worker,))
    nested = Nested(api, world, scope, "", "")
    nested.trunk = nested.vm("vm1")
    nested.subport = await nested.upstream_subport(nested.trunk, VLAN)
    api.seed(
        KPS_PATH,
        {
            "metadata": {"name": "pod-a", "namespace": "ns"},
            "spec": {"podUid": POD, "podNodeName": "vm1"},
            "status": {
                "vifs": {
                    "eth0": {
                        "default": True,
                        "vif": _vlan_primitive(nested.port(), sub["cidr"], vif_vlan),
                    }
                }
            },
        },
    )
    return nested


async def test_nested_pod_is_converted_and_its_subport_carries_our_in_use_marks() -> None:
    nested = await _nested()
    ports_before = set(nested.world.fake.ports)
    assert nested.port()["device_owner"] == "trunk:subport"  # as Neutron lists it
    report = await nested.takeover()
    assert report.converted == ["ns/pod-a"] and not report.refused
    (entry,) = parse_vifs(nested.kuryrport()).values()
    assert (entry.vif.vif_type, entry.vif.vlan_id, entry.vif.port_id) == (
        "vlan",
        VLAN,
        nested.subport,
    )
    assert entry.vif.adopted and entry.default
    port = nested.port()
    assert port["device_id"] == POD
    assert set(port["tags"]) == set(nested.world.tagging.in_use(POD, nested.trunk))
    # nothing re-wired: same ports, still attached with the same VLAN id
    assert set(nested.world.fake.ports) == ports_before
    assert nested.attached() == {nested.subport: VLAN}
    again = await nested.takeover()  # idempotent
    assert again == TakeoverReport()


async def test_an_adopted_subport_is_ours_for_the_subport_provider() -> None:
    """Rebuild counts it in use, its VLAN id is never handed out again, and the pod's
    acquire finds it as its own (no second port)."""
    nested = await _nested()
    await nested.takeover()
    provider, request = await nested.our_subports(pool_min=1)
    mine = await provider.acquire(request, POD, "ns/pod-a")
    assert (mine.id, mine.vlan_id) == (nested.subport, VLAN)
    other = await provider.acquire(request, "pod-b", "ns/pod-b")
    assert other.id != nested.subport and other.vlan_id != VLAN
    vlans = list(nested.attached().values())
    assert len(vlans) == len(set(vlans))


def _owners(*uids: str) -> Callable[[], Awaitable[Collection[str]]]:
    async def live() -> Collection[str]:
        return set(uids)

    return live


async def _refused(nested: Nested, fragment: str, scope: Scope | None = None) -> None:
    """The takeover refuses the KuryrPort naming ``fragment``; nothing changed."""
    kp_before = copy.deepcopy(nested.kuryrport())
    ports_before = copy.deepcopy(nested.world.fake.ports)
    trunks_before = copy.deepcopy(nested.world.fake.trunks)
    report = await nested.takeover(scope)
    assert not report.converted
    assert len(report.refused) == 1 and "KuryrPort ns/pod-a" in report.refused[0]
    assert fragment in report.refused[0], report.refused[0]
    assert nested.kuryrport() == kp_before
    assert nested.world.fake.ports == ports_before
    assert nested.world.fake.trunks == trunks_before


async def test_nested_pod_whose_vlan_differs_from_the_trunks_is_refused() -> None:
    nested = await _nested(vif_vlan=102)
    await _refused(nested, "is VLAN 101 on trunk")


async def test_nested_pod_whose_port_is_on_another_trunk_is_refused() -> None:
    nested = await _nested()
    other = nested.vm("vm2")
    await nested.world.neutron.remove_subports(nested.trunk, [nested.subport])
    await nested.world.neutron.add_subports(other, [SubPort(nested.subport, VLAN)])
    await _refused(nested, f"not a subport of trunk {nested.trunk}, the trunk of node vm1")


async def test_nested_pod_on_a_node_that_is_not_a_vm_or_unknown_is_refused() -> None:
    nested = await _nested()
    node = nested.api.objects["/api/v1/nodes"][(None, "vm1")]
    node["status"]["addresses"] = [{"type": "InternalIP", "address": "192.168.77.7"}]
    await _refused(nested, "node vm1 is not a VM on a trunk")
    del nested.api.objects["/api/v1/nodes"][(None, "vm1")]
    await _refused(nested, "node vm1 is not in the Node cache")


async def test_nested_pod_is_refused_by_a_controller_that_serves_no_nested_pods() -> None:
    nested = await _nested()
    plain = dataclasses.replace(nested.scope, worker_subnets=())
    await _refused(nested, "does not serve nested pods", scope=plain)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"device_id": "another-pods-uid"}, "device_id is 'another-pods-uid'"),
        ({"tags": [RESOURCE_TAG, "kuryr.owner:another-uid"]}, "kuryr.owner:another-uid"),
        ({"tags": [RESOURCE_TAG, "kuryr.cluster:other"]}, "kuryr.cluster:other"),
        ({"tags": [RESOURCE_TAG, "kuryr.trunk:other-trunk"]}, "kuryr.trunk:other-trunk"),
        ({"device_owner": "compute:nova"}, "device_owner is 'compute:nova'"),
    ],
)
async def test_nested_pod_whose_subport_is_not_upstreams_is_refused(
    fields: dict[str, Any], fragment: str
) -> None:
    nested = await _nested()
    nested.port().update(fields)
    await _refused(nested, fragment)


async def test_free_nested_pool_subports_join_the_trunks_pool() -> None:
    nested = await _nested()
    free = await nested.upstream_subport(nested.trunk, 102)
    # left alone: a subport upstream's driver would not have made or that is not ours to take
    with_device = await nested.upstream_subport(nested.trunk, 103)
    nested.port(with_device)["device_id"] = "vm-thing"  # set after the attach (PortInUse)
    untagged = await nested.upstream_subport(nested.trunk, 104, tags=[])
    foreign_vm = await nested.upstream_subport(
        nested.world.fake.add_trunk(
            nested.world.fake.add_port(nested.world.network, nested.world.subnet)["id"]
        ),
        105,
    )
    report = await nested.takeover()
    assert report.pool_adopted == [free]
    tags = set(nested.port(free)["tags"])
    assert {"kuryr.cluster:c1", f"kuryr.trunk:{nested.trunk}", RESOURCE_TAG} < tags
    assert any(t.startswith("kuryr.pool:") for t in tags)
    for port_id in (with_device, untagged, foreign_vm):
        assert not any(t.startswith("kuryr.") for t in nested.port(port_id)["tags"]), port_id
    # the subport provider's rebuild puts it into the trunk's pool: the next pod gets it
    provider, request = await nested.our_subports(pool_min=0)
    got = await provider.acquire(request, "pod-b", "ns/pod-b")
    assert (got.id, got.vlan_id) == (free, 102)


async def test_free_nested_pool_subports_are_detached_and_deleted_without_pools() -> None:
    nested = await _nested(pools=False)
    free = await nested.upstream_subport(nested.trunk, 102)
    report = await nested.takeover()
    assert report.pool_deleted == [free] and report.converted == ["ns/pod-a"]
    assert free not in nested.world.fake.ports
    assert nested.attached() == {nested.subport: VLAN}
