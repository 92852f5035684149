"""QEMU for one sandbox VM: the command line, launch, ownership and stop.

TCG only (the host's ``/dev/kvm`` is PVM, which stock kernels cannot use), ``-M pc``,
64 MiB translation cache, root disk ``snapshot=on`` (every boot is clean and VMs share
one image), the app disk read-only, the tap NIC with ``vnet_hdr=off`` (TCP leaving the
VM would otherwise carry unfinished checksums the netdev datapath never completes), and
a user-networking NIC so the guest reaches the host's 127.0.0.1 services as 10.0.2.2.
Facts: shared/notes/nested-vm.md sections 5 and 11.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.sandbox import naming
from kuryr_k8s.sandbox.process import (
    SandboxError,
    is_alive,
    log_tail,
    owned_pid,
    run,
    terminate,
)
from kuryr_k8s.sandbox.vm.guest_init import USER_MAC
from kuryr_k8s.sandbox.vm.image import Image
from kuryr_k8s.sandbox.vm.layout import VmPaths

QEMU = "qemu-system-x86_64"
PORT_NAME = "kuryr.cmd"
MEMORY_MB = 512
CPU = "max"
KERNEL_ARGS = (
    "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off i8042.noaux i8042.nokbd "
    "i8042.nopnp pci=noacpi"
)
"""``pci=noacpi``: PCI interrupts from the BIOS table instead of ACPI link devices, whose
set-up took 1.3 s (host load 1) to 5 s (load 5) under TCG; with it, /init to root
mounted takes about 1 s."""


@dataclass(frozen=True)
class GuestNet:
    """What the guest init configures on ``eth0`` (from the Neutron port)."""

    name: str
    mac: str
    cidr: str
    gateway: str | None
    mtu: int


def argv(paths: VmPaths, image: Image, tap: str, net: GuestNet) -> list[str]:
    params = [
        f"kuryr.name={net.name}",
        f"kuryr.mac={net.mac}",
        f"kuryr.ip={net.cidr}",
        f"kuryr.mtu={net.mtu}",
        f"kuryr.port={PORT_NAME}",
        "kuryr.app=1",
    ]
    if net.gateway:
        params.append(f"kuryr.gw={net.gateway}")
    return [
        QEMU,
        "-name",
        naming.qemu_name(naming.link_owner(tap) or "-", net.name),
        "-M",
        "pc",
        "-accel",
        "tcg,tb-size=64",
        "-cpu",
        CPU,
        "-smp",
        "1",
        "-m",
        str(MEMORY_MB),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        f"{KERNEL_ARGS} {' '.join(params)}",
        "-drive",
        f"file={image.rootfs},if=none,id=d0,format=raw,snapshot=on",
        "-device",
        "virtio-blk-pci,drive=d0",
        "-drive",
        f"file={paths.app_img},if=none,id=d1,format=raw,readonly=on",
        "-device",
        "virtio-blk-pci,drive=d1",
        "-netdev",
        f"tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr=off",
        "-device",
        f"virtio-net-pci,netdev=n0,mac={net.mac}",
        "-netdev",
        "user,id=n1,restrict=off,net=10.0.2.0/24,host=10.0.2.2",
        "-device",
        f"virtio-net-pci,netdev=n1,mac={USER_MAC}",
        "-device",
        "virtio-serial-pci",
        "-chardev",
        f"socket,id=c0,path={paths.cmd_sock},server=on,wait=off",
        "-device",
        f"virtserialport,chardev=c0,name={PORT_NAME}",
        "-serial",
        f"file:{paths.console}",
        "-monitor",
        f"unix:{paths.mon_sock},server=on,wait=off",
        "-pidfile",
        str(paths.pidfile),
        "-daemonize",
    ]


def pid(paths: VmPaths) -> int | None:
    """QEMU's pid if it runs for this VM (its command line names the VM's folder)."""
    return owned_pid(paths.pidfile, str(paths.dir) + "/")


def launch(paths: VmPaths, image: Image, tap: str, net: GuestNet) -> int:
    """Start QEMU in the background; returns its pid once it has daemonized."""
    if shutil.which(QEMU) is None:
        raise SandboxError(f"{QEMU} is not installed: run 'kuryr sandbox install'")
    for stale in (paths.pidfile, paths.cmd_sock, paths.mon_sock):
        stale.unlink(missing_ok=True)
    if paths.console.exists():
        paths.console.replace(paths.console.with_suffix(".log.1"))
    cmd = argv(paths, image, tap, net)
    paths.qemu_log.write_text(" ".join(cmd) + "\n")
    proc = run(cmd, check=False, timeout=60)
    if proc.returncode != 0:
        raise SandboxError(
            f"QEMU failed to start VM {net.name} ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}\n  command line: {paths.qemu_log}"
        )
    found = pid(paths)
    if found is None:
        raise SandboxError(
            f"QEMU for VM {net.name} exited right after start; console:\n{log_tail(paths.console)}"
        )
    return found


def monitor(paths: VmPaths, command: str, timeout: float = 3.0) -> None:
    """Send one HMP command (e.g. ``quit``) and read until QEMU answers or closes (closing
    at once can drop the command). Tolerates a monitor that is gone."""
    deadline = time.monotonic() + timeout
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(timeout)
        sock.connect(str(paths.mon_sock))
        sock.sendall(command.encode() + b"\n")
        seen = b""
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                return
            seen += chunk
            if seen.count(b"(qemu)") >= 2:  # the prompt after our command's output
                return


def stop(paths: VmPaths, timeout: float = 10.0) -> bool:
    """Stop QEMU: ``quit`` on the monitor (the root disk is a throw-away snapshot, so there
    is nothing to flush), then SIGTERM/SIGKILL. Returns True if it was running."""
    found = pid(paths)
    if found is None:
        _forget(paths)
        return False
    monitor(paths, "quit")
    deadline = time.monotonic() + timeout
    while is_alive(found) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_alive(found):
        terminate(found, timeout=5)
    _forget(paths)
    return True


def _forget(paths: VmPaths) -> None:
    for f in (paths.pidfile, paths.cmd_sock, paths.mon_sock):
        f.unlink(missing_ok=True)


def rss_mib(qemu_pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{qemu_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
