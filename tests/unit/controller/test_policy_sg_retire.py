"""A deleted policy's security group goes only after no port has used it for a grace.

ML2/OVN commits a port update to its DB before it moves the port between OVN port
groups; an SG deleted in between takes its port group along and the port's OVN update
fails, leaving the port in the wrong port groups (the policy e2e saw pods closed for
minutes). Neutron's own "in use" check cannot close that window, so the reconciler waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kuryr_k8s.controller.policies import SG_RETIRE_GRACE, PolicyReconciler, PolicyWorld
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.k8s.resources import KURYRNETWORKPOLICIES
from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.model.kuryrnetwork import KNP_FINALIZER
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.security import SecurityApi
from unit.k8s.fakeapi import FakeApi

CLUSTER = "c1"
POLICY_UID = "pol-1"
SG = "sg-policy"
KNP = {
    "apiVersion": "openstack.org/v1",
    "kind": "KuryrNetworkPolicy",
    "metadata": {"name": "deny", "namespace": "a", "finalizers": [KNP_FINALIZER]},
    "spec": {"policyUid": POLICY_UID},
}


class SgNeutron:
    """Neutron's view of one policy SG and the ports naming it."""

    def __init__(self) -> None:
        self.sgs = {SG: [f"kuryr.cluster:{CLUSTER}", f"kuryr.owner:{POLICY_UID}"]}
        self.ports: dict[str, list[str]] = {"port-1": [SG]}

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
        if method == "GET" and path == "/security-groups":
            want = set(str(params.get("tags", "")).split(","))
            found = [
                {"id": i, "name": i, "tags": t, "security_group_rules": []}
                for i, t in self.sgs.items()
                if want <= set(t)
            ]
            return 200, {"security_groups": found}
        if method == "GET" and path == "/ports":
            sg = params.get("security_groups")
            return 200, {"ports": [{"id": p} for p, sgs in self.ports.items() if sg in sgs]}
        if method == "GET" and path == "/address-groups":
            return 200, {"address_groups": []}
        if method == "DELETE" and path.startswith("/security-groups/"):
            sg_id = path.rsplit("/", 1)[1]
            if any(sg_id in sgs for sgs in self.ports.values()):
                msg = f"Security Group {sg_id} in use."
                return 409, {"NeutronError": {"type": "SecurityGroupInUse", "message": msg}}
            if self.sgs.pop(sg_id, None) is None:
                return 404, {"NeutronError": {"type": "SecurityGroupNotFound", "message": ""}}
            return 204, None
        return 400, {"NeutronError": {"type": "HTTPBadRequest", "message": f"{method} {path}"}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_an_sg_unused_for_less_than_the_grace_is_kept() -> None:
    neutron, clock = SgNeutron(), Clock()
    api = FakeApi()
    world = PolicyWorld(Store(), Store(), Store(), Store())
    world.knps.put(api.seed("/apis/openstack.org/v1/kuryrnetworkpolicies", KNP))
    async with api.client() as client:
        rec = PolicyReconciler(
            client, world, SecurityApi(Neutron(neutron, inline=True)), cluster_id=CLUSTER,
            project_id="p1", clock=clock,
        )  # fmt: skip

        async def kept() -> None:
            with pytest.raises(ResourceNotReady, match="still used by ports"):
                await rec.reconcile("a/deny")
            assert SG in neutron.sgs

        await kept()  # the policy is gone but a port still carries its SG
        neutron.ports["port-1"] = []  # its update committed: Neutron would let the SG go
        await kept()
        clock.t += SG_RETIRE_GRACE - 0.1
        await kept()
        neutron.ports["port-2"] = [SG]  # a port taking it again restarts the grace
        clock.t += 1.0
        await kept()
        neutron.ports["port-2"] = []
        await kept()
        clock.t += SG_RETIRE_GRACE - 0.1
        await kept()
        knp = await client.get(KURYRNETWORKPOLICIES, "deny", "a")
        assert KNP_FINALIZER in knp["metadata"]["finalizers"]
        # unused for the whole grace: deleted, and the KNP's finalizer goes
        clock.t += 0.2
        await rec.reconcile("a/deny")
    assert SG not in neutron.sgs
    stored = api.objects["/apis/openstack.org/v1/kuryrnetworkpolicies"].get(("a", "deny"))
    assert stored is None or KNP_FINALIZER not in (stored["metadata"].get("finalizers") or [])
