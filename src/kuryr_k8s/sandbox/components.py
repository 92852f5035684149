"""The sandbox's daemons as components: owned by pid, probed for readiness.

:class:`Component` is the base of every daemon the sandbox runs; :func:`all_components`
lists them in start order (stop is the reverse): the OpenStack services
(``sandbox/openstack/services.py``), the Kubernetes API emulator (:class:`KubeApi`,
``sandbox/kubeapi``), the product (``kuryr_components.py``) and the hybrid scenario's
overcloud (``overcloud.py``). The VMs are not components: ``sandbox/vm`` runs them.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.sandbox.paths import SandboxPaths
from kuryr_k8s.sandbox.process import (
    SandboxError,
    is_alive,
    listeners_on,
    log_tail,
    owned_pid,
    run,
    spawn,
    terminate,
    wait_until,
)
from kuryr_k8s.sandbox.settings import SandboxSettings


@dataclass(frozen=True)
class Context:
    settings: SandboxSettings
    paths: SandboxPaths

    def ovs_env(self) -> dict[str, str]:
        run_dir = str(self.paths.run)
        return {
            "OVS_RUNDIR": run_dir,
            "OVN_RUNDIR": run_dir,
            "OVS_DBDIR": str(self.paths.ovs),
            "OVN_DBDIR": str(self.paths.ovn),
            "OVS_LOGDIR": str(self.paths.log),
            "OVN_LOGDIR": str(self.paths.log),
            "OVN_NB_DB": f"unix:{self.paths.nb_sock}",
            "OVN_SB_DB": f"unix:{self.paths.sb_sock}",
        }

    def vsctl(self, *args: str, timeout: float = 30) -> str:
        return run(
            ["ovs-vsctl", f"--db=unix:{self.paths.ovs_db_sock}", "--timeout=20", *args],
            env=self.ovs_env(),
            timeout=timeout,
        ).stdout.strip()

    def sbctl(self, *args: str) -> str:
        return run(
            ["ovn-sbctl", f"--db=unix:{self.paths.sb_sock}", "--timeout=20", *args],
            env=self.ovs_env(),
        ).stdout.strip()


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return 200 <= int(resp.status) < 300
    except OSError:
        return False


def http_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


class Component(ABC):
    """One daemon. Subclasses say how to prepare, start and probe it."""

    name: str
    tcp_port_attr: str | None = None
    ready_timeout: float = 60.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.launched_pid: int | None = None
        """The process this object spawned (it may write its own pid file later)."""

    # -- identity ---------------------------------------------------------------------
    @property
    def pidfile(self) -> Path:
        return self.ctx.paths.pidfile(self.name)

    @property
    def log_file(self) -> Path:
        return self.ctx.paths.logfile(self.name)

    @property
    def marker(self) -> str:
        """Text on the daemon's command line that proves it is this sandbox's instance."""
        return str(self.ctx.paths.root)

    @property
    def tcp_port(self) -> int | None:
        if self.tcp_port_attr is None:
            return None
        port: int = getattr(self.ctx.settings.ports, self.tcp_port_attr)
        return port

    def pid(self) -> int | None:
        return owned_pid(self.pidfile, self.marker)

    def enabled(self) -> bool:
        return True

    def extra_pids(self) -> list[int]:
        """Other processes of this component (counted in its memory)."""
        return []

    # -- lifecycle --------------------------------------------------------------------
    def prepare(self) -> None:
        """One-time initialisation (database files, schema). Idempotent."""

    @abstractmethod
    def launch(self) -> None:
        """Start the process; it must leave its pid in ``self.pidfile``."""

    def probe(self) -> bool:
        """True when the daemon serves. Default: it is alive."""
        return self.pid() is not None

    def api_probe(self) -> bool | None:
        """For ``status``: does its API answer? None when it has no API."""
        return None

    def after_start(self) -> None:
        """Work that needs the daemon up (bridges, chassis settings, databases)."""

    def start(self) -> bool:
        """Start if not running. Returns True if this call started it."""
        if self.pid() is not None:
            return False
        self.pidfile.unlink(missing_ok=True)  # stale: not alive, or not ours
        self.check_port_free()
        try:
            self.prepare()
            self.launch()
            wait_until(
                self.probe,
                timeout=self.ready_timeout,
                what=self.name,
                alive=self._launched_alive,
                interval=0.05,
            )
            self.after_start()
        except SandboxError as exc:
            self.stop()
            raise SandboxError(self.failure_message(str(exc))) from exc
        return True

    def _launched_alive(self) -> bool:
        if self.launched_pid is not None:
            return is_alive(self.launched_pid)
        return self.pid() is not None

    def spawn(self, argv: list[str], log: str, *, pidfile: Path | None = None) -> None:
        """Start a foreground daemon; record its pid unless it writes its own file."""
        self.launched_pid = spawn(argv, log_file=self.ctx.paths.logfile(log))
        if pidfile is not None:
            pidfile.write_text(f"{self.launched_pid}\n")

    def stop(self) -> bool:
        """Stop it if it is ours and running. Returns True if it was running."""
        pid = self.pid()
        if pid is None and self.launched_pid is not None and is_alive(self.launched_pid):
            pid = self.launched_pid
        if pid is not None:
            terminate(pid)
        self.pidfile.unlink(missing_ok=True)
        return pid is not None

    def check_port_free(self) -> None:
        port = self.tcp_port
        if port is None:
            return
        pids = listeners_on(port)
        if pids:
            raise SandboxError(
                f"{self.name}: port 127.0.0.1:{port} is already in use by pid(s) "
                f"{', '.join(map(str, pids))} ({_proc_name(pids[0])}), which the sandbox did "
                f"not start. Stop that process (a distro service? 'ps -p {pids[0]} -f') and "
                "run 'kuryr sandbox up' again."
            )

    def failure_message(self, reason: str) -> str:
        return (
            f"{reason}\n  component: {self.name}\n  log file:  {self.log_file}\n"
            f"  last lines:\n{log_tail(self.log_file)}\n"
            "  likely fix: read the log above; 'kuryr sandbox reset' wipes state if it is "
            "corrupt, 'kuryr sandbox install' repairs missing packages."
        )


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class KubeApi(Component):
    """The Kubernetes API emulator (``kuryr_k8s.sandbox.kubeapi``), persisted on disk."""

    name = "kube-api"
    tcp_port_attr = "kube_api"
    ready_timeout = 30.0

    @property
    def kube_dir(self) -> Path:
        return self.ctx.paths.kube

    @property
    def kubeconfig(self) -> Path:
        return self.ctx.paths.kubeconfig

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.tcp_port}"

    def launch(self) -> None:
        self.kube_dir.mkdir(parents=True, exist_ok=True)
        self.spawn(
            [
                sys.executable,
                "-m",
                "kuryr_k8s.sandbox.kubeapi",
                "--port",
                str(self.tcp_port),
                "--state-file",
                str(self.kube_dir / "store.json"),
                "--kubeconfig-out",
                str(self.kubeconfig),
                "--log-level",
                "INFO",
            ],
            self.name,
            pidfile=self.pidfile,
        )

    def probe(self) -> bool:
        return self.kubeconfig.exists() and http_ok(f"{self.url}/readyz")

    def api_probe(self) -> bool:
        return http_ok(f"{self.url}/readyz")


def all_components(ctx: Context) -> list[Component]:
    """Every component in start order."""
    from kuryr_k8s.sandbox.kuryr_components import kuryr_components
    from kuryr_k8s.sandbox.openstack.services import openstack_services
    from kuryr_k8s.sandbox.overcloud import overcloud_components

    kube_api = [] if ctx.settings.kubeconfig else [KubeApi(ctx)]  # an existing cluster
    return [
        *openstack_services(ctx),
        *kube_api,
        *kuryr_components(ctx),
        *overcloud_components(ctx),
    ]


def is_root() -> bool:
    return os.geteuid() == 0


__all__ = [
    "Component",
    "Context",
    "all_components",
    "is_alive",
]
