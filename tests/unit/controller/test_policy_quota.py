"""A policy Neutron refuses for the project's quota keeps being retried (quotas free up
when something else is deleted), with a message saying what to do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kuryr_k8s.controller.policies import QUOTA_RETRY, PolicyReconciler, PolicyWorld
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.model.errors import PermanentError, TemporaryError
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.security import SecurityApi
from unit.k8s.fakeapi import FakeApi

POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all", "namespace": "a", "uid": "pol-1"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}


class QuotaFull:
    """Neutron with no security group left in the project's quota."""

    def __init__(self) -> None:
        self.created = 0

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        if method == "GET":
            return 200, {path.strip("/").replace("-", "_"): []}
        if method == "POST" and path == "/security-groups":
            msg = "Quota exceeded for resources: ['security_group']."
            return 409, {"NeutronError": {"type": "OverQuota", "message": msg}}
        return 400, {"NeutronError": {"type": "HTTPBadRequest", "message": path}}


async def test_a_policy_over_the_sg_quota_is_retried_not_dropped() -> None:
    api = FakeApi()
    world = PolicyWorld(Store(), Store(), Store(), Store())
    world.policies.put(POLICY)
    async with api.client() as client:
        rec = PolicyReconciler(
            client, world, SecurityApi(Neutron(QuotaFull(), inline=True)), cluster_id="c1",
            project_id="p1",
        )  # fmt: skip
        with pytest.raises(TemporaryError) as err:
            await rec.reconcile("a/deny-all")
    assert not isinstance(err.value, PermanentError)
    assert err.value.delay == QUOTA_RETRY
    assert "Quota exceeded" in str(err.value) and "raise the project's quota" in str(err.value)
