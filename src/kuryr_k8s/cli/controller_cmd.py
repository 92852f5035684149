"""``kuryr controller``: give every pod a Neutron port and publish it in its KuryrPort.

This module is the controller's composition root: it reads ``kuryr.conf`` once, builds
the settings, the Kubernetes and Neutron clients, the port provider, the reconcilers and
the health server, and passes them down. Nothing else reads configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kuryr_k8s.model.errors import ConfigError, KuryrError

if TYPE_CHECKING:
    from kuryr_k8s.controller.build import ControllerConfig
    from kuryr_k8s.k8s import KubeSettings

LOG = logging.getLogger("kuryr_k8s.controller")

DESCRIPTION = """\
Run kuryr-controller: for every scheduled, non-hostNetwork pod it creates a KuryrPort
(same name, owned by the pod), gives it exactly one Neutron port on the pod subnet
(bound to the pod's node, tagged with the cluster id and the pod uid) and writes what
the node must plug into KuryrPort.status.vifs. Deleting the pod releases the port (to
the pool, or deletes it) before the finalizers are dropped.
"""

EPILOG = """\
minimal kuryr.conf (the sandbox: keystone-less Neutron on 127.0.0.1:9696):

  [neutron]
  endpoint_override = http://127.0.0.1:9696     # or: cloud = <name in clouds.yaml>
  auth_type = none

  [neutron_defaults]
  project = <project id>                        # owns the pod ports
  pod_subnet = <subnet id>                      # pods' addresses come from here
  pod_security_groups = <sg id>[,<sg id>...]
  # cluster_id = <unique name>                  # tag on every port; GC relies on it
  #                                             # (default: k8s-<kube-system's uid>)
  ovs_bridge = br-int
  # network_device_mtu = 0                      # 0: the network's MTU

  [kubernetes]
  # api_root = https://...                      # else --kubeconfig, else in-cluster
  vif_pool_driver = neutron                     # pooled ports; 'noop' = one create per pod
  controller_ha = true                          # leader election on a Lease
  # pod_vif_driver = neutron-vif                # nested-vlan: nodes are VMs, pods get VLAN
  #                                             # subports of the VM's trunk; mixed: per node

  # [pod_vif_nested]                            # with nested-vlan or mixed
  # worker_nodes_subnets = <subnet id>[,...]    # the VMs' addresses; their ports: trunk parents

  [vif_pool]
  ports_pool_min = 5
  ports_pool_batch = 10
  ports_pool_max = 0
  ports_pool_update_frequency = 20

  [health_server]
  port = 8082                                   # /healthz /readyz /metrics

The options are checked at start; an unknown option or a subnet/security group/project
that Neutron does not know stops the controller with a message naming it.

examples:
  kuryr controller --config-file /etc/kuryr/kuryr.conf --kubeconfig ~/.kube/config
  kuryr controller --config-file kuryr.conf --log-format json      # in a pod
  curl -s localhost:8082/readyz; curl -s localhost:8082/metrics | grep kuryr_pod_wiring
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "controller",
        help="give every pod a Neutron port (reconcile Pods and KuryrPorts)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-file",
        required=True,
        type=Path,
        metavar="PATH",
        help="kuryr.conf (INI, upstream option names); see below",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="kubeconfig to reach the API server (default: $KUBECONFIG, else in-cluster)",
    )
    parser.add_argument(
        "--identity",
        help="leader election identity (default: <hostname>_<random>)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text: key=value lines; json: one JSON object per line",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from kuryr_k8s.controller import logs
    from kuryr_k8s.controller.build import load_config
    from kuryr_k8s.model.config import log_ignored

    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"kuryr controller: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(args.log_level, json_lines=args.log_format == "json")
    log_ignored(args.config_file, LOG)
    identity = args.identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_serve(config, args.kubeconfig, identity))
    except ConfigError as exc:
        LOG.error("configuration error: %s", exc)
        print(f"kuryr controller: configuration error: {exc}", file=sys.stderr)
        return 2
    except KuryrError as exc:
        LOG.error("stopped: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _kube_settings(config: ControllerConfig, kubeconfig: Path | None) -> KubeSettings:
    from kuryr_k8s.k8s import load_incluster, load_kubeconfig

    path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
    if path is not None:
        settings = load_kubeconfig(path)
    else:
        try:
            settings = load_incluster()
        except KuryrError as exc:
            raise ConfigError(
                f"no --kubeconfig given and not running in a pod ({exc}); "
                "pass --kubeconfig or set [kubernetes] api_root with a token"
            ) from exc
    if config.kubernetes.api_root:
        settings = replace(settings, server=config.kubernetes.api_root.rstrip("/"))
    return settings


async def _serve(config: ControllerConfig, kubeconfig: Path | None, identity: str) -> None:
    from kuryr_k8s.controller import build

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    app = await build.build(config, _kube_settings(config, kubeconfig), identity)
    try:
        await app.run()
    except asyncio.CancelledError:
        LOG.info("stopping (signal)")
    finally:
        with contextlib.suppress(Exception):
            await app.close()
