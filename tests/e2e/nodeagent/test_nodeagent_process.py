"""The node agent as the process the sandbox runs: ``python -m kuryr_k8s.sandbox.nodeagent``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi
from functional.nodeagent.helpers import (
    WAIT,
    CniSetup,
    eventually,
    leak_guard,
    make_cni,
    netns_list,
)
from kuryr_k8s.k8s import NODES, PODS, KubeClient, NotFound, load_kubeconfig
from kuryr_k8s.sandbox.nodeagent import NodeAgent, NodeAgentConfig, exec_in_pod, find_sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture
async def kube(kube_api: KubeApi) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_settings(load_kubeconfig(Path(kube_api.kubeconfig))) as client:
        yield client


class AgentProcess:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=out, stderr=subprocess.STDOUT
            )

    async def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def pod_phase(kube: KubeClient, name: str, ns: str) -> str | None:
    try:
        pod = await kube.get(PODS, name, ns)
    except NotFound:
        return "Gone"
    phase = (pod.get("status") or {}).get("phase")
    return str(phase) if phase else None


async def test_agent_process_runs_pods_and_survives_restarts(
    kube_api: KubeApi, kube: KubeClient, kube_namespace: str, tmp_path: Path
) -> None:
    cni: CniSetup = make_cni(tmp_path)
    with leak_guard(kube_namespace, cni):
        await _run_agent_process(kube_api, kube, kube_namespace, tmp_path, cni)


async def _run_agent_process(
    kube_api: KubeApi, kube: KubeClient, kube_namespace: str, tmp_path: Path, cni: CniSetup
) -> None:
    node = f"na-e2e-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    argv = [
        sys.executable, "-m", "kuryr_k8s.sandbox.nodeagent",
        "--kubeconfig", str(kube_api.kubeconfig),
        "--node", node,
        "--node-ip", "192.0.2.20",
        "--cni-conf-dir", str(cni.conf_dir),
        "--cni-bin-dir", str(cni.bin_dir),
        "--state-dir", str(state),
    ]  # fmt: skip
    agent = AgentProcess(argv, tmp_path / "agent.log")
    try:
        await agent.start()

        async def node_ready() -> bool:
            try:
                conditions = (await kube.get(NODES, node))["status"]["conditions"]
            except NotFound:
                return False
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        await eventually(node_ready, what="node registered")
        await kube.create(
            PODS,
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            kube_namespace,
        )

        async def running() -> bool:
            return await pod_phase(kube, "p", kube_namespace) == "Running"

        await eventually(running, what="pod Running")
        done = await asyncio.to_thread(
            exec_in_pod,
            kube_namespace,
            "p",
            ["ip", "-o", "-4", "addr", "show", "eth0"],
            state_dir=state,
            capture_output=True,
        )
        pod = await kube.get(PODS, "p", kube_namespace)
        assert f"{pod['status']['podIP']}/24" in done.stdout.decode()

        # Stopping the agent leaves the pod's sandbox alone; a new agent adopts it.
        assert await agent.stop() == 0
        netns = find_sandbox(kube_namespace, "p", state_dir=state).netns
        assert netns in netns_list()
        await agent.start()
        await kube.delete(PODS, "p", kube_namespace)

        async def gone() -> bool:
            return await pod_phase(kube, "p", kube_namespace) == "Gone"

        await eventually(gone, what="pod deleted by the agent")
        await eventually(lambda: _value(netns not in netns_list()), what="netns removed")
        assert await agent.stop() == 0
    finally:
        await agent.kill()
        config = NodeAgentConfig(
            nodes=(node,),
            cni_conf_dir=cni.conf_dir,
            cni_bin_dirs=(cni.bin_dir,),
            state_dir=state,
        )
        with contextlib.suppress(Exception):
            await NodeAgent(kube, config).remove_all_sandboxes()
        with contextlib.suppress(NotFound):
            await kube.delete(NODES, node)


async def _value(v: bool) -> bool:
    return v


def test_help_teaches() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kuryr_k8s.sandbox.nodeagent", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for needle in (
        "--kubeconfig",
        "--node",
        "--cni-conf-dir",
        "--cni-bin-dir",
        "conflist",
        "FailedCreatePodSandBox",
        "gracePeriodSeconds=0",
        "example:",
    ):
        assert needle in out
