"""Settings of the sandbox node agent, built once by ``__main__`` (or a test) and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CNI_CONF_DIR = Path("/etc/cni/net.d")
DEFAULT_CNI_BIN_DIRS = (Path("/opt/cni/bin"),)
DEFAULT_STATE_DIR = Path("/var/lib/kuryr-nodeagent")


@dataclass(frozen=True)
class NodeAgentConfig:
    """What one node agent plays kubelet for, and where it finds the CNI pieces."""

    nodes: tuple[str, ...]
    """Node names this agent registers and runs pods for (usually one)."""
    node_ip: str = "127.0.0.1"
    """InternalIP of the nodes and ``hostIP`` of their pods."""
    cni_conf_dir: Path = DEFAULT_CNI_CONF_DIR
    """Directory of CNI network configuration lists; the lexicographically first
    ``*.conflist`` is used, re-read for every sandbox (as runtimes do)."""
    cni_bin_dirs: tuple[Path, ...] = DEFAULT_CNI_BIN_DIRS
    """Directories searched for plugin executables (``CNI_PATH``), in order."""
    state_dir: Path = DEFAULT_STATE_DIR
    """Where sandbox records (netns, container id, cached CNI result) survive restarts."""
    schedule: bool = True
    """Bind unscheduled pods (default scheduler) to our nodes, round-robin."""
    cni_timeout: float = 120.0
    """Seconds one plugin execution may take before it is killed and counted as failed."""
    heartbeat_interval: float = 10.0
    """Seconds between node status/Lease heartbeats."""
    workers: int = 8
    """Pods set up or torn down in parallel."""
    retry_base: float = 1.0
    """First retry delay after a failed sandbox setup or teardown, seconds."""
    retry_cap: float = 30.0
    """Largest retry delay, seconds (kubelet backs off similarly)."""
    del_attempts: int = 3
    """CNI DEL failures tolerated before the netns is removed anyway (never leak it)."""
    ifname: str = "eth0"
    """``CNI_IFNAME`` of the pod interface."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels for the Node objects."""
    netns_owner: str = ""
    """Sandbox id put into every pod netns name (``kuryr-<owner>_...``), so the pods of
    several sandboxes on one host never collide; empty: ``kuryr-<ns>-<pod>-<hash>``."""
