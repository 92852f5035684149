"""Upstream's NetworkPolicy taken over against the sandbox's real Neutron.

An SG named as upstream 10.0.0 names a policy's SG (``sg/<ns>-<name>``, only upstream's
resource tag) on a port, with an upstream-format KuryrNetworkPolicy and the NetworkPolicy
(upstream's finalizer on both) in a private API emulator. The takeover converts the
KuryrNetworkPolicy, tags the SG as a retiring variant of the policy and removes the
NetworkPolicy's finalizer; the retirement loop leaves the SG while the port names it and
deletes it once the port has moved to another SG (as our KuryrPort reconciler moves it)
and the grace has passed. The port and any SG left are deleted at the end."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from fixtures.kubeapi import KubeApi
from fixtures.sandbox import NeutronTracker, Sandbox
from kuryr_k8s.controller.crds import ensure_crds
from kuryr_k8s.controller.policies import SG_RETIRE_GRACE
from kuryr_k8s.controller.takeover_policies import (
    UPSTREAM_FINALIZER,
    PolicyScope,
    adopt_upstream_policies,
    retire_upstream_sgs,
    upstream_sg_name,
)
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.resources import KURYRNETWORKPOLICIES, NAMESPACES, NETWORKPOLICIES
from kuryr_k8s.model import kuryrnetwork
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.security import SecurityApi

pytestmark = pytest.mark.functional


async def _seed(client: KubeClient, ns: str, sg_id: str) -> str:
    await ensure_crds(client, list(kuryrnetwork.crd_manifests()))
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    selector = {"matchLabels": {"app": "db"}}
    policy = await client.create(
        NETWORKPOLICIES,
        {
            "metadata": {"name": "deny", "namespace": ns, "finalizers": [UPSTREAM_FINALIZER]},
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"]},
        },
        ns,
    )
    uid = str(policy["metadata"]["uid"])
    await client.create(
        KURYRNETWORKPOLICIES,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrNetworkPolicy",
            "metadata": {
                "name": "deny",
                "namespace": ns,
                "finalizers": [UPSTREAM_FINALIZER],
                "ownerReferences": [
                    {
                        "apiVersion": "networking.k8s.io/v1",
                        "kind": "NetworkPolicy",
                        "name": "deny",
                        "uid": uid,
                    }
                ],
            },
            "spec": {
                "podSelector": selector,
                "policyTypes": ["Ingress"],
                "ingressSgRules": [],
                "egressSgRules": [],
            },
        },
        ns,
    )
    status = {"securityGroupId": sg_id, "securityGroupRules": [], "podSelector": selector}
    await client.patch(KURYRNETWORKPOLICIES, "deny", {"status": status}, ns, subresource="status")
    return uid


async def _takeover(
    api: KubeApi, sandbox: Sandbox, ns: str, sg_id: str, scope: PolicyScope, move: Any
) -> tuple[str, Any, dict[str, Any], dict[str, Any], list[float]]:
    neutron = Neutron.connect(NeutronSettings(endpoint=sandbox.settings.neutron_url, timeout=60))
    sec = SecurityApi(neutron)
    try:
        async with KubeClient.from_settings(load_kubeconfig(api.kubeconfig)) as client:
            uid = await _seed(client, ns, sg_id)
            report = await adopt_upstream_policies(client, sec, scope)
            knp = await client.get(KURYRNETWORKPOLICIES, "deny", ns)
            policy = await client.get(NETWORKPOLICIES, "deny", ns)
        moments: list[float] = []

        async def sleep(seconds: float) -> None:
            await asyncio.sleep(seconds)
            if len(moments) == 2:  # two passes saw the port on it: now move the port
                await asyncio.to_thread(move)
                moments.append(time.monotonic())
            elif len(moments) < 2:
                moments.append(time.monotonic())

        await asyncio.wait_for(
            retire_upstream_sgs(sec, scope.cluster_tag, sleep=sleep, every=1.0), 60
        )
        moments.append(time.monotonic())
        return uid, report, knp, policy, moments
    finally:
        neutron.close()


def test_upstreams_policy_sg_is_adopted_then_retired_after_the_port_moved(
    neutron: NeutronTracker, sandbox: Sandbox, kube_api: KubeApi
) -> None:
    topo = sandbox.topo
    net = neutron.conn.network
    ns = f"kt-np-{secrets.token_hex(3)}"
    sg = net.create_security_group(
        name=upstream_sg_name(ns, "deny"),
        project_id=topo.project_id,
        description="kuryr functional test: an upstream policy SG",
    )
    neutron._track("security_group", sg)
    net.set_tags(sg, ["kt-upstream"])
    port = neutron.port(
        topo.net1_id,
        name="kt-np-selected",
        device_owner="compute:kuryr-e2e",
        security_group_ids=[sg.id],
    )
    scope = PolicyScope(f"kuryr.cluster:kt-{secrets.token_hex(6)}", topo.project_id)

    def move() -> None:  # what our KuryrPort reconciler does: one update, whole SG list
        net.update_port(port, security_group_ids=[topo.default_sg_id])

    uid, report, knp, policy, moments = asyncio.run(
        _takeover(kube_api, sandbox, ns, sg.id, scope, move)
    )
    assert report.adopted == [f"{ns}/deny"] and report.released == [f"{ns}/deny"]
    assert report.refused == []
    assert knp["spec"] == {
        "policyUid": uid,
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
    }
    assert "securityGroupId" not in (knp.get("status") or {})
    assert UPSTREAM_FINALIZER not in (policy["metadata"].get("finalizers") or [])
    # the SG was kept while the port named it, and deleted a grace after the move
    assert len(moments) == 4, moments
    assert moments[3] - moments[2] >= SG_RETIRE_GRACE
    assert net.find_security_group(sg.id, ignore_missing=True) is None
    assert net.get_port(port.id).security_group_ids == [topo.default_sg_id]
