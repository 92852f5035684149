"""Binding drivers: how a VIF becomes a working interface in a pod, chosen by ``vifType``.

A driver is picked from the VIF's data (:meth:`Drivers.for_vif`), never from a config
flag: ``ovs`` (side-by-side: veth into ``br-int``, ``ovs_binding.py``) and ``vlan``
(nested: a VLAN device on the VM's trunk NIC, ``vlan_binding.py``). A node runs the
drivers it can (``daemon.main.node_drivers``); a VIF it cannot bind gets
:class:`UnsupportedVif` (CNI error 100).

Drivers are synchronous (netlink and OVSDB calls); the daemon runs them in threads. A
driver that fails half-way through ``plug`` removes what it made before raising.

Ownership: every attachment a driver makes is stamped with the daemon's **cluster id** and
the **CNI network name** of the ADD (OVS ``external_ids`` and the veth's ``ifalias`` for
``ovs``, the device's ``ifalias`` for ``vlan``). ``plugged`` reports the stamps
(:attr:`Plugged.cluster` is ``None`` for an attachment made before stamps existed); the
daemon's reconcile, GC and re-plug touch only what carries its own (``daemon/service.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kuryr_k8s.cni.errors import UnsupportedVif
from kuryr_k8s.model.vif import Vif


@dataclass(frozen=True)
class Attachment:
    """One CNI attachment: a (container, interface) of a pod, as the runtime asked for it."""

    container_id: str
    ifname: str
    netns: str
    pod_namespace: str
    pod_name: str
    pod_uid: str = ""
    network: str = ""
    """The CNI network name (the network configuration's ``name``): stamped on the host
    side, it scopes GC (the CNI spec's GC is per network)."""

    @property
    def pod_key(self) -> str:
        return f"{self.pod_namespace}/{self.pod_name}"


@dataclass(frozen=True)
class Plugged:
    """What a driver finds on the host for one attachment (after a restart, too)."""

    container_id: str
    ifname: str
    host_ifname: str
    netns: str = ""
    """Empty when only a half-made veth was found."""
    pod_key: str = ""
    port_id: str = ""
    cluster: str | None = None
    """The cluster id stamped on it; ``None``: unstamped (made before stamps existed)."""
    network: str = ""
    """The CNI network name stamped on it ("" when unstamped)."""
    host_link: bool = True
    """False when only an OVS row is left: the veth (host and pod end) is gone."""

    def netns_exists(self) -> bool:
        return bool(self.netns) and Path(self.netns).exists()

    def attachment(self) -> Attachment:
        """The attachment as far as the host remembers it (no pod uid)."""
        namespace, _, name = self.pod_key.partition("/")
        return Attachment(
            self.container_id, self.ifname, self.netns, namespace, name, network=self.network
        )


def render_alias(prefix: str, words: list[str], cluster: str | None, network: str) -> str:
    """An ``ifalias``: ``prefix``, the attachment's ``words``, then the cluster and network
    stamps (absent for a legacy alias; an empty value is written ``-``)."""
    if cluster is not None:
        words = [*words, cluster or "-", network or "-"]
    return prefix + " ".join(words)


def parse_alias_words(
    prefix: str, alias: str, count: int
) -> tuple[list[str], str | None, str] | None:
    """``(words, cluster, network)`` of an alias :func:`render_alias` wrote with ``count``
    words (cluster ``None`` for a legacy one), else ``None``."""
    if not alias.startswith(prefix):
        return None
    parts = alias[len(prefix) :].split(" ")
    if len(parts) == count:
        return parts, None, ""
    if len(parts) == count + 2:
        cluster, network = ("" if w == "-" else w for w in parts[count:])
        return parts[:count], cluster, network
    return None


class BindingDriver(Protocol):
    """Plug/unplug/check one kind of VIF. Every method tolerates repeats."""

    vif_type: str

    def plug(self, att: Attachment, vif: Vif) -> None:
        """Make the interface and its host side; remove what was made if this raises."""

    def unplug(self, plugged: Plugged) -> None:
        """Remove everything of this attachment; fine if some or all is already gone."""

    def plugged(self) -> list[Plugged]:
        """Every attachment of this kind on the host."""

    def check(self, att: Attachment, vif: Vif) -> list[str]:
        """What differs from the VIF (empty when all is well)."""

    def lost(self, att: Attachment, vif: Vif) -> str | None:
        """Why this plugged attachment no longer carries traffic because part of it
        vanished from the host (a deleted veth, OVS row or VLAN device); ``None`` when
        everything is there. Plugging it again with the same VIF repairs it."""

    def ready_many(self, items: Sequence[tuple[Attachment, Vif]]) -> list[bool | None]:
        """Can traffic flow, for each attachment (in order)? ``None`` when this host
        cannot tell (use the VIF's ``active``). One call answers every ADD waiting on
        this node (the daemon polls them together), so it must cost one host look-up,
        not one per attachment."""

    def healthy(self) -> str | None:
        """``None`` when the driver can work, else why not (for STATUS and /readyz)."""


class Drivers:
    """The drivers of this node by ``vifType``."""

    def __init__(self, drivers: Iterable[BindingDriver]) -> None:
        self._by_type: Mapping[str, BindingDriver] = {d.vif_type: d for d in drivers}

    def for_vif(self, vif: Vif) -> BindingDriver:
        driver = self._by_type.get(vif.vif_type)
        if driver is None:
            raise UnsupportedVif(
                f"vifType {vif.vif_type!r} of port {vif.port_id}: this node binds only "
                + ", ".join(sorted(self._by_type))
                + (
                    " (vlan VIFs are for nested pods: this node is not a VM worker with "
                    "8021q; is the pod on the right node?)"
                    if vif.vif_type == "vlan"
                    else ""
                )
            )
        return driver

    def all(self) -> list[BindingDriver]:
        return list(self._by_type.values())

    def plugged(self) -> list[tuple[BindingDriver, Plugged]]:
        return [(d, p) for d in self.all() for p in d.plugged()]
