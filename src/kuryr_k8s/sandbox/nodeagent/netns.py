"""Pod network namespaces: created with ``lo`` up and an empty resolv.conf, removed idempotently.

Names are ``kuryr-<owner>_<namespace>-<pod>-<hash>`` where the hash covers namespace, name
and uid: ``-`` may appear inside Kubernetes names, so without it ``a-b/c`` and ``a/b-c``
would share a name, and a pod re-created under the same name would reuse a netns still
being torn down. ``owner`` is the sandbox id of the agent (``--netns-owner``, see
``sandbox/naming.py``), so the pods of two sandboxes on one host never share a name and
each sandbox removes only its own; an agent without an owner (inside a VM, where the
namespaces are the guest's) names them ``kuryr-<namespace>-<pod>-<hash>``.
Long names are truncated before the hash (a netns name is a file name in ``/var/run/netns``).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kuryr_k8s.model.errors import ResourceNotReady, TemporaryError
from kuryr_k8s.sandbox import naming

NETNS_DIR = Path("/var/run/netns")
"""Where ``ip netns`` keeps its bind mounts (fixed in iproute2)."""
ETC_NETNS_DIR = Path("/etc/netns")
"""Per-netns files ``ip netns exec`` bind-mounts over /etc (our pods' resolv.conf)."""
PREFIX = "kuryr-"
_MAX_READABLE = 40


def netns_name(namespace: str, name: str, uid: str, owner: str = "") -> str:
    """The netns name of one pod incarnation (at most 62 characters)."""
    digest = hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).hexdigest()[:8]
    readable = f"{namespace}-{name}"[:_MAX_READABLE]
    prefix = naming.netns_prefix(owner) if owner else PREFIX
    return f"{prefix}{readable}-{digest}"


def netns_path(netns: str) -> Path:
    return NETNS_DIR / netns


async def _ip(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def ensure_netns(netns: str) -> Path:
    """Create the netns if missing, bring ``lo`` up, write an empty resolv.conf."""
    path = netns_path(netns)
    if not path.exists():
        rc, out = await _ip("netns", "add", netns)
        if rc and not path.exists():
            raise TemporaryError(f"ip netns add {netns}: {out}")
    rc, out = await _ip("-n", netns, "link", "set", "lo", "up")
    if rc:
        raise TemporaryError(f"bringing lo up in {netns}: {out}")
    etc = ETC_NETNS_DIR / netns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").touch()
    return path


async def delete_netns(netns: str) -> None:
    """Remove the netns (and everything in it) and its /etc files; absent is fine."""
    if netns_path(netns).exists():
        rc, out = await _ip("netns", "delete", netns)
        if rc and netns_path(netns).exists():
            raise TemporaryError(f"ip netns delete {netns}: {out}")
    shutil.rmtree(ETC_NETNS_DIR / netns, ignore_errors=True)


def list_netns(owner: str | None = None) -> list[str]:
    """Names of our netns on this host: any agent's, or only those of ``owner``."""
    if not NETNS_DIR.is_dir():
        return []
    names = sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))
    return names if owner is None else naming.owned_netns(owner, names)


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``netns`` with its resolv.conf."""
    if not netns_path(netns).exists():
        raise ResourceNotReady(f"network namespace {netns} does not exist")
    return ["ip", "netns", "exec", netns, *argv]
