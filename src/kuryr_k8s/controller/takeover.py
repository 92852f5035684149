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

**Nested pods** (``VIFVlanNested``: a VLAN subport of the trunk of the pod's VM), only
when this controller serves them (``pod_vif_driver`` ``nested-vlan`` or ``mixed``: worker
nodes subnets configured). What upstream's nested driver puts on a subport: created with
device owner ``compute:kuryr`` (Neutron rewrites it to ``trunk:subport`` when it is
attached), no ``device_id`` ever, a name only with ``port_debug``, its resource tags. The
KuryrPort is converted when its port is such a subport (either device owner, ``device_id``
empty or the pod's, no ``kuryr.*`` tag but ours for that pod and trunk), is attached to the
trunk of the pod's node (found as our nested code finds it, :class:`NodeResolver`: the
node's InternalIP in a worker-nodes subnet -> the port holding it -> its trunk), and its
segmentation id there is the VIF's VLAN id. The port then carries our in-use marks as our
own nested ports do (``device_id`` = pod uid, ``kuryr.cluster:``, ``kuryr.owner:``,
``kuryr.trunk:<trunk>``), so the subport provider's rebuild, the VLAN allocation (always
read from the trunk) and GC treat it as ours. Upstream's **free** subports (attached to the
trunk of a node of this cluster, no ``device_id``, named by no KuryrPort, no ``kuryr.*``
tag, its resource tags, our project and pod network) join that trunk's pool with pools on
(cluster, pool and trunk tags), or are detached and deleted with pools off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.controller.crds import REPLACED_SPEC
from kuryr_k8s.controller.nodes import NodeResolver, TrunkTarget
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import Conflict, NotFound
from kuryr_k8s.k8s.resources import CRDS, KURYRPORTS, NODES
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.model.kuryrport import convert_upstream_vifs, upstream_vifs, vifs_status
from kuryr_k8s.model.vif import InvalidVif, Vif
from kuryr_k8s.openstack.neutron import Neutron, NeutronSubnet
from kuryr_k8s.openstack.ports import DEVICE_OWNER, SUBPORT_OWNER, NeutronPort
from kuryr_k8s.openstack.provider import PortTagging, pool_key_of

LOG = logging.getLogger(__name__)

OUR_TAG_PREFIX = "kuryr."
"""Every tag our controllers (of any cluster id) put on ports starts with it."""
KURYRPORTS_CRD = f"{KURYRPORTS.plural}.{KURYRPORTS.group}"
ADOPTABLE_KINDS = {"VIFOpenVSwitch", "VIFVlanNested"}
SUBPORT_OWNERS = (SUBPORT_OWNER, DEVICE_OWNER)
"""``device_owner`` of upstream's nested subports: it creates them ``compute:kuryr``;
ML2/OVN and ML2/OVS rewrite that to ``trunk:subport`` on attach, other drivers may not."""


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
    worker_subnets: tuple[NeutronSubnet, ...] = ()
    """``[pod_vif_nested] worker_nodes_subnets`` when this controller serves nested pods
    (``nested-vlan``, ``mixed``); empty: upstream's nested KuryrPorts and subports are
    left alone."""


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


def upstream_subport_problem(
    port: NeutronPort, owner_uid: str, scope: Scope, trunk_id: str
) -> str | None:
    """Why ``port`` (named by the nested KuryrPort of pod ``owner_uid``, whose node's trunk
    is ``trunk_id``) is not upstream's subport of that pod, by its own fields (module doc);
    None when it can be adopted. Its place on the trunk is checked by the caller."""
    if port.device_owner not in SUBPORT_OWNERS:
        return f"device_owner is {port.device_owner!r}, not {SUBPORT_OWNER!r}"
    if port.device_id not in ("", owner_uid):
        return (
            f"device_id is {port.device_id!r}: upstream's nested driver never sets one, so "
            "the port is somebody else's"
        )
    foreign = [
        t
        for t in port.tags
        if t.startswith(OUR_TAG_PREFIX) and t not in scope.tagging.in_use(owner_uid, trunk_id)
    ]
    if foreign:
        return f"it carries {', '.join(sorted(foreign))} (another cluster's, pod's or trunk's)"
    return None


def free_upstream_subport(
    port: NeutronPort, referenced: set[str], scope: Scope, attached_to: Mapping[str, str]
) -> bool:
    """Upstream's free nested pool port, safe to take: as :func:`free_upstream_port`, with
    "bound to a host" replaced by "attached to the trunk of a node of this cluster"
    (``attached_to``: port id -> trunk id of those trunks), always required."""
    tags = set(port.tags)
    return (
        port.device_owner in SUBPORT_OWNERS
        and port.id in attached_to
        and port.id not in referenced
        and not port.device_id
        and not any(t.startswith(OUR_TAG_PREFIX) for t in tags)
        and set(scope.tagging.resource_tags) <= tags
        and port.project_id == scope.project_id
        and port.network_id == scope.network_id
        and bool(port.fixed_ips)
        and not port.trunk_parent_of
    )


class NodeTrunks:
    """The trunk of each node of this cluster as our nested code finds it
    (:class:`~kuryr_k8s.controller.nodes.NodeResolver`), and the trunks' VLAN ids, read
    once per takeover."""

    def __init__(self, neutron: Neutron, scope: Scope, nodes: Sequence[dict[str, Any]]) -> None:
        self._neutron = neutron
        self._nested = bool(scope.worker_subnets)
        by_name = {objects.name(n): n for n in nodes}
        self.names = sorted(by_name)
        self._resolver = NodeResolver(
            neutron, scope.worker_subnets, by_name.get, require_trunk=False
        )
        self._vlans: dict[str, dict[str, int]] = {}

    async def trunk_of(self, node: str) -> TrunkTarget | str:
        """The node's trunk, or why there is none (one line)."""
        if not self._nested:
            return (
                "this controller does not serve nested pods ([kubernetes] pod_vif_driver is "
                "neither nested-vlan nor mixed)"
            )
        if not node:
            return "the KuryrPort names no node (spec.podNodeName)"
        try:
            target = await self._resolver.resolve(node)
        except KuryrError as exc:
            return str(exc)
        if not isinstance(target, TrunkTarget):
            return (
                f"node {node} is not a VM on a trunk (its InternalIPs are in none of "
                "[pod_vif_nested] worker_nodes_subnets)"
            )
        return target

    async def vlans(self, trunk_id: str) -> dict[str, int]:
        """Port id -> segmentation id of the trunk's real subports."""
        if trunk_id not in self._vlans:
            subports = await self._neutron.get_subports(trunk_id)
            self._vlans[trunk_id] = {s.port_id: s.segmentation_id for s in subports}
        return self._vlans[trunk_id]


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
    trunks = NodeTrunks(neutron, scope, (await client.list_all(NODES)).items)
    for kp in kps:
        if upstream_vifs(kp):
            await _adopt_kuryrport(client, neutron, scope, kp, trunks, report)
    nodes: set[str] | None = None
    if not scope.tagging.resource_tags:
        nodes = set(trunks.names)
    candidates = await neutron.list_ports(
        tags=scope.tagging.resource_tags, device_owner=DEVICE_OWNER
    )
    attached_to = await _node_subports(neutron, scope, trunks)
    for port in candidates:
        if port.id in attached_to or not free_upstream_port(port, referenced, scope, nodes):
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
    await _adopt_free_subports(neutron, scope, referenced, attached_to, report)
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


async def _node_subports(neutron: Neutron, scope: Scope, trunks: NodeTrunks) -> dict[str, str]:
    """Port id -> trunk id of every subport of the trunks of this cluster's nodes (none
    when this controller serves no nested pods)."""
    if not scope.worker_subnets:
        return {}
    trunk_ids = set()
    for node in trunks.names:
        target = await trunks.trunk_of(node)
        if isinstance(target, TrunkTarget):
            trunk_ids.add(target.trunk_id)
    return {
        sub.port_id: trunk.id
        for trunk in await neutron.list_trunks(sorted(trunk_ids))
        for sub in trunk.sub_ports
    }


async def _adopt_free_subports(
    neutron: Neutron,
    scope: Scope,
    referenced: set[str],
    attached_to: Mapping[str, str],
    report: TakeoverReport,
) -> None:
    """Upstream's free nested pool ports (module doc): into the trunk's pool (our cluster,
    pool and trunk tags: the subport provider's rebuild takes them) or detached and
    deleted with pools off."""
    if not attached_to:
        return
    candidates = await neutron.list_ports(
        tags=scope.tagging.resource_tags, device_owner=list(SUBPORT_OWNERS)
    )
    for port in candidates:
        if not free_upstream_subport(port, referenced, scope, attached_to):
            continue
        trunk_id = attached_to[port.id]
        if scope.pools:
            key = (trunk_id, port.project_id, port.network_id, port.security_groups)
            tags = sorted(set(port.tags) | set(scope.tagging.free(key, trunk_id)))
            await neutron.set_tags(port, tags)
            report.pool_adopted.append(port.id)
        else:
            await neutron.detach(trunk_id, port.id)
            await neutron.delete_port(port.id)
            report.pool_deleted.append(port.id)


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
    trunks: NodeTrunks,
    report: TakeoverReport,
) -> None:
    """Check everything first (ports, conversion, trunk), then mark the ports and write
    the status: a refused KuryrPort leaves nothing changed."""
    key = objects.key(kp)
    spec = kp.get("spec") or {}
    uid = str(spec.get("podUid") or "")
    kinds = {str(e["vif"].get("versioned_object.name")) for e in upstream_vifs(kp).values()}
    if kinds - ADOPTABLE_KINDS:
        report.refused.append(
            f"KuryrPort {key}: {', '.join(sorted(kinds))}: only side-by-side "
            "(VIFOpenVSwitch) and nested VLAN (VIFVlanNested) pods are taken over; delete "
            "and recreate this pod"
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
        subnet_ids.update({ip.ip_address: ip.subnet_id for ip in port.fixed_ips})
        ports.append(port)
    try:
        entries = convert_upstream_vifs(kp, subnet_ids)
    except InvalidVif as exc:
        report.refused.append(f"KuryrPort {key}: not converted: {exc}")
        return
    vifs = {e.vif.port_id: e.vif for e in entries.values()}
    trunk_of: dict[str, str] = {}
    for port in ports:
        vif = vifs.get(port.id)
        if vif is not None and vif.vif_type == "vlan":
            node = str(spec.get("podNodeName") or "")
            problem, trunk_of[port.id] = await _subport_problem(port, vif, node, uid, scope, trunks)
        else:
            problem = upstream_port_problem(port, uid, scope)
        if problem is not None:
            report.refused.append(f"KuryrPort {key}: port {port.id} not adopted: {problem}")
            return
    for port in ports:
        if port.device_id != uid:  # our marks: device_id and the owner tag name the pod
            port = await neutron.update_port(port.id, device_id=uid)
        want = sorted(set(port.tags) | set(scope.tagging.in_use(uid, trunk_of.get(port.id, ""))))
        if sorted(port.tags) != want:
            await neutron.set_tags(port, want)
    active = all(e.vif.active for e in entries.values())
    await _write_status(client, kp, vifs_status(entries), active)
    report.converted.append(key)
    LOG.info("takeover: KuryrPort %s converted to our VIF format (pod %s)", key, uid)


async def _subport_problem(
    port: NeutronPort, vif: Vif, node: str, uid: str, scope: Scope, trunks: NodeTrunks
) -> tuple[str | None, str]:
    """(why the nested pod's ``port`` is not adopted or None, the trunk of its node)."""
    target = await trunks.trunk_of(node)
    if not isinstance(target, TrunkTarget):
        return f"nested pod ({vif.vif_type} VIF), but {target}", ""
    trunk = target.trunk_id
    problem = upstream_subport_problem(port, uid, scope, trunk)
    if problem is not None:
        return problem, ""
    try:
        vlans = await trunks.vlans(trunk)
    except KuryrError as exc:
        return f"cannot read the subports of trunk {trunk} (node {node}): {exc}", ""
    vlan = vlans.get(port.id)
    if vlan is None:
        return f"it is not a subport of trunk {trunk}, the trunk of node {node}", ""
    if vlan != vif.vlan_id:
        return (
            f"it is VLAN {vlan} on trunk {trunk} (node {node}), the VIF says VLAN {vif.vlan_id}"
        ), ""
    return None, trunk


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
