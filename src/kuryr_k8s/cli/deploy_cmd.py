"""``kuryr deploy render|install-cni|uninstall-cni``: the manifests and the node install.

* ``render`` writes ``deploy/`` from :mod:`kuryr_k8s.deploy.manifests` (``--check``: only
  compare, exit 1 naming the files that differ).
* ``install-cni`` is the daemon's init container: a self-contained ``kuryr-cni`` bundle,
  its launcher and the conflist, into the host directories mounted under ``--host-root``.
* ``uninstall-cni`` removes what ``install-cni`` wrote (run it on a node after deleting
  the DaemonSet, ``docs/install.md``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kuryr_k8s import __version__
from kuryr_k8s.model.errors import KuryrError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "deploy", help="render the manifests (deploy/), install kuryr-cni on a node"
    )
    dsub = parser.add_subparsers(dest="deploy_command", metavar="SUBCOMMAND", required=True)
    render = dsub.add_parser("render", help="write deploy/ from the sources it is made of")
    render.add_argument("--out", type=Path, default=Path("deploy"), help="default: deploy")
    render.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    render.set_defaults(handler=_render)
    for name, func in (("install-cni", _install), ("uninstall-cni", _uninstall)):
        p = dsub.add_parser(name, help=f"{name.split('-')[0]} kuryr-cni and its conflist")
        p.add_argument(
            "--host-root", default="/", help="where the node's filesystem is mounted (/host)"
        )
        p.add_argument("--bin-dir", default="/opt/cni/bin", help="the node's CNI bin dir")
        p.add_argument("--conf-dir", default="/etc/cni/net.d", help="the node's CNI conf dir")
        p.add_argument(
            "--bundle-dir", default="/opt/kuryr-cni", help="the node's dir for the bundle"
        )
        p.add_argument("--socket", default=None, help="daemon socket written in the conflist")
        p.set_defaults(handler=func)


def _render(args: argparse.Namespace) -> int:
    from kuryr_k8s.deploy.manifests import render

    differ = []
    for rel, text in render().items():
        path = args.out / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        differ.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and differ:
        print(
            f"kuryr deploy render: {', '.join(differ)} under {args.out} differ from the "
            "rendering: run 'kuryr deploy render'",
            file=sys.stderr,
        )
        return 1
    return 0


def _on_host(host_root: str, path: str) -> Path:
    return Path(host_root) / path.lstrip("/")


def _settings(args: argparse.Namespace, launcher: str | None) -> Any:
    from kuryr_k8s.cni.install import InstallSettings
    from kuryr_k8s.cni.wire import DEFAULT_SOCKET

    return InstallSettings(
        bin_dir=_on_host(args.host_root, args.bin_dir),
        conf_dir=_on_host(args.host_root, args.conf_dir),
        daemon_socket=args.socket or DEFAULT_SOCKET,
        launcher=launcher,
    )


def bundle_name() -> str:
    return f"{__version__}-py{sys.version_info.major}{sys.version_info.minor}"


def _install(args: argparse.Namespace) -> int:
    from kuryr_k8s.cni import bundle
    from kuryr_k8s.cni.install import install

    b = bundle.Bundle(_on_host(args.host_root, args.bundle_dir), args.bundle_dir, bundle_name())
    try:
        text = bundle.build(b)
        print(f"wrote {b.path}")
        for path in install(_settings(args, text)):
            print(f"wrote {path}")
        for path in bundle.prune(b):
            print(f"removed {path}")
    except (KuryrError, OSError) as exc:
        print(f"kuryr deploy install-cni: {exc}", file=sys.stderr)
        return 1
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from kuryr_k8s.cni import bundle
    from kuryr_k8s.cni.install import uninstall

    try:
        removed = uninstall(_settings(args, None))
        removed += bundle.remove(_on_host(args.host_root, args.bundle_dir))
    except OSError as exc:
        print(f"kuryr deploy uninstall-cni: {exc}", file=sys.stderr)
        return 1
    for path in removed:
        print(f"removed {path}")
    return 0
