"""Shared fixtures: the emulator's API and control loops, in process (no HTTP)."""

from __future__ import annotations

import pytest

from kuryr_k8s.sandbox.kubeapi.api import Api
from kuryr_k8s.sandbox.kubeapi.controllers import Controllers
from kuryr_k8s.sandbox.kubeapi.resources import Registry, ResourceType
from kuryr_k8s.sandbox.kubeapi.store import Store


@pytest.fixture
def api() -> Api:
    return Api(Store(), Registry())


@pytest.fixture
def ctl(api: Api) -> Controllers:
    """The controllers, with namespace ``ns`` made and its loops run."""
    ctl = Controllers(api, orphan_quarantine=40.0)
    api.create(rt_of(api, "/namespaces"), "v1", "", {"metadata": {"name": "ns"}})
    ctl.run_pending()
    return ctl


def rt_of(api: Api, key: str) -> ResourceType:
    rt = api.registry.get(key)
    assert rt is not None
    return rt
