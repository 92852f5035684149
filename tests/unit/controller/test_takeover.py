"""Which upstream ports a takeover may adopt: only upstream's, never another cluster's."""

from __future__ import annotations

import dataclasses

from kuryr_k8s.controller.crds import REPLACED_SPEC
from kuryr_k8s.controller.takeover import (
    Scope,
    TakeoverReport,
    adopt_upstream,
    came_from_upstream,
    free_upstream_port,
    upstream_port_problem,
)
from kuryr_k8s.openstack.fake import FakeNeutron
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import FixedIp, NeutronPort
from kuryr_k8s.openstack.provider import PortTagging
from unit.k8s.fakeapi import FakeApi

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
