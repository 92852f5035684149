"""Taking over from upstream kuryr-kubernetes at start: its KuryrPorts and pool ports.

Runs once when the controller starts, after the CRDs are ours (``controller/crds.py``)
and before any informer, reconciler or port provider starts, so the providers' rebuild
(``pool-ownership.md`` §5) finds upstream's ports already marked as ours. Idempotent: a
KuryrPort already in our format and a port already tagged are left alone, so a restart,
or a second replica doing the same at the same time, changes nothing more.

**KuryrPorts** whose ``status.vifs`` hold os-vif primitives: the port each names is read
from Neutron and must be upstream's (device owner ``compute:kuryr``, no ``kuryr.*`` tag of
another cluster or pod; its ``device_id`` proves nothing, see
:func:`upstream_port_problem`); it gets the pod's uid as ``device_id`` and our in-use tags
(``kuryr.cluster:<id>``, ``kuryr.owner:<pod uid>``, resource tags), and the status is
rewritten in our format through ``/status`` (:func:`convert_upstream_vifs`: the host
device upstream made is kept in the VIF, so the node can unplug it at DEL). No port is
created or deleted and nothing on the node changes: the pod keeps its address and its
traffic. A KuryrPort that is refused is left exactly as upstream wrote it (the reconciler
leaves upstream-format KuryrPorts alone).

Only in a cluster upstream ran (:func:`came_from_upstream`: our KuryrPort CRD was upgraded
from upstream's, or an upstream-format KuryrPort exists); elsewhere this step does nothing,
so a port someone else made with device owner ``compute:kuryr`` is never taken.

**Upstream's free pool ports**: what upstream's own pool would recover at its start
(device owner ``compute:kuryr``, carrying its ``[neutron_defaults] resource_tags``, bound
to a host, with an address, named by no KuryrPort), restricted further for safety: no
tag of ours (``kuryr.*``), in our project and on our pod network, and -- when
``resource_tags`` is empty and tags cannot tell this cluster's from another's -- bound to
a node of this cluster. With pools on they get our cluster and pool tags and an empty
``device_id`` (the rebuild puts them into their pools); with pools off they are deleted
(we keep no free ports). Anything else is left alone and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.controller.crds import REPLACED_SPEC
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import Conflict, NotFound
from kuryr_k8s.k8s.resources import CRDS, KURYRPORTS, NODES
from kuryr_k8s.model.kuryrport import convert_upstream_vifs, upstream_vifs, vifs_status
from kuryr_k8s.model.vif import InvalidVif
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import DEVICE_OWNER, NeutronPort
from kuryr_k8s.openstack.provider import PortTagging, pool_key_of

LOG = logging.getLogger(__name__)

OUR_TAG_PREFIX = "kuryr."
KURYRPORTS_CRD = f"{KURYRPORTS.plural}.{KURYRPORTS.group}"
"""Every tag our controllers (of any cluster id) put on ports starts with it."""


@dataclass
class TakeoverReport:
    converted: list[str] = field(default_factory=list)
    """KuryrPorts (namespace/name) now in our format."""
    pool_adopted: list[str] = field(default_factory=list)
    pool_deleted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Why a KuryrPort or port was left alone (one line each)."""


@dataclass(frozen=True)
class Scope:
    """What this controller's ports are: upstream's must match it to be adopted."""

    tagging: PortTagging
    project_id: str
    network_id: str
    pools: bool
    """``vif_pool_driver = neutron``: free ports join our pools (else: deleted)."""


def upstream_port_problem(port: NeutronPort, owner_uid: str, scope: Scope) -> str | None:
    """Why ``port`` (named by the KuryrPort of pod ``owner_uid``) is not upstream's port of
    that pod, or None when it can be adopted."""
    if port.device_owner != DEVICE_OWNER:
        return f"device_owner is {port.device_owner!r}, not {DEVICE_OWNER!r}"
    # No device_id test: with port_debug off (its default) upstream bulk-creates pool
    # ports with device_id = the uid of the pod that triggered the refill, for every port
    # of the batch, and never changes it; like ours, it owns by the KuryrPort.
    foreign = [
        t
        for t in port.tags
        if t.startswith(OUR_TAG_PREFIX) and t not in scope.tagging.in_use(owner_uid)
    ]
    if foreign:
        return f"it carries {', '.join(sorted(foreign))} (another cluster's or pod's)"
    return None


def free_upstream_port(
    port: NeutronPort, referenced: set[str], scope: Scope, nodes: set[str] | None
) -> bool:
    """Upstream's free pool port of this cluster (module doc), safe to take."""
    tags = set(port.tags)
    return (
        port.device_owner == DEVICE_OWNER
        and port.id not in referenced
        and not any(t.startswith(OUR_TAG_PREFIX) for t in tags)
        and set(scope.tagging.resource_tags) <= tags
        and port.project_id == scope.project_id
        and port.network_id == scope.network_id
        and bool(port.binding_host_id)
        and bool(port.fixed_ips)
        and not port.trunk_parent_of
        and (nodes is None or port.binding_host_id in nodes)
    )


async def came_from_upstream(client: KubeClient) -> bool:
    """Whether upstream kuryr-kubernetes ran this cluster: its KuryrPort CRD was upgraded
    by us (the annotation :data:`~kuryr_k8s.controller.crds.REPLACED_SPEC` keeps its old
    spec) or a KuryrPort still holds its os-vif primitives."""
    try:
        crd = await client.get(CRDS, KURYRPORTS_CRD)
    except NotFound:
        return False
    if REPLACED_SPEC in (objects.meta(crd).get("annotations") or {}):
        return True
    return any(upstream_vifs(kp) for kp in (await client.list_all(KURYRPORTS)).items)


async def adopt_upstream(client: KubeClient, neutron: Neutron, scope: Scope) -> TakeoverReport:
    """Convert upstream's KuryrPorts and take its free pool ports (module doc). Nothing
    at all in a cluster upstream never ran (:func:`came_from_upstream`): a port of ours'
    device owner without our tags is then somebody else's (a test's, an operator's), never
    a pool port to take."""
    report = TakeoverReport()
    if not await came_from_upstream(client):
        return report
    kps = (await client.list_all(KURYRPORTS)).items
    referenced: set[str] = set()
    for kp in kps:
        referenced |= _port_ids(kp)
    for kp in kps:
        if upstream_vifs(kp):
            await _adopt_kuryrport(client, neutron, scope, kp, report)
    nodes: set[str] | None = None
    if not scope.tagging.resource_tags:
        nodes = {objects.name(n) for n in (await client.list_all(NODES)).items}
    candidates = await neutron.list_ports(
        tags=scope.tagging.resource_tags, device_owner=DEVICE_OWNER
    )
    for port in candidates:
        if not free_upstream_port(port, referenced, scope, nodes):
            continue
        if scope.pools:
            tags = sorted(set(port.tags) | set(scope.tagging.free(pool_key_of(port))))
            if port.device_id:  # upstream's meaningless one (see upstream_port_problem)
                port = await neutron.update_port(port.id, device_id="")
            await neutron.set_tags(port, tags)
            report.pool_adopted.append(port.id)
        else:
            await neutron.delete_port(port.id)
            report.pool_deleted.append(port.id)
    if report.converted or report.pool_adopted or report.pool_deleted or report.refused:
        LOG.warning(
            "took over from upstream kuryr-kubernetes: %d KuryrPort(s) converted, %d free "
            "pool port(s) adopted, %d deleted (pools off), %d left alone",
            len(report.converted),
            len(report.pool_adopted),
            len(report.pool_deleted),
            len(report.refused),
        )
    for line in report.refused:
        LOG.error("takeover: %s", line)
    return report


def _port_ids(kp: dict[str, Any]) -> set[str]:
    """Port ids named by ``status.vifs``, in either format."""
    out: set[str] = set()
    raw = (kp.get("status") or {}).get("vifs")
    if not isinstance(raw, dict):
        return out
    for entry in raw.values():
        vif = entry.get("vif") if isinstance(entry, dict) else None
        if not isinstance(vif, dict):
            continue
        data = vif.get("versioned_object.data")
        pid = data.get("id") if isinstance(data, dict) else vif.get("portId")
        if isinstance(pid, str) and pid:
            out.add(pid)
    return out


async def _adopt_kuryrport(
    client: KubeClient,
    neutron: Neutron,
    scope: Scope,
    kp: dict[str, Any],
    report: TakeoverReport,
) -> None:
    """Check everything first (ports, conversion), then tag the ports and write the
    status: a refused KuryrPort leaves nothing changed."""
    key = objects.key(kp)
    uid = str((kp.get("spec") or {}).get("podUid") or "")
    kinds = {str(e["vif"].get("versioned_object.name")) for e in upstream_vifs(kp).values()}
    if kinds - {"VIFOpenVSwitch"}:
        report.refused.append(
            f"KuryrPort {key}: {', '.join(sorted(kinds))}: only side-by-side pods "
            "(VIFOpenVSwitch) are taken over; delete and recreate this pod"
        )
        return
    subnet_ids: dict[str, str] = {}
    ports: list[NeutronPort] = []
    for port_id in sorted(_port_ids(kp)):
        port = await neutron.get_port(port_id)
        if port is None:
            report.refused.append(
                f"KuryrPort {key}: port {port_id} is gone from Neutron; left as it is (the "
                "pod has no network: delete the pod)"
            )
            return
        problem = upstream_port_problem(port, uid, scope)
        if problem is not None:
            report.refused.append(f"KuryrPort {key}: port {port_id} not adopted: {problem}")
            return
        subnet_ids.update({ip.ip_address: ip.subnet_id for ip in port.fixed_ips})
        ports.append(port)
    try:
        entries = convert_upstream_vifs(kp, subnet_ids)
    except InvalidVif as exc:
        report.refused.append(f"KuryrPort {key}: not converted: {exc}")
        return
    for port in ports:
        if port.device_id != uid:  # our marks: device_id and the owner tag name the pod
            port = await neutron.update_port(port.id, device_id=uid)
        want = sorted(set(port.tags) | set(scope.tagging.in_use(uid)))
        if sorted(port.tags) != want:
            await neutron.set_tags(port, want)
    active = all(e.vif.active for e in entries.values())
    await _write_status(client, kp, vifs_status(entries), active)
    report.converted.append(key)
    LOG.info("takeover: KuryrPort %s converted to our VIF format (pod %s)", key, uid)


async def _write_status(
    client: KubeClient, kp: dict[str, Any], vifs: dict[str, Any], active: bool
) -> None:
    """The converted status through ``/status``; re-read and retried on a lost race (an
    object converted meanwhile by another replica is left alone)."""
    for _ in range(5):
        body = dict(kp)
        status = dict(kp.get("status") or {})
        status["vifs"] = vifs
        status.setdefault("state", "Active" if active else "Allocated")
        body["status"] = status
        try:
            await client.replace(KURYRPORTS, body, subresource="status")
            return
        except Conflict:
            try:
                kp = await client.get(KURYRPORTS, objects.name(kp), objects.namespace(kp))
            except NotFound:
                return
            if not upstream_vifs(kp):
                return
        except NotFound:
            return
