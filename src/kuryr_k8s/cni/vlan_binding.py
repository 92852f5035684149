"""The ``vlan`` binding: nested pods on a VLAN device of the VM's trunk NIC.

Plug order, each step tolerating repeats::

    NIC up, MTU ≥ the pod network's? ─▶ device already there for this attachment? keep it
    ─▶ VLAN device (born in the pod netns, named CNI_IFNAME, VIF MAC/MTU, tagged) ─▶ on
    EEXIST: find the holder of the VLAN id; ours for another attachment → removed, retry;
    anybody else's → error ─▶ addresses, routes

The device's ``ifalias`` is ``kuryr-vlan <node> <container id> <ifname> <ns>/<pod>
<cluster> <network>`` (``-`` for an empty value; the four-word form without the last two
is a legacy device made before ownership stamps): it lives with the device in the pod's
namespace and is how a restarted daemon, DEL, GC and the stale-device search recognise an
attachment. A device stamped with another cluster id is never removed nor replaced.
Traffic can flow once Neutron reports the subport ACTIVE (its parent, the VM's port, is
bound), which the controller writes into the VIF; this driver has no local signal
(``ready`` answers ``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from kuryr_k8s.cni.binding import Attachment, Plugged, parse_alias_words, render_alias
from kuryr_k8s.cni.errors import HostError
from kuryr_k8s.cni.host import links, vlan
from kuryr_k8s.model.vif import Vif

LOG = logging.getLogger(__name__)
ALIAS_PREFIX = "kuryr-vlan "


@dataclass(frozen=True)
class VlanAlias:
    node: str
    container_id: str
    ifname: str
    pod_key: str
    cluster: str | None = None
    """``None``: a legacy alias without ownership stamps."""
    network: str = ""

    def render(self) -> str:
        words = [self.node, self.container_id, self.ifname, self.pod_key]
        return render_alias(ALIAS_PREFIX, words, self.cluster, self.network)

    @classmethod
    def parse(cls, alias: str) -> VlanAlias | None:
        parsed = parse_alias_words(ALIAS_PREFIX, alias, 4)
        if parsed is None:
            return None
        (node, container_id, ifname, pod_key), cluster, network = parsed
        return cls(node, container_id, ifname, pod_key, cluster, network)


def upstreams_device(device: vlan.VlanDevice | None, vif: Vif) -> bool:
    """``device`` (found as the pod's interface, on the node's VLAN NIC) is the one
    upstream kuryr-kubernetes made for the adopted ``vif``: its VLAN id is the VIF's and it
    carries no alias (any alias is a stamp: ours go by it, anybody else's is theirs)."""
    return (
        device is not None
        and vif.adopted
        and vif.vlan_id is not None
        and device.vlan_id == vif.vlan_id
        and not device.alias
    )


class VlanBinding:
    """Nested pods: one 802.1Q device per pod on ``link_iface`` (the trunk parent NIC)."""

    vif_type = "vlan"

    def __init__(self, node: str, *, link_iface: str | None = None, cluster_id: str = "") -> None:
        self.node = node
        """Devices are tagged with it; this driver touches only its node's."""
        self.link_iface = link_iface
        """``[binding] link_iface``; None: the NIC of the IPv4 default route."""
        self.cluster_id = cluster_id
        """Stamped on every device it makes; devices of another cluster are left alone."""

    def _alias(self, att: Attachment) -> str:
        return VlanAlias(
            self.node, att.container_id, att.ifname, att.pod_key, self.cluster_id, att.network
        ).render()

    def _ours(self, owner: VlanAlias | None) -> bool:
        """Made by a daemon of this node and this cluster (or before stamps existed)."""
        return (
            owner is not None
            and owner.node == self.node
            and owner.cluster in (None, self.cluster_id)
        )

    def _parent(self, vif: Vif) -> vlan.ParentLink:
        parent = vlan.parent_link(self.link_iface)
        if not parent.up:
            raise HostError(f"the VM's NIC {parent.name} is down: bring it up")
        if parent.mtu < vif.mtu:
            raise HostError(
                f"the pod network's MTU {vif.mtu} (port {vif.port_id}) is larger than the MTU "
                f"{parent.mtu} of the VM's NIC {parent.name}: raise the NIC's MTU to at least "
                f"{vif.mtu}, or lower [neutron_defaults] network_device_mtu"
            )
        return parent

    def plug(self, att: Attachment, vif: Vif) -> None:
        if vif.vlan_id is None:
            raise HostError(f"VIF of port {vif.port_id} has no vlanId")
        parent = self._parent(vif)
        alias = self._alias(att)
        existing = vlan.device_in(att.netns, att.ifname)
        if existing == (vif.vlan_id, alias):
            links.ensure_pod_l3(att.netns, att.ifname, vif.ips, vif.routes)  # repeated ADD
            return
        if existing is not None:
            if not self._ours(VlanAlias.parse(existing[1])):
                raise HostError(
                    f"{att.ifname} already exists in {att.netns} and this cluster's kuryr "
                    "did not make it"
                )
            vlan.delete_in_netns(att.netns, att.ifname)
        try:
            self._create(parent, att, vif, alias)
            links.ensure_pod_l3(att.netns, att.ifname, vif.ips, vif.routes)
        except BaseException:
            self.unplug(Plugged(att.container_id, att.ifname, "", att.netns))
            raise

    def _create(self, parent: vlan.ParentLink, att: Attachment, vif: Vif, alias: str) -> None:
        assert vif.vlan_id is not None
        args = (parent, att.netns, att.ifname, vif.vlan_id)
        try:
            vlan.create_vlan(*args, mac=vif.mac_address, mtu=vif.mtu, alias=alias)
            return
        except vlan.VlanInUse:
            holder = vlan.find_vlan(parent, vif.vlan_id)
            if holder is None:
                raise
        owner = VlanAlias.parse(holder.alias)
        where = holder.netns or "the node's own namespace"
        if owner is None and holder.netns and holder.name.startswith(vlan.TEMP_PREFIX):
            # Ours, left between its creation and its rename (a crash mid-plug).
            owner = VlanAlias(self.node, "?", holder.name, "?")
        if owner is None or not self._ours(owner):
            raise HostError(
                f"VLAN {vif.vlan_id} is already used on {parent.name} by {holder.name} in "
                f"{where}, which this cluster's kuryr did not create: remove that device "
                f"(the controller gave this VLAN id to port {vif.port_id})"
            )
        LOG.warning(
            "%s: VLAN %d on %s is held by a stale device of %s (container %s) in %s: removing",
            att.pod_key,
            vif.vlan_id,
            parent.name,
            owner.pod_key,
            owner.container_id[:12],
            where,
        )
        vlan.delete_in_netns(holder.netns, holder.name)
        vlan.create_vlan(*args, mac=vif.mac_address, mtu=vif.mtu, alias=alias)

    def unplug(self, plugged: Plugged) -> None:
        """Delete the attachment's device if it is there and names this attachment."""
        found = vlan.device_in(plugged.netns, plugged.ifname) if plugged.netns else None
        if found is None:
            return
        owner = VlanAlias.parse(found[1])
        if owner is None or not self._ours(owner):
            return
        if plugged.container_id and owner.container_id != plugged.container_id:
            return
        vlan.delete_in_netns(plugged.netns, plugged.ifname)

    def unplug_adopted(self, att: Attachment, vif: Vif) -> bool:
        """DEL of a nested pod upstream kuryr-kubernetes plugged (its VIF adopted at
        takeover, ``Vif.adopted``): upstream's device carries no stamp of ours (upstream
        makes it on the NIC, moves it into the pod and renames it ``CNI_IFNAME``, no
        ``ifalias``), so it is removed only when :func:`upstreams_device` says it is the
        VIF's: ``att.ifname`` in the pod's namespace, a VLAN device on this node's
        ``link_iface`` with the VIF's VLAN id, without an alias."""
        if not vif.adopted or vif.vlan_id is None or not att.netns:
            return False
        try:
            parent = vlan.parent_link(self.link_iface)
        except HostError:
            return False  # no NIC to prove it against: leave it (it goes with the netns)
        if not upstreams_device(vlan.vlan_device_named(parent, att.netns, att.ifname), vif):
            return False
        return vlan.delete_in_netns(att.netns, att.ifname)

    def plugged(self) -> list[Plugged]:
        if not vlan.vlan_supported():
            return []
        try:
            parent = vlan.parent_link(self.link_iface)
        except HostError:
            return []
        out = []
        for dev in vlan.vlan_devices(parent):
            owner = VlanAlias.parse(dev.alias)
            if owner is None or owner.node != self.node or not dev.netns:
                continue
            out.append(
                Plugged(
                    container_id=owner.container_id,
                    ifname=dev.name,
                    host_ifname=f"{parent.name}.{dev.vlan_id}",
                    netns=dev.netns,
                    pod_key=owner.pod_key,
                    cluster=owner.cluster,
                    network=owner.network,
                )
            )
        return out

    def lost(self, att: Attachment, vif: Vif) -> str | None:
        found = vlan.device_in(att.netns, att.ifname)
        if found is None:
            return f"its VLAN device {att.ifname} is gone from {att.netns}"
        return None

    def check(self, att: Attachment, vif: Vif) -> list[str]:
        problems = links.check_pod_link(att.netns, att.ifname, vif)
        found = vlan.device_in(att.netns, att.ifname)
        if found is not None and found[0] != vif.vlan_id:
            problems.append(f"{att.ifname} is VLAN {found[0]}, the VIF says {vif.vlan_id}")
        if found is not None and found[1] != self._alias(att):
            problems.append(f"{att.ifname} is not tagged as this attachment's device")
        return problems

    def ready_many(self, items: Sequence[tuple[Attachment, Vif]]) -> list[bool | None]:
        return [None] * len(items)  # the subport's ACTIVE (in the VIF) is the signal

    def healthy(self) -> str | None:
        if not vlan.vlan_supported():
            return "this kernel cannot create VLAN devices (8021q not loaded)"
        try:
            parent = vlan.parent_link(self.link_iface)
        except HostError as exc:
            return str(exc)
        return None if parent.up else f"the VM's NIC {parent.name} is down"
