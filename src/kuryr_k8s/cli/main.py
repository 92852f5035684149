"""The ``kuryr`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kuryr_k8s import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kuryr",
        description=(
            "Kuryr for Kubernetes: put pods on OpenStack Neutron ports, side by side with VMs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"kuryr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from kuryr_k8s.cli import cni_cmd, config_cmd, controller_cmd, deploy_cmd, sandbox_cmd
    from kuryr_k8s.cli import takeover_cmd as takeover

    sandbox_cmd.register(sub)
    cni_cmd.register(sub)
    controller_cmd.register(sub)
    config_cmd.register(sub)
    takeover.register(sub)
    deploy_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = args.handler
    rc: int = handler(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
