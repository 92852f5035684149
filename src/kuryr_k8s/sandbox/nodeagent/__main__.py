"""``python -m kuryr_k8s.sandbox.nodeagent``: the composition root of the node agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kuryr_k8s.k8s import KubeClient, KubeSettings, load_incluster, load_kubeconfig
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.sandbox.nodeagent.agent import NodeAgent, default_node_ip
from kuryr_k8s.sandbox.nodeagent.config import (
    DEFAULT_CNI_BIN_DIRS,
    DEFAULT_CNI_CONF_DIR,
    DEFAULT_STATE_DIR,
    NodeAgentConfig,
)

DESCRIPTION = """\
Play kubelet and the container runtime for sandbox nodes, so that the real kuryr CNI
plugin is exercised exactly as on a real node.

What it does:
  * registers each --node as a Node (Ready, InternalIP = --node-ip) and heartbeats it;
  * binds unscheduled pods (default scheduler) to its nodes, round-robin (--no-schedule
    turns that off when a real scheduler or another agent does it);
  * for each pod bound to its nodes: creates a network namespace
    /var/run/netns/kuryr-[<owner>_]<ns>-<pod>-<hash> with lo up and an empty
    /etc/netns/<netns>/resolv.conf, runs CNI ADD of the lexicographically first
    *.conflist in --cni-conf-dir (plugins from --cni-bin-dir, CNI_IFNAME=eth0,
    K8S_POD_* in CNI_ARGS), and marks the pod Running with the IPs of the result;
    on failure it records a Warning event FailedCreatePodSandBox and retries with backoff;
  * when a pod is deleted: CNI DEL (with the cached ADD result), removes the netns, and
    deletes the pod with gracePeriodSeconds=0;
  * on start, tears down the sandboxes of pods that vanished while it was down
    (records in --state-dir/sandboxes; a record exists before its netns does).

Stopping the agent (SIGTERM/SIGINT) leaves running pods alone, as kubelet does.
Run a command in a pod's netns with `kuryr sandbox exec POD -- CMD`.
"""

EPILOG = """\
example:
  python -m kuryr_k8s.sandbox.nodeagent --kubeconfig /tmp/kube/config --node node-1 \\
      --cni-conf-dir /etc/cni/net.d --cni-bin-dir /opt/cni/bin
"""


def _first_kubeconfig(value: str) -> Path | None:
    paths = [Path(p) for p in value.split(os.pathsep) if p]
    return next((p for p in paths if p.is_file()), paths[0] if paths else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kuryr_k8s.sandbox.nodeagent",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=_first_kubeconfig(os.environ.get("KUBECONFIG", "")),
        help="kubeconfig of the API server (default: the first file of $KUBECONFIG; "
        "in-cluster config if unset)",
    )
    p.add_argument("--context", help="kubeconfig context (default: current-context)")
    p.add_argument(
        "--node",
        action="append",
        required=True,
        metavar="NAME",
        help="Node name to register and run pods for; repeat for several nodes on this host",
    )
    p.add_argument(
        "--node-ip",
        help="InternalIP of the node(s) and hostIP of their pods (default: the address of "
        "the default route)",
    )
    p.add_argument(
        "--cni-conf-dir",
        type=Path,
        default=DEFAULT_CNI_CONF_DIR,
        help="directory of CNI *.conflist files; the lexicographically first is used "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--cni-bin-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="directory of CNI plugin executables (CNI_PATH); repeat for several "
        f"(default: {':'.join(map(str, DEFAULT_CNI_BIN_DIRS))})",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where sandbox records survive restarts (default: %(default)s)",
    )
    p.add_argument(
        "--netns-owner",
        default="",
        metavar="SANDBOX_ID",
        help="six hex digits put into every pod netns name (kuryr-<id>_<ns>-<pod>-<hash>), "
        "so that several sandboxes on one host never share a name (default: none)",
    )
    p.add_argument(
        "--no-schedule",
        dest="schedule",
        action="store_false",
        help="do not bind unscheduled pods",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default: %(default)s)",
    )
    return p


def settings_from(args: argparse.Namespace) -> KubeSettings:
    if args.kubeconfig:
        return load_kubeconfig(Path(args.kubeconfig), context=args.context)
    return load_incluster()


def config_from(args: argparse.Namespace) -> NodeAgentConfig:
    return NodeAgentConfig(
        nodes=tuple(args.node),
        node_ip=args.node_ip or default_node_ip(),
        cni_conf_dir=args.cni_conf_dir,
        cni_bin_dirs=tuple(args.cni_bin_dir or DEFAULT_CNI_BIN_DIRS),
        state_dir=args.state_dir,
        schedule=args.schedule,
        netns_owner=args.netns_owner,
    )


async def serve(settings: KubeSettings, config: NodeAgentConfig) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    async with KubeClient.from_settings(settings) as client:
        try:
            await NodeAgent(client, config).run()
        except asyncio.CancelledError:
            logging.getLogger(__name__).info("stopping; pods keep running")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(args)
        config = config_from(args)
    except ConfigError as exc:
        print(f"nodeagent: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
