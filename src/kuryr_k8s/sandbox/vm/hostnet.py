"""The VM's tap device in the host's root network namespace, plugged into ``br-int``.

The OVS Interface row carries what OVN needs (``iface-id``, ``attached-mac``,
``iface-status``, ``vm-uuid``) plus the owner ids ``kuryr-sandbox-id`` and ``kuryr-vm``,
so clean-up removes only this sandbox's rows. The tap is a persistent ``ip tuntap``
device without ``vnet_hdr`` (QEMU opens it with ``vnet_hdr=off``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.process import SandboxError, run

BRIDGE = "br-int"


@dataclass(frozen=True)
class TapPlug:
    tap: str
    port_id: str
    mac: str
    vm_uuid: str
    sandbox_id: str
    vm_name: str
    mtu: int

    def external_ids(self) -> dict[str, str]:
        return {
            "iface-id": self.port_id,
            "attached-mac": self.mac,
            "iface-status": "active",
            "vm-uuid": self.vm_uuid,
            "kuryr-sandbox-id": self.sandbox_id,
            "kuryr-vm": self.vm_name,
        }


def tap_exists(tap: str) -> bool:
    out = run(["ip", "-d", "link", "show", "dev", tap], check=False).stdout
    return "tun type tap" in out


def ensure_tap(tap: str, mtu: int) -> None:
    """A persistent tap device, up, with the network's MTU (idempotent)."""
    if not tap_exists(tap):
        if run(["ip", "link", "show", "dev", tap], check=False).returncode == 0:
            raise SandboxError(
                f"host device {tap} exists but is not a tap; it is not the sandbox's: "
                f"look at 'ip -d link show {tap}'"
            )
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
    run(["ip", "link", "set", "dev", tap, "mtu", str(mtu), "up"])


def delete_tap(tap: str) -> bool:
    """Delete the tap if it exists (and is a tap). Returns True if it did."""
    if not tap_exists(tap):
        return False
    run(["ip", "link", "del", "dev", tap], check=False)
    return True


def ovs_external_ids(ctx: Context, tap: str) -> dict[str, str] | None:
    """The Interface row's external_ids, or None when ``tap`` is not on ``br-int``."""
    if tap not in ctx.vsctl("list-ports", BRIDGE).split():
        return None
    out = ctx.vsctl("--format=json", "--columns=external_ids", "list", "Interface", tap)
    data = json.loads(out)["data"]
    if not data:
        return None
    pairs = data[0][0][1]  # ["map", [[k, v], ...]]
    return {str(k): str(v) for k, v in pairs}


def ensure_ovs_port(ctx: Context, plug: TapPlug) -> None:
    """Add the tap to br-int (or fix its row) with the port's ids."""
    sets = [f"external_ids:{k}={v}" for k, v in plug.external_ids().items()]
    ctx.vsctl(
        "--may-exist",
        "add-port",
        BRIDGE,
        plug.tap,
        "--",
        "set",
        "Interface",
        plug.tap,
        *sets,
    )


def delete_ovs_port(ctx: Context, tap: str, sandbox_id: str) -> bool:
    """Remove the tap's br-int port if its row is this sandbox's. True if removed."""
    ids = ovs_external_ids(ctx, tap)
    if ids is None:
        return False
    if ids.get("kuryr-sandbox-id") != sandbox_id:
        raise SandboxError(
            f"OVS port {tap} on {BRIDGE} belongs to another owner "
            f"(kuryr-sandbox-id={ids.get('kuryr-sandbox-id')!r}); left alone"
        )
    ctx.vsctl("--if-exists", "del-port", BRIDGE, tap)
    return True


def owned_ovs_ports(ctx: Context, sandbox_id: str) -> dict[str, str]:
    """``{tap: vm name}`` of every br-int row this sandbox's VMs own."""
    out = ctx.vsctl(
        "--format=json", "--columns=name,external_ids", "find", "Interface",
        f"external_ids:kuryr-sandbox-id={sandbox_id}",
    )  # fmt: skip
    found: dict[str, str] = {}
    for name, ids in json.loads(out)["data"]:
        found[str(name)] = dict(ids[1]).get("kuryr-vm", "?")
    return found
