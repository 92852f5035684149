"""NetworkPolicy by identity SGs (``security_group_mode = identity``): what reaches Neutron.

A small Neutron (security groups, rules, ports naming SGs) behind the real
:class:`SecurityApi`; the Kubernetes side is the fake API (KuryrNetworkPolicies) and
stores filled as informers would. The claims of the design are checked on the resulting
state: a new policy over 100 replicas changes one SG's rules and no port, rules are
created before the old ones go, the placement never hands out an SG whose rules lag the
namespace's policies, a restart adopts what exists, unused SGs go after the grace.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from kuryr_k8s.controller.policies import SG_RETIRE_GRACE, PolicyWorld
from kuryr_k8s.controller.policy_identities import (
    IDENTITY_TAG,
    IdentityPlacement,
    IdentityReconciler,
)
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.k8s.resources import KURYRNETWORKPOLICIES
from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.model.kuryrnetwork import KNP_FINALIZER
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.security import SecurityApi
from unit.k8s.fakeapi import FakeApi

CLUSTER = "c1"
KNPS = "/apis/openstack.org/v1/kuryrnetworkpolicies"
RULE_FIELDS = (
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "remote_group_id",
    "remote_ip_prefix",
)


class SgNeutron:
    """Security groups, their rules and the ports naming them, as Neutron keeps them."""

    def __init__(self) -> None:
        self.sgs: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self.refuse_tags = False

    def rules(self, sg_id: str) -> set[tuple[Any, ...]]:
        return {
            tuple(r.get(k) for k in RULE_FIELDS) for r in self.sgs[sg_id]["security_group_rules"]
        }

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "GET"]

    def _rule(self, sg_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        rule = {"id": f"rule-{next(self._ids)}", "security_group_id": sg_id, **body}
        self.sgs[sg_id]["security_group_rules"].append(rule)
        return rule

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        self.calls.append((method, path.rsplit("/", 1)[0] if method == "DELETE" else path))
        params = params or {}
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/security-groups":
            sg_id = f"sg-{next(self._ids)}"
            self.sgs[sg_id] = {"id": sg_id, "tags": [], "security_group_rules": []}
            self.sgs[sg_id].update(body["security_group"])
            for eth in ("IPv4", "IPv6"):  # Neutron's default egress rules
                self._rule(sg_id, {"direction": "egress", "ethertype": eth})
            return 201, {"security_group": self.sgs[sg_id]}
        if method == "PUT" and len(parts) == 3 and parts[2] == "tags" and self.refuse_tags:
            return 503, {"NeutronError": {"type": "ServiceUnavailable", "message": "busy"}}
        if method == "PUT" and len(parts) == 3 and parts[2] == "tags":
            self.sgs[parts[1]]["tags"] = list(body["tags"])
            return 200, {"tags": body["tags"]}
        if method == "GET" and path == "/security-groups":
            want = set(str(params["tags"]).split(",")) if "tags" in params else set()
            found = [sg for sg in self.sgs.values() if want <= set(sg["tags"])]
            return 200, {"security_groups": found}
        if method == "POST" and path == "/security-group-rules":
            made = []
            for r in body["security_group_rules"]:
                remote = r.get("remote_group_id")
                if remote is not None and remote not in self.sgs:
                    return 404, {"NeutronError": {"type": "SecurityGroupNotFound", "message": ""}}
                fields = {
                    k: v for k, v in r.items() if k not in ("security_group_id", "project_id")
                }
                made.append(self._rule(r["security_group_id"], fields))
            return 201, {"security_group_rules": made}
        if method == "DELETE" and parts[0] == "security-group-rules":
            for sg in self.sgs.values():
                sg["security_group_rules"] = [
                    r for r in sg["security_group_rules"] if r["id"] != parts[1]
                ]
            return 204, None
        if method == "GET" and path == "/ports":
            sg = params.get("security_groups")
            return 200, {"ports": [{"id": p} for p, sgs in self.ports.items() if sg in sgs]}
        if method == "DELETE" and parts[0] == "security-groups":
            named = any(
                r.get("remote_group_id") == parts[1]
                for sg in self.sgs.values()
                for r in sg["security_group_rules"]
            )
            if named or any(parts[1] in sgs for sgs in self.ports.values()):
                msg = f"Security Group {parts[1]} in use."
                return 409, {"NeutronError": {"type": "SecurityGroupInUse", "message": msg}}
            self.sgs.pop(parts[1], None)
            return 204, None
        return 400, {"NeutronError": {"type": "HTTPBadRequest", "message": f"{method} {path}"}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _pod(name: str, labels: dict[str, str], ns: str = "a") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running"},
    }


def _policy(name: str, spec: dict[str, Any], ns: str = "a", rv: str = "1") -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, "uid": f"uid-{name}", "resourceVersion": rv}
    return {"metadata": meta, "spec": spec}


DENY_INGRESS = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}


class Env:
    def __init__(self, client: KubeClient, api: FakeApi, neutron: SgNeutron) -> None:
        self.api, self.neutron, self.clock = api, neutron, Clock()
        self.world = PolicyWorld(Store(), Store(), Store(), Store())
        self.world.namespaces.put({"metadata": {"name": "a", "labels": {}}})
        self.client = client
        self.kicks = 0
        self.rec = self.reconciler()
        self.placement = IdentityPlacement(None, self.world, self.rec)

    def reconciler(self) -> IdentityReconciler:
        rec = IdentityReconciler(
            self.client, self.world, SecurityApi(Neutron(self.neutron, inline=True)),
            cluster_id=CLUSTER, project_id="p1", clock=self.clock,
        )  # fmt: skip

        def kick() -> None:
            self.kicks += 1

        rec.kick = kick
        return rec

    async def sync(self) -> None:
        """One pass, then the KNPs into the store, as their informer would."""
        await self.rec.reconcile("cluster/identities")
        self.world.knps.replace(self.api.objects.get(KNPS, {}).values())

    async def sgs_for(self, name: str, ns: str = "a") -> tuple[str, ...]:
        pod = self.world.pods.get(f"{ns}/{name}")
        assert pod is not None
        return await self.placement.security_groups_for(pod, None)  # type: ignore[arg-type]


@pytest.fixture
async def env() -> Any:
    api, neutron = FakeApi(), SgNeutron()
    async with api.client() as client:
        yield Env(client, api, neutron)


async def test_a_new_policy_over_100_replicas_changes_one_sgs_rules_and_no_port(env: Env) -> None:
    for i in range(100):
        env.world.pods.put(_pod(f"web-{i}", {"app": "web"}))
    env.world.pods.put(_pod("client", {"app": "client"}))
    await env.sync()
    web = await env.sgs_for("web-0")
    assert all([await env.sgs_for(f"web-{i}") == web for i in range(100)])
    assert await env.sgs_for("client") != web
    open_both = {
        (d, eth, None, None, None, None) for d in ("ingress", "egress") for eth in ("IPv4", "IPv6")
    }
    assert env.neutron.rules(web[0]) == open_both

    env.neutron.calls.clear()
    env.world.policies.put(_policy("deny", DENY_INGRESS))
    await env.sync()
    assert env.neutron.rules(web[0]) == {r for r in open_both if r[0] == "egress"}
    assert env.neutron.rules((await env.sgs_for("client"))[0]) == open_both
    assert not [c for c in env.neutron.writes() if "ports" in c[1]], "no port was touched"
    assert env.neutron.writes() == [("DELETE", "/security-group-rules")] * 2
    knp = env.api.objects[KNPS][("a", "deny")]
    assert (
        knp["status"]["securityGroups"] == {k: web[0] for k in knp["status"]["securityGroups"]}
        and len(knp["status"]["securityGroups"]) == 1
    )
    assert knp["status"]["selectedPods"] == 100
    assert all([await env.sgs_for(f"web-{i}") == web for i in range(100)])


async def test_rules_are_created_before_the_old_ones_go(env: Env) -> None:
    env.world.pods.put(_pod("web", {"app": "web"}))
    env.world.pods.put(_pod("client", {"app": "client"}))
    await env.sync()
    allow = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
    }
    env.neutron.calls.clear()
    env.world.policies.put(_policy("allow", allow))
    await env.sync()
    writes = env.neutron.writes()
    assert writes[0] == ("POST", "/security-group-rules")
    assert writes[1:] == [("DELETE", "/security-group-rules")] * 2
    web, client = (await env.sgs_for("web"))[0], (await env.sgs_for("client"))[0]
    ingress = {r for r in env.neutron.rules(web) if r[0] == "ingress"}
    assert ingress == {("ingress", eth, None, None, client, None) for eth in ("IPv4", "IPv6")}

    # the policy goes: its pods are open again, allow-all created before the rule goes
    env.neutron.calls.clear()
    env.world.policies.remove("a/allow")
    await env.sync()
    writes = env.neutron.writes()
    assert writes[0] == ("POST", "/security-group-rules")
    assert ("ingress", "IPv4", None, None, None, None) in env.neutron.rules(web)
    assert ("a", "allow") not in env.api.objects.get(KNPS, {}) or KNP_FINALIZER not in (
        env.api.objects[KNPS][("a", "allow")]["metadata"].get("finalizers") or []
    )


async def test_the_placement_waits_for_a_pass_that_saw_the_namespaces_policies(
    env: Env,
) -> None:
    ready: list[str] = []
    env.rec.on_ready = ready.append
    env.world.pods.put(_pod("web-0", {"app": "web"}))
    with pytest.raises(ResourceNotReady, match="identity"):
        await env.sgs_for("web-0")
    assert env.kicks == 1
    assert ready == []
    await env.sync()
    assert ready == ["a/web-0"], "its KuryrPort is looked at again after the pass"
    sg = await env.sgs_for("web-0")

    # a deny policy arrives: no pod of the namespace is handed the SG until its rules
    # reflect it (a new replica must never start open)
    env.world.policies.put(_policy("deny", DENY_INGRESS))
    env.world.pods.put(_pod("web-1", {"app": "web"}))
    with pytest.raises(ResourceNotReady):
        await env.sgs_for("web-1")
    await env.sync()
    assert await env.sgs_for("web-1") == sg
    assert not {r for r in env.neutron.rules(sg[0]) if r[0] == "ingress"}
    # a changed policy (new resourceVersion) waits for the pass again
    env.world.policies.put(_policy("deny", DENY_INGRESS, rv="2"))
    with pytest.raises(ResourceNotReady):
        await env.sgs_for("web-1")
    # other namespaces are not held up by it
    env.world.namespaces.put({"metadata": {"name": "b", "labels": {}}})
    env.world.pods.put(_pod("other", {"app": "web"}, ns="b"))
    await env.sync()
    assert await env.sgs_for("other", ns="b") != sg


async def test_a_restart_adopts_the_sgs_and_changes_nothing(env: Env) -> None:
    for name, labels in (("web", {"app": "web"}), ("db", {"app": "db"})):
        env.world.pods.put(_pod(name, labels))
    env.world.policies.put(_policy("deny", DENY_INGRESS))
    await env.sync()
    before = {k: dict(v) for k, v in env.neutron.sgs.items()}
    env.neutron.calls.clear()
    env.rec = env.reconciler()  # a new controller process
    env.placement = IdentityPlacement(None, env.world, env.rec)
    await env.sync()
    assert env.neutron.writes() == []
    assert env.neutron.sgs.keys() == before.keys()
    assert await env.sgs_for("web") != await env.sgs_for("db")


async def test_an_identity_nobody_has_any_more_goes_after_the_grace(env: Env) -> None:
    env.world.pods.put(_pod("web", {"app": "web"}))
    env.world.pods.put(_pod("db", {"app": "db"}))
    await env.sync()
    db_sg = (await env.sgs_for("db"))[0]
    env.neutron.ports["port-db"] = [db_sg]
    env.world.pods.remove("a/db")
    await env.sync()
    assert db_sg in env.neutron.sgs, "a port still names it"
    env.neutron.ports["port-db"] = []
    await env.sync()
    env.clock.t += SG_RETIRE_GRACE - 0.1
    await env.sync()
    assert db_sg in env.neutron.sgs, "unused for less than the grace"
    env.clock.t += 0.2
    await env.sync()
    assert db_sg not in env.neutron.sgs
    assert [IDENTITY_TAG in t for sg in env.neutron.sgs.values() for t in sg["tags"]].count(
        True
    ) == 1


async def test_a_new_peer_identity_adds_rules_only_where_a_policy_names_it(env: Env) -> None:
    allow = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
    }
    env.world.policies.put(_policy("allow", allow))
    env.world.pods.put(_pod("web", {"app": "web"}))
    env.world.pods.put(_pod("db", {"app": "db"}))
    env.world.pods.put(_pod("c1", {"role": "client", "v": "1"}))
    await env.sync()
    # another replica of an existing identity: nothing to write
    env.neutron.calls.clear()
    env.world.pods.put(_pod("c1b", {"role": "client", "v": "1"}))
    await env.sync()
    assert env.neutron.writes() == []
    # a client of a new identity: its SG with its rules, and one rule per ethertype on
    # web's SG; db's and c1's SGs are not written
    db, c1 = (await env.sgs_for("db"))[0], (await env.sgs_for("c1"))[0]
    before = {sg: env.neutron.rules(sg) for sg in (db, c1)}
    env.world.pods.put(_pod("c2", {"role": "client", "v": "2"}))
    await env.sync()
    writes = env.neutron.writes()
    assert writes.count(("POST", "/security-groups")) == 1
    assert writes.count(("POST", "/security-group-rules")) == 2
    assert {sg: env.neutron.rules(sg) for sg in (db, c1)} == before
    web, c2 = (await env.sgs_for("web"))[0], (await env.sgs_for("c2"))[0]
    assert {("ingress", e, None, None, c2, None) for e in ("IPv4", "IPv6")} <= env.neutron.rules(
        web
    )


async def test_knps_record_what_cannot_be_expressed(env: Env) -> None:
    sctp = {
        "podSelector": {},
        "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}],
    }
    env.rec.unsupported = frozenset({"SCTP"})
    env.world.pods.put(_pod("web", {"app": "web"}))
    env.world.policies.put(_policy("sctp", sctp))
    await env.sync()
    sg = (await env.sgs_for("web"))[0]
    assert not {r for r in env.neutron.rules(sg) if r[0] == "ingress"}, "deny side"
    knp = await env.client.get(KURYRNETWORKPOLICIES, "sctp", "a")
    cond = {c["type"]: c for c in knp["status"]["conditions"]}
    assert cond["Unsupported"]["status"] == "True" and "SCTP" in cond["Unsupported"]["message"]


async def test_a_duplicate_identity_sg_found_at_restart_is_retired(env: Env) -> None:
    """A create retried after a crash can leave two SGs for one identity: the restarted
    controller keeps one and deletes the other once no port uses it."""
    env.world.pods.put(_pod("web", {"app": "web"}))
    await env.sync()
    (sg,) = await env.sgs_for("web")
    twin = dict(env.neutron.sgs[sg], id="sg-twin", security_group_rules=[])
    env.neutron.sgs["sg-twin"] = twin
    env.neutron.ports["port-old"] = ["sg-twin"]
    env.rec = env.reconciler()
    env.placement = IdentityPlacement(None, env.world, env.rec)
    await env.sync()
    assert await env.sgs_for("web") == (sg,), "the first one found is kept"
    env.clock.t += SG_RETIRE_GRACE + 0.1
    await env.sync()
    assert "sg-twin" in env.neutron.sgs, "a port still names it"
    env.neutron.ports["port-old"] = []
    await env.sync()
    env.clock.t += SG_RETIRE_GRACE + 0.1
    await env.sync()
    assert sg in env.neutron.sgs and "sg-twin" not in env.neutron.sgs


async def test_an_sg_is_never_left_untagged(env: Env) -> None:
    """Neutron Zed takes no tags on create: an SG whose tagging fails is deleted at once,
    and one left untagged by a killed controller (named after the cluster) is retired by
    the next one."""
    env.neutron.refuse_tags = True
    env.world.pods.put(_pod("web", {"app": "web"}))
    with pytest.raises(Exception, match="busy"):
        await env.sync()
    assert env.neutron.sgs == {}, "the SG whose tagging failed is gone"
    env.neutron.refuse_tags = False
    env.neutron.sgs["sg-killed"] = {
        "id": "sg-killed",
        "name": f"kuryr-id-{CLUSTER}-0123456789abcdef",
        "tags": [],
        "security_group_rules": [],
    }
    env.neutron.sgs["sg-foreign"] = {
        "id": "sg-foreign",
        "name": f"kuryr-id-{CLUSTER}-x-0123456789abcdef",  # cluster "c1-x", not "c1"
        "tags": [],
        "security_group_rules": [],
    }
    env.rec = env.reconciler()
    env.placement = IdentityPlacement(None, env.world, env.rec)
    await env.sync()
    env.clock.t += SG_RETIRE_GRACE + 0.1
    await env.sync()
    assert "sg-killed" not in env.neutron.sgs
    assert "sg-foreign" in env.neutron.sgs, "another cluster's is not ours to delete"
    assert len(await env.sgs_for("web")) == 1


async def test_other_keys_ask_for_one_pass_and_passes_never_overlap(env: Env) -> None:
    """The controller queues every cached pod/KuryrPort key into every engine: here each
    only asks for the pass; passes queued at once run one after the other (two at once
    created an identity's SG twice on the sandbox)."""
    env.world.pods.put(_pod("web", {"app": "web"}))
    await env.rec.reconcile("a/web")
    assert env.kicks == 1 and env.neutron.calls == []
    await asyncio.gather(*(env.rec.reconcile("cluster/identities") for _ in range(3)))
    assert env.neutron.writes().count(("POST", "/security-groups")) == 1
