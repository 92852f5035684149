"""Real VMs in the sandbox: QEMU guests (TCG) whose ``eth0`` is a Neutron port on br-int.

Stable API (``from kuryr_k8s.sandbox import vm as vms``; docs/sandbox-vm.md)::

    vm = vms.ensure_vm(ctx, conn, topo, vms.VmSpec("worker0", network="net0", trunk=True),
                       progress)          # create or reuse + verify, start, wait for the guest
    vm.exec(["ip", "-br", "addr"], timeout=30)   # -> ExecResult(rc, stdout, stderr bytes)
    vm.exec_sh("ip -j link | head")              # bash -c
    vm.push_file("/etc/kuryr/kuryr.conf", data, mode=0o600)
    vm.spawn("kuryr-daemon", "kuryr daemon --config-file /etc/kuryr/kuryr.conf")
    vm.info                                      # VmInfo: ip, mac, port_id, trunk_id, tap, state
    vms.list_vms(ctx); vms.get_vm(ctx, name); vms.stop(ctx, name); vms.delete(ctx, conn, name)

Map of the package:

* ``machine``: VmSpec, Vm, VmInfo, the lifecycle (ensure/start/stop/delete/list);
* ``image``: the cached kernel + initramfs + root disk (dependencies baked in);
* ``appdisk``: the project's code, pushed as a small read-only disk at each start;
* ``qemu``: QEMU's command line, launch and stop;
* ``hostnet``: the tap device and its br-int row; ``ports``: the Neutron port and trunk;
* ``channel``: the host side of the guest command channel; ``guest_init``: the guest's
  PID 1 (stdlib only) with the command server;
* ``layout``: names (sandbox id, tap names) and the per-VM folder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kuryr_k8s.sandbox.vm.channel import ChannelError, ExecResult
    from kuryr_k8s.sandbox.vm.image import ImageBuildError, ensure_image
    from kuryr_k8s.sandbox.vm.layout import sandbox_id, tap_name
    from kuryr_k8s.sandbox.vm.machine import (
        NoSuchVm,
        Vm,
        VmInfo,
        VmSpec,
        delete,
        ensure_vm,
        ensure_vms,
        format_vms,
        get_vm,
        list_vms,
        start,
        stop,
    )

_SUBMODULES = {
    "appdisk", "channel", "cli", "guest_init", "hostnet", "image", "layout", "machine",
    "ports", "qemu",
}  # fmt: skip
_HOME = {
    "ChannelError": "channel",
    "ExecResult": "channel",
    "ImageBuildError": "image",
    "ensure_image": "image",
    "sandbox_id": "layout",
    "tap_name": "layout",
}


def __getattr__(name: str) -> Any:
    """Lazy: ``kuryr`` builds its parser from ``vm.cli`` at every start, which must not
    import openstacksdk (about 1 s on the host, 10 s in a guest under emulation)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"kuryr_k8s.sandbox.vm.{name}")
    if name in __all__:
        module = importlib.import_module(f"kuryr_k8s.sandbox.vm.{_HOME.get(name, 'machine')}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChannelError",
    "ExecResult",
    "ImageBuildError",
    "NoSuchVm",
    "Vm",
    "VmInfo",
    "VmSpec",
    "delete",
    "ensure_image",
    "ensure_vm",
    "ensure_vms",
    "format_vms",
    "get_vm",
    "list_vms",
    "sandbox_id",
    "start",
    "stop",
    "tap_name",
]
