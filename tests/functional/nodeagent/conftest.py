"""Fixtures of the node-agent tests: an API client, a CNI setup with the test plugin, agents.

Everything a test creates on the host (netns, veths, IPAM files) is removed at teardown,
even when the test fails, and ``ip netns list`` is checked to be what it was before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi
from functional.nodeagent.helpers import (
    PLUGIN,
    Agents,
    ClientFactory,
    CniSetup,
    host_links,
    netns_list,
)
from kuryr_k8s.k8s import KubeClient, load_kubeconfig
from kuryr_k8s.sandbox.nodeagent import NodeAgentConfig


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Remove whatever netns/veth a test leaves behind, then insist nothing was left."""
    netns_before, links_before = netns_list(), host_links()
    yield
    leaked_ns = netns_list() - netns_before
    leaked_links = host_links() - links_before
    for name in leaked_ns:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    for link in leaked_links:
        subprocess.run(["ip", "link", "del", link], check=False)
    assert netns_list() == netns_before
    assert not leaked_ns, f"the test leaked network namespaces {sorted(leaked_ns)}"
    assert not leaked_links, f"the test leaked host interfaces {sorted(leaked_links)}"


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
    """The test plugin under two names, and a conflist chaining them (plus a decoy)."""
    bin_dir = tmp_path / "bin"
    conf_dir = tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    for name in ("kuryr-test-veth", "kuryr-test-passthrough"):
        (bin_dir / name).symlink_to(PLUGIN)
    setup = CniSetup(
        conf_dir, bin_dir, tmp_path / "cni.log", tmp_path / "fail-add", tmp_path / "ipam"
    )
    common = {"logFile": str(setup.log)}
    conflist = {
        "cniVersion": "1.0.0",
        "name": "kuryr-test",
        "plugins": [
            {
                "type": "kuryr-test-veth",
                "cniVersion": "0.0.0-overridden",
                "name": "overridden",
                "subnet": "10.234.0.0/24",
                "dataDir": str(setup.data_dir),
                "failAddFile": str(setup.fail_file),
                **common,
            },
            {"type": "kuryr-test-passthrough", **common},
        ],
    }
    (conf_dir / "10-kuryr-test.conflist").write_text(json.dumps(conflist))
    decoy = {"cniVersion": "1.0.0", "name": "decoy", "plugins": [{"type": "missing"}]}
    (conf_dir / "20-decoy.conflist").write_text(json.dumps(decoy))
    (conf_dir / "05-not-a-list.conf").write_text(json.dumps(decoy))
    return setup


@pytest.fixture
async def agents(
    kube_client_factory: ClientFactory, cni: CniSetup, tmp_path: Path
) -> AsyncIterator[Agents]:
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
