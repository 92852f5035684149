"""Upstream's NetworkPolicies: its KuryrNetworkPolicy is converted to ours, its SG is
tagged as a retiring variant of the policy (deleted only once no port has named it for the
grace) and its NetworkPolicy finalizer removed -- or everything is left exactly as
upstream wrote it, with why."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kuryr_k8s.controller.policies import SG_RETIRE_GRACE
from kuryr_k8s.controller.takeover_policies import (
    UPSTREAM_FINALIZER,
    PolicyScope,
    adopt_upstream_policies,
    retire_upstream_sgs,
    rollback_problem,
    upstream_sg_name,
)
from kuryr_k8s.model.kuryrnetwork import KNP_FINALIZER, POLICY_LABEL
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.security import SecurityApi
from unit.k8s.fakeapi import FakeApi

PROJECT = "p1"
SCOPE = PolicyScope("kuryr.cluster:c1", PROJECT)
NP_UID = "np-uid-1"
UP_SG = "sg-upstream"
KNPS = "/apis/openstack.org/v1/kuryrnetworkpolicies"
NPS = "/apis/networking.k8s.io/v1/networkpolicies"
RETIRING = {"kuryr.cluster:c1", f"kuryr.owner:{NP_UID}", "kuryr.sgvariant:upstream", "k8s"}


class SgCloud:
    """Neutron's SGs (GET one, list by tags, PUT a tag, DELETE: refused while a port
    names it) and which SGs each port carries."""

    def __init__(self) -> None:
        self.sgs: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, list[str]] = {}
        self.log: list[tuple[float, str]] = []
        self.now = 0.0

    def add_sg(self, sg_id: str, **fields: Any) -> None:
        self.sgs[sg_id] = {
            "id": sg_id,
            "name": upstream_sg_name("a", "deny"),
            "project_id": PROJECT,
            "tags": ["k8s"],
            "security_group_rules": [],
            **fields,
        }

    def move(self, port: str, sgs: list[str]) -> None:
        self.ports[port] = sgs
        self.log.append((self.now, f"{port}->{','.join(sgs)}"))

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        params = params or {}
        parts = path.strip("/").split("/")
        if parts[0] == "ports" and method == "GET":
            sg = params.get("security_groups")
            return 200, {"ports": [{"id": p} for p, sgs in self.ports.items() if sg in sgs]}
        if parts[0] != "security-groups":
            raise AssertionError(f"unexpected {method} {path}")
        if method == "GET" and len(parts) == 1:
            want = set(filter(None, str(params.get("tags", "")).split(",")))
            found = [
                copy.deepcopy(sg)
                for sg in self.sgs.values()
                if want <= set(sg["tags"])
                and all(sg.get(k) == params[k] for k in ("name", "project_id") if k in params)
            ]
            return 200, {"security_groups": found}
        sg = self.sgs.get(parts[1])
        if sg is None:
            return 404, {"NeutronError": {"type": "SecurityGroupNotFound", "message": path}}
        if method == "GET" and len(parts) == 2:
            return 200, {"security_group": copy.deepcopy(sg)}
        if method == "PUT" and len(parts) == 4 and parts[2] == "tags":
            if parts[3] not in sg["tags"]:
                sg["tags"].append(parts[3])
            return 201, None
        if method == "DELETE" and len(parts) == 2:
            if any(parts[1] in sgs for sgs in self.ports.values()):
                msg = f"Security Group {parts[1]} in use."
                return 409, {"NeutronError": {"type": "SecurityGroupInUse", "message": msg}}
            del self.sgs[parts[1]]
            self.log.append((self.now, f"deleted {parts[1]}"))
            return 204, None
        raise AssertionError(f"unexpected {method} {path}")


def seed_policy(api: FakeApi, cloud: SgCloud, *, sg: str = UP_SG) -> None:
    """What upstream 10.0.0 leaves for NetworkPolicy a/deny selecting app=db."""
    api.seed(
        NPS,
        {
            "metadata": {
                "name": "deny",
                "namespace": "a",
                "uid": NP_UID,
                "finalizers": [UPSTREAM_FINALIZER],
            },
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]},
        },
    )
    rule = {"sgRule": {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp"}}
    api.seed(
        KNPS,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrNetworkPolicy",
            "metadata": {
                "name": "deny",
                "namespace": "a",
                "finalizers": [UPSTREAM_FINALIZER],
                "annotations": {"networkPolicyLink": "/apis/.../a/networkpolicies/deny"},
                "ownerReferences": [{"kind": "NetworkPolicy", "name": "deny", "uid": NP_UID}],
            },
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "policyTypes": ["Ingress"],
                "ingressSgRules": [rule],
                "egressSgRules": [],
            },
            "status": {
                "securityGroupId": sg,
                "securityGroupRules": [{**rule["sgRule"], "id": "r1"}],
                "podSelector": {"matchLabels": {"app": "db"}},
            },
        },
    )
    cloud.add_sg(UP_SG)
    cloud.ports["port-db"] = [UP_SG]


def knp(api: FakeApi) -> dict[str, Any]:
    return api.objects[KNPS][("a", "deny")]


def np_finalizers(api: FakeApi) -> list[str]:
    return list(api.objects[NPS][("a", "deny")]["metadata"].get("finalizers") or [])


async def test_upstream_knp_becomes_ours_and_its_sg_a_retiring_variant() -> None:
    api, cloud = FakeApi(), SgCloud()
    seed_policy(api, cloud)
    sec = SecurityApi(Neutron(cloud, inline=True))
    async with api.client() as client:
        report = await adopt_upstream_policies(client, sec, SCOPE)
        again = await adopt_upstream_policies(client, sec, SCOPE)
    assert report.adopted == ["a/deny"] and report.released == ["a/deny"]
    assert report.refused == []
    assert (again.adopted, again.released, again.refused) == ([], [], [])  # idempotent
    obj = knp(api)
    assert obj["spec"] == {
        "policyUid": NP_UID,
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
    }  # exactly what our reconciler writes: it keeps this KNP
    assert obj["metadata"]["labels"][POLICY_LABEL] == NP_UID
    assert obj["metadata"]["finalizers"] == [KNP_FINALIZER]
    assert not {"securityGroupId", "securityGroupRules", "podSelector"} & set(obj["status"])
    assert np_finalizers(api) == []  # nothing of ours would ever remove it
    assert set(cloud.sgs[UP_SG]["tags"]) == RETIRING
    assert cloud.ports["port-db"] == [UP_SG]  # no port is touched by the takeover


async def test_what_is_not_upstreams_sg_of_that_policy_is_left_alone() -> None:
    cases = {
        "named 'sg/a-other', not as upstream names it": {"name": "sg/a-other"},
        "in project p2, not ours": {"project_id": "p2"},
        "kuryr.owner:someone (another cluster's or owner's)": {
            "tags": ["k8s", "kuryr.owner:someone"]
        },
    }
    for why, fields in cases.items():
        api, cloud = FakeApi(), SgCloud()
        seed_policy(api, cloud)
        cloud.sgs[UP_SG].update(fields)
        sg_before, knp_before = copy.deepcopy(cloud.sgs[UP_SG]), copy.deepcopy(knp(api))
        sec = SecurityApi(Neutron(cloud, inline=True))
        async with api.client() as client:
            report = await adopt_upstream_policies(client, sec, SCOPE)
        assert report.adopted == [] and report.released == [], why
        assert len(report.refused) == 1 and why in report.refused[0], report.refused
        assert report.refused[0].startswith("KuryrNetworkPolicy a/deny: not adopted")
        assert cloud.sgs[UP_SG] == sg_before
        assert knp(api) == knp_before
        assert np_finalizers(api) == [UPSTREAM_FINALIZER]


async def test_a_knp_of_a_gone_or_earlier_policy_is_left_alone() -> None:
    api, cloud = FakeApi(), SgCloud()
    seed_policy(api, cloud)
    api.objects[NPS][("a", "deny")]["metadata"]["uid"] = "np-uid-2"  # re-created policy
    sec = SecurityApi(Neutron(cloud, inline=True))
    async with api.client() as client:
        earlier = await adopt_upstream_policies(client, sec, SCOPE)
        del api.objects[NPS][("a", "deny")]
        gone = await adopt_upstream_policies(client, sec, SCOPE)
    assert "belongs to an earlier NetworkPolicy np-uid-1" in earlier.refused[0]
    assert "its NetworkPolicy is gone" in gone.refused[0]
    assert cloud.sgs[UP_SG]["tags"] == ["k8s"]
    assert "ingressSgRules" in knp(api)["spec"]


async def test_upstreams_sg_is_deleted_only_after_no_port_named_it_for_the_grace() -> None:
    api, cloud = FakeApi(), SgCloud()
    seed_policy(api, cloud)
    cloud.add_sg("sg-ours", name="kuryr-np-base", tags=[])
    sec = SecurityApi(Neutron(cloud, inline=True))
    async with api.client() as client:
        await adopt_upstream_policies(client, sec, SCOPE)
    cloud.add_sg("sg-unrelated", name="x", tags=["kuryr.cluster:c1"])

    async def sleep(seconds: float) -> None:
        cloud.now += seconds
        if cloud.now == 30.0:  # our KuryrPort reconciler moves the port, in one update
            cloud.move("port-db", ["sg-ours"])

    await retire_upstream_sgs(sec, SCOPE.cluster_tag, clock=lambda: cloud.now, sleep=sleep)
    [(moved_at, _), (deleted_at, what)] = cloud.log
    assert what == f"deleted {UP_SG}"
    assert deleted_at - moved_at >= SG_RETIRE_GRACE
    assert set(cloud.sgs) == {"sg-ours", "sg-unrelated"}  # only the retiring one goes


async def test_rollback_is_refused_while_a_knp_is_ours() -> None:
    api, cloud = FakeApi(), SgCloud()
    seed_policy(api, cloud)
    sec = SecurityApi(Neutron(cloud, inline=True))
    async with api.client() as client:
        assert await rollback_problem(client) is None  # upstream's format: nothing of ours
        await adopt_upstream_policies(client, sec, SCOPE)
        problem = await rollback_problem(client)
    assert problem is not None
    assert "1 KuryrNetworkPolicy(ies) are in our format (a/deny)" in problem


def test_upstream_sg_names_are_cut_to_fit() -> None:
    assert upstream_sg_name("a", "deny") == "sg/a-deny"
    long = upstream_sg_name("n" * 63, "p" * 253)
    # upstream's get_resource_name: name[:254 - (length - 254)] (cuts more than needed)
    assert long == "sg/" + ("n" * 63 + "-" + "p" * 253)[:188]


async def test_with_upstreams_status_pruned_the_sg_is_found_by_its_upstream_name() -> None:
    """Once our CRD has replaced upstream's, the API server serves upstream's KNPs pruned
    to our schema: no ``status.securityGroupId`` (nor rule lists) any more."""
    api, cloud = FakeApi(), SgCloud()
    seed_policy(api, cloud)
    pruned = knp(api)
    pruned["status"] = {}
    del pruned["spec"]["ingressSgRules"], pruned["spec"]["egressSgRules"]
    cloud.add_sg("sg-other", name="sg/a-other")
    sec = SecurityApi(Neutron(cloud, inline=True))
    async with api.client() as client:
        report = await adopt_upstream_policies(client, sec, SCOPE)
    assert report.adopted == ["a/deny"] and report.refused == []
    assert set(cloud.sgs[UP_SG]["tags"]) == RETIRING
    assert cloud.sgs["sg-other"]["tags"] == ["k8s"]
    assert knp(api)["spec"]["policyUid"] == NP_UID


async def test_two_sgs_with_upstreams_name_are_left_alone() -> None:
    api, cloud = FakeApi(), SgCloud()
    seed_policy(api, cloud)
    knp(api)["status"] = {}
    cloud.add_sg("sg-twin")  # the same upstream name
    sec = SecurityApi(Neutron(cloud, inline=True))
    async with api.client() as client:
        report = await adopt_upstream_policies(client, sec, SCOPE)
    assert report.adopted == [] and "2 security groups are named 'sg/a-deny'" in report.refused[0]
    assert cloud.sgs[UP_SG]["tags"] == cloud.sgs["sg-twin"]["tags"] == ["k8s"]
    assert np_finalizers(api) == [UPSTREAM_FINALIZER]
