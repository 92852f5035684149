"""``kuryr config check``: read a ``kuryr.conf`` (ours or upstream's, unchanged) and say
what each option does here, without starting anything.

Every option set in the file is listed as honoured or ignored (with why); upstream
kuryr-kubernetes 10.0.0 options are recognised by name. Then the file goes through the
controller's and the daemon's own loaders, so a value either would refuse at start is
reported here with the same message (naming the file, section and option), and the exit
code is 2. Nothing is contacted (Neutron, Kubernetes): checks against Neutron happen when
the controller starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kuryr_k8s.model.errors import ConfigError

DEFAULT_PATH = Path("/etc/kuryr/kuryr.conf")
"""Upstream's default location."""

CLUSTER_ID_NOTE = (
    "(not set) [neutron_defaults] cluster_id: upstream has no such option; the controller "
    "uses k8s-<uid of the kube-system namespace> (unique per cluster, stable for its life) "
    "and tags every Neutron port it creates with it. Set it to keep the id should the "
    "cluster ever be rebuilt from scratch (docs/migration.md)"
)

EPILOG = """\
exit codes: 0 every process would start with this file; 2 a value is invalid or missing
(the message names the file, section and option).

examples:
  kuryr config check --config-file /etc/kuryr/kuryr.conf
  kuryr config check --config-file kuryr.conf --all     # also upstream options not set
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "config",
        help="check a kuryr.conf (ours or upstream's) without starting anything",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_sub = parser.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = config_sub.add_parser(
        "check",
        help="list honoured/ignored options and validate every value",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--config-file",
        type=Path,
        default=DEFAULT_PATH,
        metavar="PATH",
        help=f"the file to check (default: {DEFAULT_PATH})",
    )
    check.add_argument(
        "--all",
        action="store_true",
        help="also list every upstream 10.0.0 option that the file does not set",
    )
    check.set_defaults(handler=check_main)


def report(path: Path, *, show_all: bool = False) -> tuple[list[str], list[str]]:
    """(report lines, errors) for ``path``; no errors means every process would start."""
    from kuryr_k8s.cni.daemon.main import DaemonSettings
    from kuryr_k8s.controller.build import load_config
    from kuryr_k8s.model.config import ConfigFile
    from kuryr_k8s.model.upstream_options import UPSTREAM_OPTIONS

    try:
        cfg = ConfigFile.load(path)
    except ConfigError as exc:
        return [], [str(exc)]
    uses = cfg.uses()
    lines = [u.line() for u in uses]
    if show_all:
        set_ = {(u.section, u.option) for u in uses}
        for (section, option), up in sorted(UPSTREAM_OPTIONS.items()):
            if (section, option) not in set_:
                verb = "honoured" if up.honoured else "ignored"
                lines.append(f"(not set) {verb} upstream option [{section}] {option}: {up.note}")
    errors = []
    for process, load in (
        ("controller", lambda: load_config(path)),
        ("daemon", lambda: DaemonSettings.from_config(ConfigFile.load(path))),
    ):
        try:
            load()
        except ConfigError as exc:
            errors.append(f"{process}: {exc}")
    if not cfg.get_str("neutron_defaults", "cluster_id", ""):
        lines.append(CLUSTER_ID_NOTE)
    return lines, errors


def check_main(args: argparse.Namespace) -> int:
    lines, errors = report(args.config_file, show_all=args.all)
    print(f"# {args.config_file}")
    for line in lines:
        print(line)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        return 2
    print("ok: the controller and the daemon accept this file")
    return 0
