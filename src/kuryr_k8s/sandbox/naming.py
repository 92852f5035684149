"""Host-global names of one sandbox, all derived from its short sandbox id.

A sandbox's state directory is private, but some of what it makes lives in the host's
global namespaces: network namespaces (the VM stand-in, the node agent's pods), links
(the stand-in's veth, the VMs' taps) and QEMU process names. Every such name carries the
**sandbox id**, six hex digits of sha256 of the resolved state directory path, so two
state directories on one host never collide, and clean-up selects by that id, never by a
generic ``kuryr-`` prefix. The id is recorded in ``<state_dir>/sandbox-id``.

Names (Linux allows 15 characters for a link name; a netns name is a file name)::

    netns   kuryr-<sid>_vm0                       the VM stand-in (demo)
    netns   kuryr-<sid>_<ns>-<pod>-<hash8>        the node agent's pods
    link    ks<sid><7 hex of the netns>           the host end of a stand-in's veth
    link    kv<sid><7 hex of the VM name>         a QEMU VM's tap
    QEMU    -name kuryr-vm-<sid>-<vm>

The ``_`` after the id cannot occur in the names the node agent made before ids existed
(``kuryr-<ns>-<pod>-<hash>``: a Kubernetes namespace is a DNS label), so an owner is never
read into an old name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SID_LEN = 6
SID_FILE = "sandbox-id"
NETNS_PREFIX = "kuryr-"
VETH_PREFIX = "ks"
TAP_PREFIX = "kv"
IFNAMSIZ = 15
"""Linux's longest link name (16 bytes with the terminating NUL)."""

_SID = re.compile(rf"^[0-9a-f]{{{SID_LEN}}}$")
_NETNS_OWNED = re.compile(rf"^{NETNS_PREFIX}([0-9a-f]{{{SID_LEN}}})_")
_LINK_OWNED = re.compile(rf"^(?:{VETH_PREFIX}|{TAP_PREFIX})([0-9a-f]{{{SID_LEN}}})[0-9a-f]+$")


def sandbox_id(state_dir: Path) -> str:
    """Six hex digits naming this state directory on the host (stable: a hash of its
    resolved path)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:SID_LEN]


def record_sandbox_id(state_dir: Path) -> str:
    """Write the id into ``<state_dir>/sandbox-id`` (for people and tools); return it."""
    sid = sandbox_id(state_dir)
    path = state_dir / SID_FILE
    if not path.exists() or path.read_text().strip() != sid:
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{sid}\n")
    return sid


def netns_prefix(sid: str) -> str:
    """Every network namespace of sandbox ``sid`` starts with this."""
    if not _SID.match(sid):
        raise ValueError(f"bad sandbox id {sid!r}: want {SID_LEN} lower-case hex digits")
    return f"{NETNS_PREFIX}{sid}_"


def stand_in_netns(sid: str, name: str = "vm0") -> str:
    """The network namespace of the demo's VM stand-in ``name``."""
    return netns_prefix(sid) + name


def _hex7(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:7]


def veth_name(sid: str, netns: str) -> str:
    """The host end of the veth of a netns plugged into br-int: 15 characters."""
    return VETH_PREFIX + sid + _hex7(netns)


def tap_name(sid: str, vm: str) -> str:
    """A VM's tap device: ``kv`` + sandbox id + 7 hex of the VM name, 15 characters."""
    return TAP_PREFIX + sid + _hex7(vm)


def qemu_name(sid: str, vm: str) -> str:
    """QEMU's ``-name`` (the process title ``ps`` shows) of VM ``vm``."""
    return f"kuryr-vm-{sid}-{vm}"


def netns_owner(netns: str) -> str | None:
    """The sandbox id a network namespace name carries, None if it carries none."""
    match = _NETNS_OWNED.match(netns)
    return match.group(1) if match else None


def link_owner(ifname: str) -> str | None:
    """The sandbox id a link name carries (stand-in veths and VM taps), else None."""
    match = _LINK_OWNED.match(ifname)
    return match.group(1) if match else None


def owned_netns(sid: str, names: list[str]) -> list[str]:
    """The names in ``names`` that belong to sandbox ``sid``."""
    return [n for n in names if netns_owner(n) == sid]


def owned_links(sid: str, names: list[str]) -> list[str]:
    return [n for n in names if link_owner(n) == sid]
