"""``kuryr sandbox``: real OpenStack networking (OVS, OVN, Neutron, MariaDB, Octavia) on
one Debian 12 machine, for tests and the demo."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from kuryr_k8s.model.errors import KuryrError

EPILOG = """\
typical use (as root on Debian 12):
  kuryr sandbox install            # apt packages (+ venvs with --neutron pypi / --octavia)
  kuryr sandbox up                 # start everything; a no-op when already up
  kuryr sandbox topology           # net0/net1/router1/default SG of the seed scenario
  kuryr sandbox status             # pid, memory and API health of each component
  eval "$(kuryr sandbox env)"      # then: openstack network list, ovs-vsctl show
  kuryr sandbox down               # stop what the sandbox started (state is kept)
  kuryr sandbox reset              # stop and wipe state (logs and venvs are kept)
  kuryr sandbox vm create worker0  # a real QEMU VM on net0 ('kuryr sandbox vm --help')

Everything lives in one state directory (default /var/lib/kuryr-sandbox, or
--state-dir / KURYR_SANDBOX_DIR) and listens on 127.0.0.1 only. The flags given to
'up' are remembered there, so later commands need none.
"""


DEMO_HELP = (
    "the seed's hybrid scenario: bare-metal pods, a VM, and an overcloud of worker VMs whose "
    "pods are trunk subports (VLANs), all on the same Neutron networks, with ping and HTTP "
    "checks between them"
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        help="private state directory (default: $KURYR_SANDBOX_DIR or /var/lib/kuryr-sandbox)",
    )
    p.add_argument(
        "--neutron",
        choices=["debian", "pypi"],
        help="'debian': Neutron Zed from apt (default); 'pypi': Neutron 29.0.0 under uWSGI",
    )
    p.add_argument(
        "--octavia",
        action="store_true",
        default=None,
        help="also run Octavia with the OVN provider (needed for Services)",
    )
    p.add_argument(
        "--kuryr",
        action="store_true",
        default=None,
        help="also run kuryr-controller, kuryr-daemon and a node agent (kubelet stand-in) "
        "for this host, against the sandbox's Kubernetes API",
    )
    p.add_argument(
        "--kubeconfig",
        help="run kuryr-controller, kuryr-daemon and the node agent against this existing "
        "cluster instead of the Kubernetes API emulator (implies --kuryr; remembered)",
    )


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sandbox",
        help="run real OpenStack networking locally (OVS, OVN, Neutron, MariaDB, Octavia)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssub = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND", required=True)
    for name, func, helptext in (
        ("install", _install, "install Debian packages (and venvs for --neutron pypi/--octavia)"),
        ("up", _up, "start every component that is not running (idempotent)"),
        ("down", _down, "stop the components this sandbox started"),
        ("status", _status, "show each component's pid, memory and API health"),
        ("reset", _reset, "stop and wipe all state except logs and venvs"),
        ("env", _env, "print shell exports for openstack, ovs-vsctl, ovn-nbctl and kubectl"),
        ("topology", _topology, "create (or show) the seed's base topology in Neutron"),
        ("demo", _demo, DEMO_HELP),
    ):
        p = ssub.add_parser(name, help=helptext, description=helptext)
        _add_common(p)
        p.set_defaults(handler=func)
        if name == "demo":
            p.add_argument(
                "--side-by-side",
                action="store_true",
                help="quick run without VMs: bare-metal pods and a network-namespace VM "
                "stand-in only (the seed's first post)",
            )
    ex = ssub.add_parser(
        "exec",
        help="run a command in a sandbox pod's network namespace (like kubectl exec)",
        description="Run CMD inside the network namespace of POD on this host, e.g. "
        "'kuryr sandbox exec busybox-sleep -- ping -c 3 10.10.0.10'. Needs 'up --kuryr'.",
    )
    _add_common(ex)
    ex.add_argument("-n", "--namespace", default="default", help="pod namespace")
    ex.add_argument("pod", help="pod name")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    ex.set_defaults(handler=_exec)
    from kuryr_k8s.sandbox.vm.cli import register as register_vm

    register_vm(ssub, _add_common)


def _settings(args: argparse.Namespace) -> Any:
    from kuryr_k8s.sandbox.settings import settings_from_env

    return settings_from_env(
        state_dir=args.state_dir,
        neutron=args.neutron,
        octavia=args.octavia,
        kuryr=args.kuryr,
        kubeconfig=args.kubeconfig,
    )


def _progress(msg: str) -> None:
    print(msg, flush=True)


def _guarded(func: Any) -> Any:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            rc: int = func(args)
        except KuryrError as exc:
            print(f"kuryr sandbox {args.sandbox_command}: error: {exc}", file=sys.stderr)
            return 1
        return rc

    return wrapper


@_guarded
def _install(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import install, manager
    from kuryr_k8s.sandbox.paths import paths_for

    manager.preflight()
    settings = _settings(args)
    t0 = time.monotonic()
    install.install(settings, paths_for(settings), _progress)
    print(f"install done in {time.monotonic() - t0:.1f} s")
    return 0


@_guarded
def _up(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import manager
    from kuryr_k8s.sandbox.settings import record

    manager.preflight()
    settings = _settings(args)
    t0 = time.monotonic()
    print(
        f"bringing up the sandbox in {settings.state_dir} (Neutron: {settings.neutron}"
        f"{', Octavia' if settings.octavia else ''})",
        flush=True,
    )
    started = manager.up(settings, _progress)
    record(settings)
    took = time.monotonic() - t0
    print(f"sandbox up in {took:.1f} s ({len(started)} component(s) started)")
    return 0


@_guarded
def _down(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import manager

    manager.preflight()
    stopped = manager.down(_settings(args), _progress)
    print(f"sandbox down ({len(stopped)} component(s) stopped)")
    return 0


@_guarded
def _status(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import manager

    rows = manager.status(_settings(args))
    print(manager.format_status(rows))
    return 0 if all(r.healthy for r in rows) else 3


@_guarded
def _reset(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import manager

    manager.preflight()
    manager.reset(_settings(args), _progress)
    print("sandbox reset")
    return 0


@_guarded
def _env(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import manager

    print("\n".join(manager.env_lines(_settings(args))))
    return 0


@_guarded
def _topology(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox.openstack import topology

    settings = _settings(args)
    from kuryr_k8s.sandbox.openstack import hostplug

    topo = topology.ensure_base_topology(topology.connect(settings), _progress)
    hostplug.ensure_external_host(topo.external_cidr)
    print(topology.format_topology(topo))
    return 0


@_guarded
def _exec(args: argparse.Namespace) -> int:
    from kuryr_k8s.sandbox import manager
    from kuryr_k8s.sandbox.kuryr_components import nodeagent_state
    from kuryr_k8s.sandbox.nodeagent import exec_in_pod

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print(
            "kuryr sandbox exec: error: give a command after --, e.g. -- ip addr", file=sys.stderr
        )
        return 2
    ctx = manager.context(_settings(args))
    proc = exec_in_pod(args.namespace, args.pod, cmd, state_dir=nodeagent_state(ctx))
    return proc.returncode


@_guarded
def _demo(args: argparse.Namespace) -> int:
    import dataclasses

    from kuryr_k8s.sandbox import demo, hybrid, manager
    from kuryr_k8s.sandbox.settings import record

    manager.preflight()
    settings = dataclasses.replace(_settings(args), kuryr=True)
    if args.octavia is None:
        settings = dataclasses.replace(settings, octavia=True)
    if args.side_by_side:
        ok, look_around = demo.run(settings, _progress)
    else:
        settings = dataclasses.replace(settings, hybrid=True)
        ok, look_around = hybrid.run(settings, _progress)
    record(settings)
    print()
    print(look_around)
    return 0 if ok else 1
