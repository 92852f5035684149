"""``kuryr sandbox vm``: real QEMU VMs on the sandbox's Neutron networks."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from kuryr_k8s.model.errors import KuryrError

EPILOG = """\
A VM is a real Debian 12 guest under QEMU (software emulation, no KVM) whose eth0 is a
Neutron port on br-int, like a Nova VM's tap. Its image (kernel, initramfs, root disk with
Python 3.11 and this project's dependencies) is built once into /var/cache/kuryr-sandbox/vm
(30-90 s); this project's code (src/kuryr_k8s) is pushed at every start. The guest reaches
the host's 127.0.0.1 services (Kubernetes API 6443, Neutron 9696) as 10.0.2.2:<port>.

examples (as root, with the sandbox up):
  kuryr sandbox vm create worker0 --trunk        # port + trunk on net0, boot, wait (~10 s)
  kuryr sandbox vm list                          # name, state, IP, MAC, port, trunk, tap
  kuryr sandbox vm exec worker0 -- ip -br addr   # run a command in the guest
  kuryr sandbox vm exec worker0 --sh 'ping -c 3 10.10.0.1 && kuryr --version'
  kuryr sandbox vm console worker0               # tail of the serial console
  kuryr sandbox vm stop worker0                  # QEMU and tap gone; port and record kept
  kuryr sandbox vm start worker0                 # boot again (a few seconds)
  kuryr sandbox vm delete worker0                # VM, tap, br-int row, trunk, port

Files: <state-dir>/vms/<name>/ (vm.json, console.log, qemu.pid, sockets). Docs:
docs/sandbox-vm.md.
"""


def _progress(msg: str) -> None:
    print(msg, flush=True)


def register(ssub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``vm`` under ``kuryr sandbox``; ``add_common`` adds --state-dir and friends."""
    parser = ssub.add_parser(
        "vm",
        help="real QEMU VMs whose eth0 is a Neutron port (trunk parent) on br-int",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vsub = parser.add_subparsers(dest="vm_command", metavar="VMCOMMAND", required=True)

    def sub(name: str, helptext: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = vsub.add_parser(name, help=helptext, description=helptext)
        add_common(p)
        p.set_defaults(handler=_guarded(func))
        return p

    p = sub("create", "create (or reuse and verify) a VM and wait until it answers", _create)
    p.add_argument("name", help="VM name, e.g. worker0 (letters, digits, '-')")
    p.add_argument("--network", default="net0", help="Neutron network name or id (net0)")
    p.add_argument("--trunk", action="store_true", help="make the port a trunk parent")
    p.add_argument(
        "--security-group",
        action="append",
        dest="security_groups",
        metavar="ID",
        help="security group id of the port (repeatable; default: the project's default)",
    )
    p.add_argument("--restart", action="store_true", help="restart it if already running")

    p = sub("start", "start a stopped VM (as recorded)", _start)
    p.add_argument("name")
    p.add_argument("--restart", action="store_true", help="restart it if already running")

    p = sub("stop", "stop a VM (QEMU, tap and br-int row; port and record stay)", _stop)
    p.add_argument("name")

    sub("list", "list this sandbox's VMs", _list)

    p = sub("exec", "run a command in a VM (exit code, stdout and stderr pass through)", _exec)
    p.add_argument("name")
    p.add_argument("--sh", action="store_true", help="run CMD as one bash -c script")
    p.add_argument("--timeout", type=float, default=600, help="seconds (default 600)")
    p.add_argument("-i", "--stdin", action="store_true", help="pass our stdin to the command")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    p = sub("delete", "delete a VM and its tap, br-int row, trunk and port", _delete)
    p.add_argument("name")

    p = sub("console", "show the tail of a VM's serial console log", _console)
    p.add_argument("name")
    p.add_argument("-n", "--lines", type=int, default=40)


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except KuryrError as exc:
            print(f"kuryr sandbox vm {args.vm_command}: error: {exc}", file=sys.stderr)
            return 1

    return wrapper


def _ctx(args: argparse.Namespace) -> Any:
    from kuryr_k8s.sandbox import manager
    from kuryr_k8s.sandbox.settings import settings_from_env

    manager.preflight()
    return manager.context(
        settings_from_env(state_dir=args.state_dir, neutron=args.neutron, octavia=args.octavia)
    )


def _neutron(ctx: Any) -> tuple[Any, Any]:
    from kuryr_k8s.sandbox.openstack import topology
    from kuryr_k8s.sandbox.vm.machine import require_sandbox

    require_sandbox(ctx)
    conn = topology.connect(ctx.settings)
    return conn, topology.ensure_base_topology(conn, _progress)


def _create(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import machine

    ctx = _ctx(args)
    spec = machine.VmSpec(
        args.name,
        network=args.network,
        trunk=args.trunk,
        security_groups=tuple(args.security_groups) if args.security_groups else None,
    )
    t0 = time.monotonic()
    conn, topo = _neutron(ctx)
    vm = machine.ensure_vm(ctx, conn, topo, spec, _progress, restart=args.restart)
    print(f"VM {vm.name} ready in {time.monotonic() - t0:.1f} s")
    print(machine.format_vms([vm.info]))
    return 0


def _start(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import machine

    ctx = _ctx(args)
    machine.get_vm(ctx, args.name)  # a clear error before touching Neutron
    t0 = time.monotonic()
    conn, topo = _neutron(ctx)
    vm = machine.start(ctx, conn, topo, args.name, _progress, restart=args.restart)
    print(f"VM {vm.name} ready in {time.monotonic() - t0:.1f} s")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import machine

    ctx = _ctx(args)
    if not machine.stop(ctx, args.name, _progress):
        print(f"VM {args.name} was not running")
    return 0


def _list(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import machine

    ctx = _ctx(args)
    infos = machine.list_vms(ctx)
    if not infos:
        print(f"no VMs in {ctx.paths.root} (create one: kuryr sandbox vm create worker0)")
        return 0
    print(machine.format_vms(infos))
    return 0


def _exec(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import machine

    cmd = _leading_exec_options(args, list(args.cmd))
    if not cmd:
        print(
            "kuryr sandbox vm exec: error: give a command after --, e.g. "
            "'kuryr sandbox vm exec worker0 -- ip -br addr'",
            file=sys.stderr,
        )
        return 2
    vm = machine.get_vm(_ctx(args), args.name)
    argv = ["bash", "-c", " ".join(cmd)] if args.sh else cmd
    stdin = sys.stdin.buffer.read() if args.stdin else None
    res = vm.exec(argv, timeout=args.timeout, stdin=stdin)
    sys.stdout.buffer.write(res.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(res.stderr)
    return res.rc


def _leading_exec_options(args: argparse.Namespace, cmd: list[str]) -> list[str]:
    """Options written after NAME (``exec worker0 --sh '...'``) land in the command; take
    them out up to ``--`` or the first word that is not one of ours."""
    while cmd:
        head = cmd[0]
        if head == "--":
            return cmd[1:]
        if head == "--sh":
            args.sh = True
        elif head in ("-i", "--stdin"):
            args.stdin = True
        elif head == "--timeout" and len(cmd) > 1:
            args.timeout = float(cmd[1])
            cmd = cmd[1:]
        else:
            return cmd
        cmd = cmd[1:]
    return cmd


def _delete(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import layout, machine

    ctx = _ctx(args)
    layout.validate_name(args.name)
    conn, _topo = _neutron(ctx)
    removed = machine.delete(ctx, conn, args.name, _progress)
    if not removed:
        known = machine.known_names(ctx)
        print(f"no such VM {args.name!r} (known: {', '.join(known) or 'none'}); nothing to delete")
    return 0


def _console(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.vm import machine

    vm = machine.get_vm(_ctx(args), args.name)
    print(f"==> {vm.paths.console} <==")
    print(vm.console(args.lines))
    return 0
