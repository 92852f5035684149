"""Names and paths of sandbox VMs.

Everything of one VM lives under ``<state_dir>/vms/<name>/``. Names that are global to
the host (the tap device, at most 15 characters) derive from a short sandbox id (the
first 6 hex digits of sha256 of the state directory's path) and the VM name, so two state
directories on one host never collide.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.sandbox import naming

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
SOCKET_PATH_MAX = 107
"""``sun_path`` holds 108 bytes including the terminating NUL."""


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"bad VM name {name!r}: use 1-31 characters, lower-case letters, digits and '-', "
            "starting with a letter (e.g. 'worker0')"
        )
    return name


sandbox_id = naming.sandbox_id
"""Six hex digits naming this state directory on the host (``sandbox/naming.py``)."""
tap_name = naming.tap_name
"""``kv`` + sandbox id + 7 hex of the VM name: 15 characters, Linux's maximum."""


def vm_uuid(sid: str, name: str) -> str:
    """Stable id of the VM (the port's ``device_id`` and the OVS ``vm-uuid``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kuryr-sandbox-vm:{sid}:{name}"))


@dataclass(frozen=True)
class VmPaths:
    """Files of one VM under ``<state_dir>/vms/<name>/``."""

    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / "vm.json"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def cmd_sock(self) -> Path:
        return self.dir / "cmd.sock"

    @property
    def mon_sock(self) -> Path:
        return self.dir / "mon.sock"

    @property
    def chan_lock(self) -> Path:
        return self.dir / "chan.lock"

    @property
    def lock(self) -> Path:
        return self.dir / "lifecycle.lock"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def app_img(self) -> Path:
        return self.dir / "app.img"

    def check_socket_paths(self) -> None:
        for sock in (self.cmd_sock, self.mon_sock):
            if len(str(sock)) > SOCKET_PATH_MAX:
                raise ConfigError(
                    f"VM socket path {sock} is longer than {SOCKET_PATH_MAX} bytes (a unix "
                    "socket limit): use a shorter --state-dir"
                )


def vms_dir(state_dir: Path) -> Path:
    return state_dir / "vms"


def vm_paths(state_dir: Path, name: str) -> VmPaths:
    return VmPaths(vms_dir(state_dir) / validate_name(name))
