"""Fixtures of the k8s adapter unit tests: an in-memory API and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kuryr_k8s.k8s import KubeClient
from unit.k8s.fakeapi import FakeApi, FakeClock


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(api: FakeApi, clock: FakeClock) -> AsyncIterator[KubeClient]:
    async with api.client(sleep=clock.sleep) as c:
        yield c
    await api.end_watches()
