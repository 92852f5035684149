"""Command line of the standalone emulator (``python -m kuryr_k8s.sandbox.kubeapi``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from kuryr_k8s.sandbox.kubeapi.server import KubeApiServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kuryr_k8s.sandbox.kubeapi",
        description="Kubernetes API emulator (plain HTTP on loopback, no authentication).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument("--state-file", type=Path, help="JSON file to persist the store in")
    parser.add_argument(
        "--kubeconfig-out", type=Path, help="write a kubeconfig for the server here once it listens"
    )
    parser.add_argument(
        "--history", type=int, default=10_000, help="watch history window, in events"
    )
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=60.0,
        help="seconds between watch BOOKMARK events",
    )
    parser.add_argument(
        "--orphan-pod-quarantine",
        type=float,
        default=40.0,
        help="seconds before pods bound to a missing node are force-deleted",
    )
    parser.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="also serve HTTPS (self-signed) here, 0 for a free port: kubectl sends "
        "ServiceAccount tokens only over TLS",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    server = KubeApiServer(
        args.host,
        args.port,
        args.state_file,
        history=args.history,
        bookmark_interval=args.bookmark_interval,
        orphan_pod_quarantine=args.orphan_pod_quarantine,
        tls_port=args.tls_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if args.kubeconfig_out:
            server.write_kubeconfig(args.kubeconfig_out)
        if server.tls_url:
            print(f"listening on {server.tls_url}", flush=True)
        print(f"listening on {server.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args))
    return 0
