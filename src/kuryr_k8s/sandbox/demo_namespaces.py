"""The main job's namespaces table: each namespace of the cluster and the subnet its pods
get, as the running kuryr-controller is configured (issue 12: "the main job's output shows
namespaces and their subnets").

The sandbox's controller runs ``[kubernetes] pod_subnets_driver = default``: the seed's
scenario needs its pods on ``net1`` next to the VMs, so every namespace shares
``[neutron_defaults] pod_subnet``, and the table says so. With ``pod_subnets_driver =
namespace`` each namespace has its own network and subnet from ``[namespace_subnet]
pod_subnet_pool``, recorded in its ``KuryrNetwork``, and the table shows those (a namespace
without a complete KuryrNetwork yet shows ``pending``). KuryrNetworks that exist are shown
whatever the driver. Decision and how to turn namespace networks on: docs/hybrid.md.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.sandbox import process
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kuryr_components import kuryr_conf_path
from kuryr_k8s.sandbox.openstack import topology
from kuryr_k8s.sandbox.settings import SandboxSettings

HEAD = ("NAMESPACE", "PODS", "NETWORK", "SUBNET", "CIDR", "FROM")


@dataclass(frozen=True)
class SubnetsConfig:
    """What the controller's kuryr.conf says about pod subnets."""

    driver: str
    pod_subnet: str


def subnets_config(path: Path) -> SubnetsConfig:
    if not path.exists():
        return SubnetsConfig("default", "")
    cfg = ConfigFile.load(path)
    return SubnetsConfig(
        cfg.get_str("kubernetes", "pod_subnets_driver", "default") or "default",
        cfg.get_str("neutron_defaults", "pod_subnet"),
    )


def _items(ctx: Context, kubeconfig: Path | None, *what: str) -> list[dict[str, Any]]:
    """``kubectl get ... -o json`` items; none if the kind is not served (no CRD)."""
    proc = process.run(
        ["kubectl", f"--kubeconfig={kubeconfig or ctx.paths.kubeconfig}", "get", *what, "-o",
         "json"],
        check=False,
        timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        return []
    items: list[dict[str, Any]] = json.loads(proc.stdout).get("items") or []
    return items


def rows(
    namespaces: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    kuryrnetworks: list[dict[str, Any]],
    config: SubnetsConfig,
    subnet_info: dict[str, tuple[str, str, str]],
) -> list[tuple[str, ...]]:
    """One row per namespace (pure). ``subnet_info``: subnet id → (network name, subnet
    name, CIDR) as Neutron has them."""
    pods_in = Counter(str((p.get("metadata") or {}).get("namespace")) for p in pods)
    knet = {str((k.get("metadata") or {}).get("name")): k for k in kuryrnetworks}
    out: list[tuple[str, ...]] = []
    for ns in sorted(str((n.get("metadata") or {}).get("name")) for n in namespaces):
        status = (knet.get(ns) or {}).get("status") or {}
        if ns in knet:
            subnet = str(status.get("subnetId") or "")
            net, sname, _ = subnet_info.get(subnet, (str(status.get("netId") or "-"), "-", ""))
            cidr = str(status.get("subnetCIDR") or "-")
            populated = "populated" if status.get("populated") else "pending"
            source = f"KuryrNetwork {ns} ({populated})"
            row = (ns, str(pods_in[ns]), net, sname if subnet else "-", cidr, source)
        elif config.driver == "namespace":
            row = (ns, str(pods_in[ns]), "-", "-", "-", "pending: no KuryrNetwork yet")
        else:
            net, sname, cidr = subnet_info.get(config.pod_subnet, ("-", config.pod_subnet, "-"))
            row = (ns, str(pods_in[ns]), net, sname, cidr, "pod_subnet (shared)")
        out.append(row)
    return out


def _subnet_info(conn: Any, ids: set[str]) -> dict[str, tuple[str, str, str]]:
    info: dict[str, tuple[str, str, str]] = {}
    for subnet_id in sorted(i for i in ids if i):
        subnet = conn.network.find_subnet(subnet_id, ignore_missing=True)
        if subnet is None:
            continue
        net = conn.network.find_network(subnet.network_id, ignore_missing=True)
        info[subnet_id] = (net.name if net is not None else subnet.network_id, subnet.name,
                           subnet.cidr)  # fmt: skip
    return info


def report(ctx: Context, conn: Any, *, kubeconfig: Path | None = None) -> str:
    """The namespaces table of the cluster (``kubeconfig``: another cluster than the
    sandbox's), with the driver it was computed for on the first line."""
    config = subnets_config(kuryr_conf_path(ctx))
    namespaces = _items(ctx, kubeconfig, "namespaces")
    pods = _items(ctx, kubeconfig, "pods", "-A")
    knets = _items(ctx, kubeconfig, "kuryrnetworks", "-A")
    ids = {config.pod_subnet} | {str((k.get("status") or {}).get("subnetId") or "") for k in knets}
    table = rows(namespaces, pods, knets, config, _subnet_info(conn, ids))
    from kuryr_k8s.sandbox.demo import _table  # the demo's table layout

    title = (
        f"namespaces and their subnets ([kubernetes] pod_subnets_driver = {config.driver}; "
        f"{len(knets)} KuryrNetwork(s))"
    )
    return title + "\n" + _table([HEAD, *table])


def show(settings: SandboxSettings, ctx: Context) -> str:
    """:func:`report` for the sandbox's cluster, with a Neutron connection of its own."""
    conn = topology.connect(settings)
    try:
        return report(ctx, conn)
    finally:
        conn.close()
