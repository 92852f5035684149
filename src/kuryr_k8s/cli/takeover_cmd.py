"""``kuryr takeover rollback``: hand a cluster back to upstream kuryr-kubernetes.

Taking over needs no command: our controller does it at start (docs/migration.md). The
way back, once every controller of ours is stopped (scaled to 0):

1. refuses while a controller of ours holds the leader Lease (it would convert
   everything again), or when a KuryrPort holds a VIF it cannot convert (the message
   names it) -- before changing anything;
2. rewrites every KuryrPort's ``status.vifs`` in upstream's os-vif format
   (:func:`~kuryr_k8s.model.kuryrport.to_upstream_vif`: ``VIFOpenVSwitch`` whose
   ``vif_name`` is the host device the node made, so upstream's daemon unplugs it at DEL;
   nested ``vlan`` VIFs as upstream's ``VIFVlanNested``, whose DEL removes the pod's
   interface by its name), through ``/status`` while our CRD still has that subresource;
3. puts back the CRD spec our controller replaced (kept in the CRD's annotation
   ``kuryr.openstack.org/replaced-crd-spec``; without it: ``--crd-file`` with upstream's
   ``kuryrport.yaml``). Objects and their status stay.

Neutron ports keep their ``kuryr.*`` tags (upstream ignores them); ports stay where they
are, no pod is re-plugged. Then start upstream's controller and daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kuryr_k8s.model.errors import KuryrError

if TYPE_CHECKING:
    from kuryr_k8s.k8s import KubeClient

EPILOG = """\
exit codes: 0 rolled back (or nothing to do); 2 refused (the message says why and what to
do; nothing was changed); 1 the API failed midway (run it again: it is idempotent).

example:
  kubectl -n kuryr-system scale deployment kuryr-controller --replicas=0
  kuryr takeover rollback --kubeconfig ~/.kube/config
  kubectl apply -f upstream-kuryr-controller.yaml     # upstream's manifests
"""


class Refused(Exception):
    """The rollback must not start; the message says why and what to do."""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "takeover",
        help="hand the cluster back to upstream kuryr-kubernetes (rollback)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    takeover_sub = parser.add_subparsers(dest="takeover_command", metavar="COMMAND", required=True)
    rollback = takeover_sub.add_parser(
        "rollback",
        help="convert KuryrPorts back to upstream's format and restore upstream's CRD",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rollback.add_argument("--kubeconfig", type=Path, metavar="PATH", help="default: $KUBECONFIG")
    rollback.add_argument(
        "--lease-namespace",
        action="append",
        metavar="NS",
        help="where our controllers' leader Lease lives (repeatable); default: both "
        "kuryr-system (deploy/'s kuryr.conf) and kube-system (the built-in default)",
    )
    rollback.add_argument("--lease-name", default="kuryr-controller")
    rollback.add_argument(
        "--lease-grace",
        type=float,
        default=5.0,
        metavar="S",
        help="a Lease renewed within its duration plus this many seconds counts as held",
    )
    rollback.add_argument("--crd-file", type=Path, metavar="PATH", help="upstream's kuryrport.yaml")
    rollback.add_argument("--dry-run", action="store_true", help="check and report only")
    rollback.set_defaults(handler=rollback_main)


def rollback_main(args: argparse.Namespace) -> int:
    try:
        lines = asyncio.run(_rollback(args))
    except Refused as exc:
        print(f"kuryr takeover rollback: refused: {exc}", file=sys.stderr)
        return 2
    except KuryrError as exc:
        print(f"kuryr takeover rollback: failed: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


async def _rollback_namespace_networks(client: KubeClient) -> list[str]:
    """KuryrNetworks get upstream's finalizer back; CRDs our controller upgraded from
    upstream's (``kuryrnetworks``, ``kuryrnetworkpolicies``) get their previous spec."""
    from kuryr_k8s.controller.crds import REPLACED_SPEC
    from kuryr_k8s.controller.takeover_networks import restore_upstream_finalizers
    from kuryr_k8s.k8s import NotFound
    from kuryr_k8s.k8s.resources import CRDS

    lines = []
    with contextlib.suppress(NotFound):  # no KuryrNetwork CRD: nothing to give back
        for key in await restore_upstream_finalizers(client):
            lines.append(f"KuryrNetwork {key}: upstream's finalizer restored")
    for name in ("kuryrnetworks.openstack.org", "kuryrnetworkpolicies.openstack.org"):
        try:
            crd = await client.get(CRDS, name)
        except NotFound:
            continue
        annotations = crd["metadata"].get("annotations") or {}
        if REPLACED_SPEC not in annotations:
            continue
        crd["spec"] = json.loads(annotations.pop(REPLACED_SPEC))
        await client.replace(CRDS, crd)
        lines.append(f"CRD {name}: upstream's spec restored")
    return lines


async def _rollback_services_and_policies(client: KubeClient) -> list[str]:
    """Refused while a KuryrNetworkPolicy is ours (upstream cannot take over our SGs);
    KuryrLoadBalancers need nothing: format and finalizers are upstream's already."""
    from kuryr_k8s.controller.takeover_policies import rollback_problem
    from kuryr_k8s.controller.takeover_services import rollback_notes

    problem = await rollback_problem(client)
    if problem is not None:
        raise Refused(problem)
    return await rollback_notes(client)


async def _restore_klb_crd(client: KubeClient) -> list[str]:
    from kuryr_k8s.controller.takeover_services import restore_upstream_crd

    return await restore_upstream_crd(client)


def _lease_holder(lease: dict[str, Any], grace: float) -> str | None:
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    renew = spec.get("renewTime")
    if not holder or not renew:
        return None
    renewed = datetime.datetime.fromisoformat(str(renew).replace("Z", "+00:00"))
    age = (datetime.datetime.now(datetime.UTC) - renewed).total_seconds()
    duration = float(spec.get("leaseDurationSeconds") or 15)
    return f"{holder} (renewed {age:.0f} s ago)" if age < duration + grace else None


async def _rollback(args: argparse.Namespace) -> list[str]:
    from kuryr_k8s.controller.crds import REPLACED_SPEC
    from kuryr_k8s.k8s import KubeClient, NotFound, load_kubeconfig
    from kuryr_k8s.k8s.resources import CRDS, KURYRPORTS, LEASES
    from kuryr_k8s.model.kuryrport import parse_vifs, to_upstream_vif, upstream_vifs
    from kuryr_k8s.model.vif import InvalidVif

    path = args.kubeconfig or (
        Path(os.environ["KUBECONFIG"]) if "KUBECONFIG" in os.environ else None
    )
    if path is None:
        raise Refused("no --kubeconfig and no $KUBECONFIG")
    name = "kuryrports.openstack.org"
    async with KubeClient.from_settings(load_kubeconfig(path)) as client:
        for lease_ns in args.lease_namespace or ("kuryr-system", "kube-system"):
            try:
                lease = await client.get(LEASES, args.lease_name, lease_ns)
            except NotFound:
                lease = {}
            holder = _lease_holder(lease, args.lease_grace)
            if holder is not None:
                raise Refused(
                    f"{holder} holds the leader Lease {lease_ns}/{args.lease_name}: "
                    "stop every kuryr controller of ours first (scale its Deployment to 0), "
                    "or it converts everything back at its next start"
                )
        crd = await client.get(CRDS, name)
        annotations = crd["metadata"].get("annotations") or {}
        if args.crd_file is not None:
            docs = [d for d in yaml.safe_load_all(args.crd_file.read_text()) if d]
            if not docs or docs[0].get("metadata", {}).get("name") != name:
                raise Refused(f"{args.crd_file}: not a {name} CustomResourceDefinition")
            previous = docs[0]["spec"]
        elif REPLACED_SPEC in annotations:
            previous = json.loads(annotations[REPLACED_SPEC])
        elif "status" not in (crd["spec"]["versions"][0].get("subresources") or {}):
            previous = None  # already upstream's
        else:
            raise Refused(
                f"CRD {name} has no annotation {REPLACED_SPEC} (it was not upgraded from "
                "upstream's by our controller): pass --crd-file with upstream's kuryrport.yaml"
            )
        kps = (await client.list_all(KURYRPORTS)).items
        plans: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for kp in kps:
            key = f"{kp['metadata'].get('namespace')}/{kp['metadata']['name']}"
            if upstream_vifs(kp) or not (kp.get("status") or {}).get("vifs"):
                continue
            try:
                vifs = {
                    ifname: {"default": e.default, "vif": to_upstream_vif(e.vif)}
                    for ifname, e in parse_vifs(kp).items()
                }
            except InvalidVif as exc:
                raise Refused(f"KuryrPort {key}: {exc}") from exc
            plans.append((kp, vifs))
        lines = [f"{len(plans)} KuryrPort(s) to convert to upstream's format"]
        lines += await _rollback_services_and_policies(client)
        if args.dry_run:
            return [*lines, "dry run: nothing changed"]
        for kp, vifs in plans:
            body = copy.deepcopy(kp)
            body["status"]["vifs"] = vifs
            await client.replace(KURYRPORTS, body, subresource="status")
        if previous is not None:
            crd = await client.get(CRDS, name)
            crd["spec"] = previous
            crd["metadata"].get("annotations", {}).pop(REPLACED_SPEC, None)
            await client.replace(CRDS, crd)
            lines.append(f"CRD {name}: upstream's spec restored (no status subresource)")
        lines += await _rollback_namespace_networks(client)
        lines += await _restore_klb_crd(client)
        lines.append("done: start upstream's kuryr-controller and kuryr-daemon now")
        return lines
