"""Fixtures of the k8s adapter unit tests: an in-memory API and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kuryr_k8s.k8s import KubeClient
from unit.k8s.fakeapi import FakeApi, FakeClock
from unit.k8s.loopback import serve


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["mock", "loopback"])
async def client(
    request: pytest.FixtureRequest, api: FakeApi, clock: FakeClock
) -> AsyncIterator[KubeClient]:
    """The client over ``httpx.MockTransport`` and over its real network (aiohttp) to the
    same API served on a loopback socket."""
    if request.param == "loopback" and request.node.get_closest_marker("mock_only"):
        pytest.skip(str(request.node.get_closest_marker("mock_only").args[0]))
    if request.param == "mock":
        async with api.client(sleep=clock.sleep) as c:
            yield c
        await api.end_watches()
        return
    async with serve(api) as url:
        async with api.client(sleep=clock.sleep, server=url) as c:
            yield c
        await api.end_watches()
