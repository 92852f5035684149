"""Typed settings of the sandbox, built once by the CLI and passed down."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

NeutronFlavour = Literal["debian", "pypi"]

DEFAULT_STATE_DIR = Path("/var/lib/kuryr-sandbox")
"""Where everything the sandbox owns lives (state, logs, sockets, pid files, venvs)."""


@dataclass(frozen=True)
class Ports:
    """TCP ports on 127.0.0.1. Fixed because Neutron/OVN defaults and clients expect them."""

    ovsdb: int = 6640
    ovn_nb: int = 6641
    ovn_sb: int = 6642
    neutron: int = 9696
    octavia: int = 9876
    kube_api: int = 6443
    overcloud_kube_api: int = 6444
    """The hybrid scenario's second cluster (the overcloud), see ``sandbox/overcloud.py``."""


@dataclass(frozen=True)
class SandboxSettings:
    """Everything that decides what ``kuryr sandbox`` brings up and where."""

    state_dir: Path = DEFAULT_STATE_DIR
    """Private state directory; nothing of the sandbox lives anywhere else (except
    ``/var/run/octavia``, which octavia-lib hard-codes)."""

    neutron: NeutronFlavour = "debian"
    """``debian``: neutron-server 21 (Zed) from Debian 12. ``pypi``: Neutron 29 in a venv
    under uWSGI (what users run today)."""

    octavia: bool = False
    """Also run Octavia (octavia-api + driver agent) with the OVN provider."""

    kuryr: bool = False
    """Also run the product on this host: kuryr-controller, kuryr-daemon (CNI plugin
    installed in the state directory) and the node agent playing kubelet."""

    hybrid: bool = False
    """Also run the overcloud of the seed's hybrid scenario: a second Kubernetes API and
    a kuryr-controller in ``nested-vlan`` mode on this host, whose node is a VM on a
    Neutron trunk (``sandbox/overcloud.py``; the VMs themselves are ``sandbox/vm``)."""

    kubeconfig: Path | None = None
    """An existing cluster (``up --kubeconfig PATH``): the product runs against it and the
    Kubernetes API emulator is not started. Implies ``kuryr``."""

    hostname: str = field(default_factory=socket.gethostname)
    """OVN chassis hostname; every port bound here needs ``binding:host_id`` equal to it."""

    ports: Ports = field(default_factory=Ports)

    venv_dir: Path = Path("/opt/kuryr-sandbox/venvs")
    """Where ``install`` puts the PyPI venvs (``KURYR_SANDBOX_VENVS``); shared by every
    state directory."""

    @property
    def neutron_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.neutron}"

    @property
    def octavia_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.octavia}"


def settings_from_env(
    *,
    state_dir: str | None = None,
    neutron: str | None = None,
    octavia: bool | None = None,
    kuryr: bool | None = None,
    hybrid: bool | None = None,
    kubeconfig: str | None = None,
) -> SandboxSettings:
    """Explicit arguments win, then ``KURYR_SANDBOX_*`` variables, then what the last
    ``up`` recorded in the state directory, then defaults."""
    sd = state_dir or os.environ.get("KURYR_SANDBOX_DIR") or str(DEFAULT_STATE_DIR)
    recorded = load_recorded(Path(sd))
    flavour = (
        neutron or os.environ.get("KURYR_SANDBOX_NEUTRON") or recorded.get("neutron") or "debian"
    )
    if flavour not in ("debian", "pypi"):
        from kuryr_k8s.model.errors import ConfigError

        raise ConfigError(
            f"unknown Neutron flavour {flavour!r} (KURYR_SANDBOX_NEUTRON/--neutron): "
            "use 'debian' (Zed, from apt) or 'pypi' (Neutron 29 in a venv)"
        )
    if octavia is None:
        env_octavia = os.environ.get("KURYR_SANDBOX_OCTAVIA")
        if env_octavia is not None:
            octavia = env_octavia in ("1", "true", "yes")
        else:
            octavia = bool(recorded.get("octavia", False))
    cluster = _cluster_kubeconfig(kubeconfig, recorded)
    if kuryr is None:
        kuryr = bool(recorded.get("kuryr", False)) or cluster is not None
    if hybrid is None:
        hybrid = bool(recorded.get("hybrid", False))
    return SandboxSettings(
        kubeconfig=cluster,
        kuryr=kuryr,
        hybrid=hybrid,
        venv_dir=Path(os.environ.get("KURYR_SANDBOX_VENVS", "/opt/kuryr-sandbox/venvs")),
        state_dir=Path(sd).absolute(),
        neutron=flavour,
        octavia=octavia,
    )


def _cluster_kubeconfig(given: str | None, recorded: dict[str, object]) -> Path | None:
    """``--kubeconfig``, else ``KURYR_SANDBOX_KUBECONFIG``, else what ``up`` recorded."""
    value = given or os.environ.get("KURYR_SANDBOX_KUBECONFIG") or recorded.get("kubeconfig")
    if not value:
        return None
    path = Path(str(value)).expanduser().absolute()
    if not path.is_file():
        from kuryr_k8s.model.errors import ConfigError

        raise ConfigError(
            f"kubeconfig {path} (--kubeconfig/KURYR_SANDBOX_KUBECONFIG) is not a file: give "
            "the kubeconfig of an existing cluster, or leave it out to use the sandbox's own "
            "Kubernetes API emulator"
        )
    return path


RECORD_FILE = "sandbox.json"


def load_recorded(state_dir: Path) -> dict[str, object]:
    """Settings the last ``up`` recorded, so later commands need no flags."""
    try:
        data = json.loads((state_dir / RECORD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(settings: SandboxSettings) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / RECORD_FILE).write_text(
        json.dumps(
            {
                "neutron": settings.neutron,
                "octavia": settings.octavia,
                "kuryr": settings.kuryr,
                "hybrid": settings.hybrid,
                "kubeconfig": str(settings.kubeconfig) if settings.kubeconfig else None,
            }
        )
        + "\n"
    )
