"""Fixtures of the node-agent tests: an API client, a CNI setup with the test plugin, agents.

Everything a test creates on the host (netns, veths, IPAM files) is removed at teardown,
even when the test fails, and ``ip netns list`` is checked to be what it was before.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi
from functional.nodeagent.helpers import Agents, ClientFactory, CniSetup, leak_guard, make_cni
from kuryr_k8s.k8s import KubeClient, load_kubeconfig
from kuryr_k8s.sandbox.nodeagent import NodeAgentConfig


@pytest.fixture
def no_leaks(namespace: str, cni: CniSetup) -> Iterator[None]:
    """Remove whatever netns/veth a test leaves behind, then insist nothing was left."""
    with leak_guard(namespace, cni):
        yield


@pytest.fixture
def kube_client_factory(kube_api: KubeApi) -> ClientFactory:
    """Builds async clients of the test Kubernetes API (the emulator, or a real cluster)."""
    settings = load_kubeconfig(Path(kube_api.kubeconfig))
    return lambda: KubeClient.from_settings(settings)


@pytest.fixture
async def kube(kube_client_factory: ClientFactory) -> AsyncIterator[KubeClient]:
    async with kube_client_factory() as client:
        yield client


@pytest.fixture
def namespace(kube_namespace: str) -> str:
    """A fresh namespace for the test's pods (deleted afterwards)."""
    return kube_namespace


@pytest.fixture
def cni(tmp_path: Path) -> CniSetup:
    """The test plugin under two names, and a conflist chaining them (plus decoys)."""
    return make_cni(tmp_path)


@pytest.fixture
async def agents(
    kube_client_factory: ClientFactory, cni: CniSetup, tmp_path: Path, no_leaks: None
) -> AsyncIterator[Agents]:
    """Agents of one fresh node; stopped and cleaned up (then checked for leaks) after."""
    base = NodeAgentConfig(
        nodes=(f"na-node-{uuid.uuid4().hex[:6]}",),
        node_ip="192.0.2.10",
        cni_conf_dir=cni.conf_dir,
        cni_bin_dirs=(cni.bin_dir,),
        state_dir=tmp_path / "state",
        heartbeat_interval=1.0,
        retry_base=0.2,
        retry_cap=1.0,
        cni_timeout=30.0,
    )
    runner = Agents(kube_client_factory, base)
    try:
        yield runner
    finally:
        await runner.cleanup()
