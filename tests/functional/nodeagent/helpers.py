"""Helpers of the node-agent tests (imported by the tests and by conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kuryr_k8s.k8s import NODES, KubeClient, NotFound
from kuryr_k8s.sandbox.nodeagent import NodeAgent, NodeAgentConfig

DATA = Path(__file__).parent / "data"
PLUGIN = DATA / "testcni.py"
WAIT = 60.0
"""Seconds to wait for a condition. Sandboxes are ready within ~0.3 s here."""


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def lo_is_up(netns: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "link", "show", "lo"], capture_output=True, text=True, check=True
    )
    return "UP" in json.loads(out.stdout)[0]["flags"]


def resolv_conf(netns: str) -> str | None:
    """Content of the netns' resolv.conf, None if its /etc/netns dir is gone."""
    path = Path("/etc/netns") / netns / "resolv.conf"
    return path.read_text() if path.exists() else None


def netns_inode(netns: str) -> int:
    return (Path("/var/run/netns") / netns).stat().st_ino


def host_links(prefix: str = "ktc") -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}
    return {n for n in names if n.startswith(prefix)}


ClientFactory = Callable[[], KubeClient]


@dataclass
class CniSetup:
    conf_dir: Path
    bin_dir: Path
    log: Path
    fail_file: Path
    data_dir: Path
    subnet: str

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def make_cni(tmp_path: Path) -> CniSetup:
    """The test plugin under two names, and a conflist chaining them (plus decoys)."""
    bin_dir = tmp_path / "bin"
    conf_dir = tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    for name in ("kuryr-test-veth", "kuryr-test-passthrough"):
        (bin_dir / name).symlink_to(PLUGIN)
    # A /24 of 100.64.0.0/10 (shared address space) per test: concurrent runs on this host
    # must not steal each other's host routes.
    r = random.randrange(64 * 256)
    subnet = f"100.{64 + r // 256}.{r % 256}.0/24"
    setup = CniSetup(
        conf_dir, bin_dir, tmp_path / "cni.log", tmp_path / "fail-add", tmp_path / "ipam", subnet
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
                "subnet": setup.subnet,
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


@contextlib.contextmanager
def leak_guard(namespace: str, cni: CniSetup) -> Iterator[None]:
    """Remove the netns/veths the block leaves behind, then insist nothing was left.

    Scoped to what this test owns, because other test runs may share the host: netns of
    pods in ``namespace`` (unique per test; it is part of the netns name) and the host
    veths the test plugin created (named after the container ids in its call log).
    """
    try:
        yield
    finally:
        leaked_ns = {n for n in netns_list() if f"-{namespace}-" in n}
        ours = {host_ifname(c["env"]["CNI_CONTAINERID"]) for c in cni.calls()}
        leaked_links = ours & host_links()
        for name in leaked_ns:
            subprocess.run(["ip", "netns", "delete", name], check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        for link in leaked_links:
            subprocess.run(["ip", "link", "del", link], check=False)
    assert not leaked_ns, f"leaked network namespaces {sorted(leaked_ns)}"
    assert not leaked_links, f"leaked host interfaces {sorted(leaked_links)}"


def host_ifname(container_id: str) -> str:
    """The host-side veth name the test plugin derives from a container id."""
    return "ktc" + hashlib.sha1(container_id.encode()).hexdigest()[:11]


class Agents:
    """Starts NodeAgents in the test's loop; stops them (and cleans up) at teardown."""

    def __init__(self, clients: ClientFactory, base: NodeAgentConfig) -> None:
        self.clients = clients
        self.base = base
        self._running: list[tuple[asyncio.Task[None], KubeClient]] = []
        self.nodes: set[str] = set()
        """Every Node the agents registered (deleted at cleanup)."""

    async def start(self, **overrides: Any) -> NodeAgent:
        client = self.clients()
        agent = NodeAgent(client, replace(self.base, **overrides))
        self.nodes.update(agent.config.nodes)
        task = asyncio.create_task(agent.run())
        self._running.append((task, client))
        ready = asyncio.create_task(agent.ready.wait())
        async with asyncio.timeout(WAIT):
            done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()
        return agent

    async def stop_all(self) -> None:
        while self._running:
            task, client = self._running.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()

    async def cleanup(self) -> None:
        """Stop the agents and tear down every sandbox they left (pods of a failed test)."""
        await self.stop_all()
        async with self.clients() as client:
            await NodeAgent(
                client, replace(self.base, nodes=tuple(self.nodes) or self.base.nodes)
            ).remove_all_sandboxes()
            for node in self.nodes:
                with contextlib.suppress(NotFound):
                    await client.delete(NODES, node)


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float = WAIT, what: str = "condition"
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last!r}")
