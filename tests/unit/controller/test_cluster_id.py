"""An upstream ``kuryr.conf`` has no ``[neutron_defaults] cluster_id``: the controller then
names the cluster after the kube-system namespace's uid, and says clearly when it cannot."""

from __future__ import annotations

import pytest

from kuryr_k8s.controller.build import resolve_cluster_id
from kuryr_k8s.model.errors import ConfigError
from unit.k8s.fakeapi import FakeApi

UID = "5c1d0a4e-7f3b-4c55-9d7e-0c2b1f6e9a10"


async def test_a_configured_cluster_id_wins_without_asking_the_api() -> None:
    api = FakeApi()
    async with api.client() as client:
        assert await resolve_cluster_id(client, "prod-east") == "prod-east"
    assert api.requests == []


async def test_without_one_the_kube_system_uid_names_the_cluster() -> None:
    api = FakeApi()
    api.seed("/api/v1/namespaces", {"metadata": {"name": "kube-system", "uid": UID}})
    api.seed("/api/v1/namespaces", {"metadata": {"name": "default", "uid": "other"}})
    async with api.client() as client:
        first = await resolve_cluster_id(client, "")
        again = await resolve_cluster_id(client, "")
    assert first == again == f"k8s-{UID}"


async def test_an_unreadable_kube_system_is_a_config_error_saying_what_to_set() -> None:
    api = FakeApi()
    api.fail_next(403, "Forbidden")
    async with api.client() as client:
        with pytest.raises(ConfigError) as err:
            await resolve_cluster_id(client, "")
    assert "[neutron_defaults] cluster_id is not set" in str(err.value)
    assert "namespace kube-system" in str(err.value)
    assert "set cluster_id" in str(err.value)
