"""The KuryrPort cache: the real client and informer over the in-memory API (unit fake)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kuryr_k8s.cni.daemon.vifs import ApiPods, KuryrPortVifs, node_informer
from kuryr_k8s.cni.errors import UnknownContainer, VifTimeout
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.resources import KURYRPORTS, PODS
from kuryr_k8s.model.kuryrport import NODE_LABEL
from unit.cni.fakes import make_vif
from unit.k8s.fakeapi import FakeApi

pytestmark = pytest.mark.unit


def kuryrport(name: str, node: str, vifs: dict[str, Any] | None = None, uid: str = "u1") -> Any:
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {NODE_LABEL: node}},
        "spec": {"podUid": uid, "podNodeName": node},
        "status": {"vifs": vifs or {}},
    }


def pod(name: str) -> Any:
    return {"metadata": {"name": name, "namespace": "ns"}}


@pytest.fixture
async def cache() -> AsyncIterator[tuple[KubeClient, KubeClient, KuryrPortVifs]]:
    # Pods live in a second fake API: the unit fake's watch spins while another
    # collection has newer events than the watched one.
    api, pods_api = FakeApi(), FakeApi()
    async with api.client() as client, pods_api.client() as pods:
        informer = node_informer(client, "node-1")
        vifs = KuryrPortVifs(informer, ApiPods(pods))
        task = asyncio.create_task(informer.run())
        await informer.wait_synced()
        yield client, pods, vifs
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.end_watches()


async def test_waits_for_the_vif_written_later(cache: Any) -> None:
    client, pods, vifs = cache
    vif = make_vif()
    await pods.create(PODS, pod("pod-a"))
    await client.create(KURYRPORTS, kuryrport("pod-a", "node-1"))
    waiter = asyncio.create_task(vifs.wait_vif("ns", "pod-a", "eth0", "u1", 10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await client.patch(
        KURYRPORTS,
        "pod-a",
        {"status": {"vifs": {"eth0": {"default": True, "vif": vif.to_dict()}}}},
        "ns",
    )
    assert await waiter == vif
    assert vifs.current_vif("ns", "pod-a", "eth0") == vif
    assert vifs.has_pod("ns/pod-a")


async def test_ignores_other_nodes_and_other_pod_uids(cache: Any) -> None:
    client, pods, vifs = cache
    entry = {"eth0": {"default": True, "vif": make_vif().to_dict()}}
    await client.create(KURYRPORTS, kuryrport("pod-b", "node-2", entry))
    await client.create(KURYRPORTS, kuryrport("pod-c", "node-1", entry, uid="old"))
    await pods.create(PODS, pod("pod-b"))
    await pods.create(PODS, pod("pod-c"))
    with pytest.raises(VifTimeout, match="no KuryrPort"):
        await vifs.wait_vif("ns", "pod-b", "eth0", "u1", 0.2)
    with pytest.raises(VifTimeout, match="pod uid old"):
        await vifs.wait_vif("ns", "pod-c", "eth0", "u1", 0.2)


async def test_default_vif_serves_any_ifname_and_invalid_vif_is_reported(cache: Any) -> None:
    client, pods, vifs = cache
    vif = make_vif()
    await pods.create(PODS, pod("pod-d"))
    await pods.create(PODS, pod("pod-e"))
    await client.create(
        KURYRPORTS, kuryrport("pod-d", "node-1", {"eth0": {"default": True, "vif": vif.to_dict()}})
    )
    await client.create(
        KURYRPORTS, kuryrport("pod-e", "node-1", {"eth0": {"default": True, "vif": {"x": 1}}})
    )
    assert await vifs.wait_vif("ns", "pod-d", "net0", "", 5) == vif
    with pytest.raises(VifTimeout, match="invalid VIF"):
        await vifs.wait_vif("ns", "pod-e", "eth0", "", 0.2)


async def test_a_pod_the_api_does_not_know_is_unknown_at_once(cache: Any) -> None:
    _, _, vifs = cache
    with pytest.raises(UnknownContainer, match="ns/ghost"):
        await vifs.wait_vif("ns", "ghost", "eth0", "", 30)
