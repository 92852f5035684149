"""The ``ovs`` binding: a veth whose pod end lives in the pod and whose host end is on br-int.

Plug order, each step tolerating repeats::

    bridge exists? ─▶ drop a stale attachment of the same port ─▶ veth (pod end made in the
    pod netns) ─▶ MAC/MTU/IPs/routes, TX checksum off on netdev ─▶ OVS Port/Interface with
    iface-id, attached-mac, iface-status=active, vm-uuid, kuryr-* ids

The row and the veth's ifalias carry the daemon's cluster id and the ADD's CNI network
name (``kuryr-cluster``, ``kuryr-network``). An attachment whose veth vanished (its row
is left) is :meth:`OvsBinding.lost`; plugging it again drops the orphan row first, so
ovs-vswitchd and ovn-controller see a fresh interface.

Traffic can flow once ovn-controller has installed the port's flows and marked the
Interface ``external_ids:ovn-installed=true``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kuryr_k8s.cni.binding import Attachment, Plugged
from kuryr_k8s.cni.errors import BridgeMissing
from kuryr_k8s.cni.host import links
from kuryr_k8s.cni.host.ovs import OWNER, Ovsdb, OvsInterface
from kuryr_k8s.model.vif import Vif

LOG = logging.getLogger(__name__)


class OvsBinding:
    """Side-by-side pods on the integration bridge."""

    vif_type = "ovs"

    def __init__(
        self, ovsdb: Ovsdb, node: str, *, default_bridge: str = "br-int", cluster_id: str = ""
    ) -> None:
        self.ovsdb = ovsdb
        self.node = node
        """Rows and links are tagged with it; this driver touches only its node's."""
        self.default_bridge = default_bridge
        self.cluster_id = cluster_id
        """Stamped on every row and veth it makes (``kuryr-cluster``)."""

    def _alias(self, att: Attachment) -> str:
        return links.alias_for(
            self.node, att.container_id, att.ifname, self.cluster_id, att.network
        )

    def _bridge(self, vif: Vif) -> tuple[str, str]:
        bridge = vif.bridge or self.default_bridge
        datapath = self.ovsdb.datapath_type(bridge)
        if datapath is None:
            raise BridgeMissing(f"bridge {bridge} does not exist in the OVS database")
        return bridge, datapath

    def plug(self, att: Attachment, vif: Vif) -> None:
        bridge, datapath = self._bridge(vif)
        self._drop_stale(att, vif)
        try:
            links.ensure_veth(
                vif.host_ifname,
                att.ifname,
                att.netns,
                mac=vif.mac_address,
                mtu=vif.mtu,
                alias=self._alias(att),
            )
            links.ensure_pod_l3(att.netns, att.ifname, vif.ips, vif.routes)
            if datapath == "netdev":
                links.ensure_tx_checksum_off(att.netns, att.ifname)
            self.ovsdb.ensure_port(bridge, vif.host_ifname, self.external_ids(att, vif))
        except BaseException:
            self.unplug(Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns))
            raise

    def _drop_stale(self, att: Attachment, vif: Vif) -> None:
        """The port is plugged for another container (an old sandbox of the pod), or only
        its row is left (the veth vanished): unplug it."""
        iface = self.ovsdb.interface(vif.host_ifname)
        alias = links.link_alias(vif.host_ifname)
        other_row = iface is not None and (
            iface.external_ids.get("kuryr-container-id"),
            iface.external_ids.get("kuryr-ifname"),
        ) != (att.container_id, att.ifname)
        theirs = alias is not None and _alias_key(alias) != _alias_key(self._alias(att))
        if other_row or theirs:
            LOG.info("%s: replacing a stale attachment of port %s", att.pod_key, vif.port_id)
            self.unplug(Plugged("", "", vif.host_ifname))
        elif iface is not None and alias is None:
            LOG.info("%s: port %s has an OVS row but no veth: re-adding", att.pod_key, vif.port_id)
            self.ovsdb.delete_port(vif.host_ifname)

    def unplug(self, plugged: Plugged) -> None:
        self.ovsdb.delete_port(plugged.host_ifname)
        links.delete_link(plugged.host_ifname)

    def unplug_adopted(self, att: Attachment, vif: Vif) -> bool:
        """DEL of a pod upstream kuryr-kubernetes plugged (its VIF adopted at takeover,
        ``Vif.adopted``): upstream's veth and OVS row carry no stamp of ours, so they are
        named by the VIF (``hostIfname``) and removed only when the row is this VIF's port
        (``iface-id``) and neither row nor veth carries a stamp (ours go by stamp)."""
        iface = self.ovsdb.interface(vif.host_ifname)
        ids = iface.external_ids if iface is not None else {}
        if iface is not None and (ids.get("iface-id") != vif.port_id or "kuryr-owner" in ids):
            return False
        if links.link_alias(vif.host_ifname):  # "" (no alias) or None (no link) are fine
            return False
        self.unplug(Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns))
        return True

    def plugged(self) -> list[Plugged]:
        aliases = {
            name: parsed
            for name, alias in links.host_aliases().items()
            if (parsed := links.parse_alias(alias)) is not None and parsed.node == self.node
        }
        found = {
            i.name: _record(i, i.name in aliases) for i in self.ovsdb.owned_interfaces(self.node)
        }
        for name, ids in aliases.items():
            if name not in found:  # a veth without its row: a plug that stopped half-way
                found[name] = Plugged(
                    ids.container_id, ids.ifname, name, cluster=ids.cluster, network=ids.network
                )
        return list(found.values())

    def lost(self, att: Attachment, vif: Vif) -> str | None:
        if links.link_alias(vif.host_ifname) is None:
            return f"its veth {vif.host_ifname} is gone from the host"
        if not self.ovsdb.has_interface(vif.host_ifname):
            return f"its OVS port {vif.host_ifname} is gone from the integration bridge"
        if not links.pod_link_present(att.netns, att.ifname):
            return f"{att.ifname} is gone from {att.netns}"
        return None

    def check(self, att: Attachment, vif: Vif) -> list[str]:
        problems = links.check_pod_link(att.netns, att.ifname, vif)
        if problems and problems[0].endswith(f"is missing in {att.netns}"):
            return problems
        iface = self.ovsdb.interface(vif.host_ifname)
        if iface is None:
            problems.append(f"OVS has no interface {vif.host_ifname}")
        else:
            want = self.external_ids(att, vif)
            wrong = sorted(k for k, v in want.items() if iface.external_ids.get(k) != v)
            if wrong:
                problems.append(f"OVS interface {vif.host_ifname}: wrong {', '.join(wrong)}")
        return problems

    def ready_many(self, items: Sequence[tuple[Attachment, Vif]]) -> list[bool | None]:
        """``ovn-installed`` on each one's OVS interface: one read of every interface's
        ``external_ids`` for all of them (see :meth:`Ovsdb.external_ids_of`)."""
        ids = self.ovsdb.external_ids_of([vif.host_ifname for _, vif in items])
        installed = [
            ids.get(vif.host_ifname, {}).get("ovn-installed") == "true" for _, vif in items
        ]
        if all(installed):
            return list(installed)
        chassis = self.ovsdb.is_ovn_chassis()
        return [True if done else (False if chassis else None) for done in installed]

    def external_ids(self, att: Attachment, vif: Vif) -> dict[str, str]:
        return {
            "iface-id": vif.port_id,
            "attached-mac": vif.mac_address,
            "iface-status": "active",
            "vm-uuid": att.pod_uid or att.pod_key,
            "kuryr-owner": OWNER,
            "kuryr-node": self.node,
            "kuryr-container-id": att.container_id,
            "kuryr-ifname": att.ifname,
            "kuryr-netns": att.netns,
            "kuryr-pod": att.pod_key,
            "kuryr-cluster": self.cluster_id,
            "kuryr-network": att.network,
        }

    def healthy(self) -> str | None:
        try:
            if self.ovsdb.datapath_type(self.default_bridge) is None:
                return f"bridge {self.default_bridge} does not exist"
        except Exception as exc:
            return f"OVSDB: {exc}"
        return None


def _alias_key(alias: str) -> tuple[str, str, str, str | None] | None:
    """The attachment an alias names (its network aside: a legacy alias of the same
    attachment is the same attachment)."""
    parsed = links.parse_alias(alias)
    if parsed is None:
        return None
    return parsed.node, parsed.container_id, parsed.ifname, parsed.cluster


def _record(iface: OvsInterface, host_link: bool) -> Plugged:
    ids = iface.external_ids
    return Plugged(
        container_id=ids.get("kuryr-container-id", ""),
        ifname=ids.get("kuryr-ifname", ""),
        host_ifname=iface.name,
        netns=ids.get("kuryr-netns", ""),
        pod_key=ids.get("kuryr-pod", ""),
        port_id=ids.get("iface-id", ""),
        cluster=ids.get("kuryr-cluster"),
        network=ids.get("kuryr-network", ""),
        host_link=host_link,
    )
