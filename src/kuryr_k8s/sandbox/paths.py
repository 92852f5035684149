"""The layout of the private state directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.sandbox.settings import SandboxSettings


@dataclass(frozen=True)
class SandboxPaths:
    """Every file the sandbox writes, relative to one state directory."""

    root: Path
    venvs: Path = Path("/opt/kuryr-sandbox/venvs")
    """PyPI venvs (Neutron 29, Octavia), shared by every state directory: they are
    installed once and survive ``reset``."""
    cluster_kubeconfig: Path | None = None
    """An existing cluster's kubeconfig (``up --kubeconfig``), used instead of the
    emulator's."""

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def ovs(self) -> Path:
        return self.root / "ovs"

    @property
    def ovn(self) -> Path:
        return self.root / "ovn"

    @property
    def mysql(self) -> Path:
        return self.root / "mysql"

    @property
    def mysql_run(self) -> Path:
        return self.run / "mysql"

    @property
    def mysql_socket(self) -> Path:
        return self.mysql_run / "mysqld.sock"

    @property
    def neutron(self) -> Path:
        return self.root / "neutron"

    @property
    def octavia(self) -> Path:
        return self.root / "octavia"

    @property
    def kube(self) -> Path:
        return self.root / "kube"

    @property
    def ovs_db_sock(self) -> Path:
        return self.run / "db.sock"

    @property
    def nb_sock(self) -> Path:
        return self.run / "ovnnb_db.sock"

    @property
    def sb_sock(self) -> Path:
        return self.run / "ovnsb_db.sock"

    @property
    def kubeconfig(self) -> Path:
        """The cluster the product talks to: the emulator's, or the one given to ``up``."""
        return self.cluster_kubeconfig or self.kube / "kubeconfig"

    @property
    def clouds_yaml(self) -> Path:
        return self.etc / "clouds.yaml"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.log / f"{name}.log"

    def state_dirs(self) -> list[Path]:
        """Directories wiped by ``reset`` (logs and venvs are kept)."""
        return [
            self.run,
            self.etc,
            self.ovs,
            self.ovn,
            self.mysql,
            self.neutron,
            self.octavia,
            self.kube,
            self.root / "cni",  # the installed plugin and conflist (rewritten by 'up')
            self.root / "nodeagent",  # sandbox records of pods that no longer exist
            self.root / "overcloud",  # the hybrid scenario's second cluster (API, conf)
        ]

    def ensure(self) -> None:
        for d in (
            self.run,
            self.log,
            self.etc,
            self.ovs,
            self.ovn,
            self.neutron,
            self.octavia,
            self.kube,
            self.venvs,
        ):
            d.mkdir(parents=True, exist_ok=True)


def paths_for(settings: SandboxSettings) -> SandboxPaths:
    return SandboxPaths(settings.state_dir, settings.venv_dir, settings.kubeconfig)
