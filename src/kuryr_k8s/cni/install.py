"""``kuryr cni install``: put the plugin and its network configuration where runtimes look.

* ``<bin_dir>/kuryr-cni``: a two-line launcher that runs :mod:`kuryr_k8s.cni.plugin` with
  this interpreter in isolated mode without ``site`` (``-IS``), adding only the directory
  holding ``kuryr_k8s``, which keeps the start fast;
* ``<conf_dir>/10-kuryr.conflist``: the network, naming the plugin and the daemon socket.

Both are written atomically (temporary file + rename), so a runtime never reads half a file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuryr_k8s.cni import spec, wire

PLUGIN_NAME = "kuryr-cni"
CONFLIST_NAME = "10-kuryr.conflist"


@dataclass(frozen=True)
class InstallSettings:
    bin_dir: Path = Path("/opt/cni/bin")
    conf_dir: Path = Path("/etc/cni/net.d")
    network_name: str = "kuryr"
    daemon_socket: str = wire.DEFAULT_SOCKET
    timeout: float = 300.0
    """Seconds the plugin waits for the daemon (keep above the daemon's VIF timeout)."""
    python: str = sys.executable
    launcher: str | None = None
    """Text of ``<bin_dir>/kuryr-cni``; None: :func:`launcher` for ``python`` (this
    machine's interpreter and package: the sandbox). The manifests' init container
    passes a self-contained bundle's launcher (:mod:`kuryr_k8s.cni.bundle`)."""


def launcher(python: str) -> str:
    package_root = Path(__file__).resolve().parents[2]
    return (
        f"#!{python} -IS\n"
        f"import sys; sys.path.insert(0, {str(package_root)!r})\n"
        "from kuryr_k8s.cni.plugin import main; main()\n"
    )


def conflist(settings: InstallSettings) -> dict[str, Any]:
    return {
        "cniVersion": spec.LATEST_VERSION,
        "cniVersions": list(spec.SUPPORTED_VERSIONS),
        "name": settings.network_name,
        "plugins": [
            {
                "type": PLUGIN_NAME,
                "daemonSocket": settings.daemon_socket,
                "timeout": settings.timeout,
            }
        ],
    }


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def install(settings: InstallSettings) -> list[Path]:
    """Write the plugin and the conflist; returns the paths written."""
    plugin = settings.bin_dir / PLUGIN_NAME
    conf = settings.conf_dir / CONFLIST_NAME
    _write_atomic(plugin, settings.launcher or launcher(settings.python), 0o755)
    _write_atomic(conf, json.dumps(conflist(settings), indent=2) + "\n", 0o644)
    return [plugin, conf]


def uninstall(settings: InstallSettings) -> list[Path]:
    removed = []
    for path in (settings.bin_dir / PLUGIN_NAME, settings.conf_dir / CONFLIST_NAME):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
