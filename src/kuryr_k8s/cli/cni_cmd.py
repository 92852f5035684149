"""``kuryr daemon`` (the per-node CNI daemon) and ``kuryr cni install|uninstall``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from kuryr_k8s.model.errors import KuryrError


def register(sub: Any) -> None:
    daemon = sub.add_parser(
        "daemon",
        help="run the per-node CNI daemon (plugs pods from their KuryrPorts)",
        description="Watch this node's KuryrPorts and serve kuryr-cni over a unix socket.",
    )
    daemon.add_argument("--config-file", type=Path, help="kuryr.conf ([cni_daemon] section)")
    daemon.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: in-cluster)")
    daemon.add_argument("--node-name", help="this node's name (default: hostname)")
    daemon.add_argument("--socket", type=Path, help="unix socket of the CNI API")
    daemon.add_argument("--metrics-address", help="host:port for /healthz /readyz /metrics")
    daemon.add_argument(
        "--ovsdb",
        help="OVSDB connection, e.g. unix:/run/openvswitch/db.sock ('': no ovs VIFs here)",
    )
    daemon.add_argument(
        "--link-iface", help="the VM's trunk NIC for nested (vlan) pods ([binding] link_iface)"
    )
    daemon.add_argument("--vif-timeout", type=float, help="seconds ADD waits for the VIF")
    daemon.add_argument("--ready-timeout", type=float, help="seconds ADD waits for ovn-installed")
    daemon.add_argument("--log-level", default="INFO")
    daemon.set_defaults(handler=_daemon)

    cni = sub.add_parser("cni", help="install the kuryr-cni plugin and its network config")
    csub = cni.add_subparsers(dest="cni_command", metavar="SUBCOMMAND", required=True)
    for name, func in (("install", _install), ("uninstall", _uninstall)):
        p = csub.add_parser(name, help=f"{name} the plugin and the conflist")
        p.add_argument("--bin-dir", type=Path, default=Path("/opt/cni/bin"))
        p.add_argument("--conf-dir", type=Path, default=Path("/etc/cni/net.d"))
        p.add_argument("--socket", default=None, help="daemon socket written in the conflist")
        p.add_argument("--timeout", type=float, default=300.0)
        p.set_defaults(handler=func)


def _install_settings(args: argparse.Namespace) -> Any:
    from kuryr_k8s.cni.install import InstallSettings
    from kuryr_k8s.cni.wire import DEFAULT_SOCKET

    return InstallSettings(
        bin_dir=args.bin_dir,
        conf_dir=args.conf_dir,
        daemon_socket=args.socket or DEFAULT_SOCKET,
        timeout=args.timeout,
    )


def _install(args: argparse.Namespace) -> int:
    from kuryr_k8s.cni.install import install

    for path in install(_install_settings(args)):
        print(f"wrote {path}")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from kuryr_k8s.cni.install import uninstall

    for path in uninstall(_install_settings(args)):
        print(f"removed {path}")
    return 0


def _daemon(args: argparse.Namespace) -> int:
    from kuryr_k8s.cni.daemon.main import DaemonSettings
    from kuryr_k8s.model.config import ConfigFile, log_ignored

    try:
        settings = DaemonSettings.from_config(ConfigFile.load(args.config_file))
    except KuryrError as exc:
        print(f"kuryr daemon: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log_ignored(args.config_file, logging.getLogger("kuryr_k8s.cni.daemon"))
    overrides: dict[str, Any] = {
        "kubeconfig": args.kubeconfig,
        "node_name": args.node_name,
        "socket_path": args.socket,
        "metrics_address": args.metrics_address,
        "ovsdb_connection": args.ovsdb,
        "link_iface": args.link_iface,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    service = settings.service
    if args.vif_timeout is not None:
        service = replace(service, vif_timeout=args.vif_timeout)
    if args.ready_timeout is not None:
        service = replace(service, ready_timeout=args.ready_timeout)
    settings = replace(settings, service=service)
    return asyncio.run(_serve(settings))


async def _serve(settings: Any) -> int:
    from kuryr_k8s.cni.daemon.main import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(settings, stop)
    except KuryrError as exc:
        print(f"kuryr daemon: {exc}", file=sys.stderr)
        return 1
    return 0
