"""Upstream's namespace networks become ours in place (no second network per namespace),
or are left exactly as upstream wrote them, with why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kuryr_k8s.controller.takeover_networks import (
    UPSTREAM_FINALIZER,
    NetworkScope,
    adopt_upstream_networks,
    restore_upstream_finalizers,
    upstream_names,
)
from kuryr_k8s.model.kuryrnetwork import KURYRNETWORK_FINALIZER
from kuryr_k8s.openstack.neutron import Neutron
from unit.k8s.fakeapi import FakeApi

PROJECT = "p1"
SCOPE = NetworkScope("kuryr.cluster:c1", PROJECT)
KNS = "/apis/openstack.org/v1/kuryrnetworks"


class NetworksOnly:
    """Neutron's networks and subnets: GET one, PUT one tag (what the takeover calls)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, dict[str, Any]]] = {"networks": {}, "subnets": {}}

    def add(self, kind: str, rid: str, **fields: Any) -> None:
        self.items[kind][rid] = {"id": rid, "project_id": PROJECT, "tags": [], **fields}

    def tags(self, kind: str, rid: str) -> set[str]:
        return set(self.items[kind][rid]["tags"])

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        item = self.items[parts[0]].get(parts[1])
        if item is None:
            return 404, {"NeutronError": {"type": "NotFound", "message": "not found"}}
        if method == "GET" and len(parts) == 2:
            return 200, {parts[0][:-1]: item}
        if method == "PUT" and len(parts) == 4 and parts[2] == "tags":
            if parts[3] not in item["tags"]:
                item["tags"].append(parts[3])
            return 201, None
        return 400, {"NeutronError": {"type": "HTTPBadRequest", "message": path}}


def upstream_namespace(api: FakeApi, neutron: NetworksOnly, name: str, uid: str) -> None:
    """What upstream 10.0.0 leaves for a namespace."""
    api.seed("/api/v1/namespaces", {"metadata": {"name": name, "uid": uid}})
    net, sub = f"net-{name}", f"sub-{name}"
    neutron.add("networks", net, name=f"{uid}/{name}", tags=["k8s"])
    neutron.add("subnets", sub, name=f"{uid}/{name}", network_id=net, tags=["k8s"])
    api.seed(
        KNS,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrNetwork",
            "metadata": {"name": name, "namespace": name, "finalizers": [UPSTREAM_FINALIZER]},
            "spec": {"nsName": name, "projectId": PROJECT, "nsLabels": {}},
            "status": {"netId": net, "subnetId": sub, "subnetCIDR": "10.30.0.0/26"},
        },
    )


def finalizers(api: FakeApi, name: str) -> list[str]:
    return list(api.objects[KNS][(name, name)]["metadata"].get("finalizers") or [])


async def test_upstream_networks_get_our_tags_and_finalizer() -> None:
    api, neutron = FakeApi(), NetworksOnly()
    upstream_namespace(api, neutron, "team-a", "uid-a")
    async with api.client() as client:
        report = await adopt_upstream_networks(client, Neutron(neutron, inline=True), SCOPE)
        again = await adopt_upstream_networks(client, Neutron(neutron, inline=True), SCOPE)
    assert report.adopted == ["team-a"] and report.refused == []
    ours = {"kuryr.cluster:c1", "kuryr.owner:uid-a", "kuryr.namespace:team-a", "k8s"}
    assert neutron.tags("networks", "net-team-a") == ours
    assert neutron.tags("subnets", "sub-team-a") == ours
    assert finalizers(api, "team-a") == [KURYRNETWORK_FINALIZER]
    assert again.adopted == [] and again.refused == []  # nothing left to take


async def test_a_network_that_is_not_upstreams_of_that_namespace_is_left_alone() -> None:
    api, neutron = FakeApi(), NetworksOnly()
    upstream_namespace(api, neutron, "team-b", "uid-b")
    neutron.items["networks"]["net-team-b"]["name"] = "someone-elses"
    upstream_namespace(api, neutron, "team-c", "uid-c")
    neutron.items["subnets"]["sub-team-c"]["tags"].append("kuryr.cluster:other")
    async with api.client() as client:
        report = await adopt_upstream_networks(client, Neutron(neutron, inline=True), SCOPE)
    assert report.adopted == []
    assert "named 'someone-elses', not as upstream names it" in report.refused[0]
    assert "kuryr.cluster:other (another cluster's or owner's)" in report.refused[1]
    for ns in ("team-b", "team-c"):
        assert neutron.tags("networks", f"net-{ns}") <= {"k8s"}
        assert finalizers(api, ns) == [UPSTREAM_FINALIZER]


async def test_rollback_gives_upstream_its_finalizer_back() -> None:
    api, neutron = FakeApi(), NetworksOnly()
    upstream_namespace(api, neutron, "team-d", "uid-d")
    async with api.client() as client:
        await adopt_upstream_networks(client, Neutron(neutron, inline=True), SCOPE)
        assert await restore_upstream_finalizers(client) == ["team-d/team-d"]
    assert finalizers(api, "team-d") == [UPSTREAM_FINALIZER]


def test_upstream_names_cut_long_namespaces_to_fit() -> None:
    nets, subs = upstream_names("n" * 253, "u" * 36)
    assert all(len(n) <= 255 for n in nets | subs)
    assert ("u" * 36 + "/" + "n" * 218) in nets
    assert "ns/short-net" in upstream_names("short", "x")[0]
