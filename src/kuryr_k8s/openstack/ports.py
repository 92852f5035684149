"""The contract between the KuryrPort reconciler and whatever hands out Neutron ports.

Two implementations really exist: a plain one (create on demand, delete on release) and a
pooled one (pre-created, pre-bound ports per pool key, recycled on release). The
reconciler depends only on :class:`PortProvider`.

Crash safety rests on tags: every port we own carries ``kuryr.cluster:<cluster id>``;
a port in use also carries ``kuryr.owner:<pod uid>``; a pooled, free port carries
``kuryr.pool:<pool key digest>`` instead. ``acquire`` first looks for a port already
tagged with the owner, so a controller killed between "create" and "write status" finds
its port again instead of making a second one.

Changes since the first version (signatures of the Protocol unchanged):

* :class:`NeutronPort` gained ``device_id``, ``project_id``, ``revision_number``,
  ``created_at``, ``updated_at`` (all defaulted) and the ``owner_uid`` property.
  ``device_id`` carries the owner pod uid too: a pool claim sets it under an ``If-Match``
  revision constraint (Neutron's compare-and-swap), then flips the tags; the owner lookup
  is by ``device_id`` within the cluster tag, so it also finds a port whose tags a crash
  left half-flipped. Ports handed out always carry the ``kuryr.owner:<uid>`` tag.
* Implementations: ``kuryr_k8s.openstack.provider.PlainPortProvider`` and
  ``kuryr_k8s.controller.pool.PooledPortProvider`` (``make_provider`` picks one); both
  also have ``start()``/``stop()``/``ready``; the pooled one raises ResourceNotReady
  until its rebuild from Neutron is done.
* Both implementations have ``find(owner_uid)`` (also
  :func:`kuryr_k8s.openstack.provider.find_owned`): "which port does this pod own?"
  without taking or creating one. Prefer it to ``acquire`` when releasing after a crash
  that kept the port id out of the status: ``acquire`` would claim a pool port (or create
  one) just to release it. Not in the Protocol, so existing fakes stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

CLUSTER_TAG_PREFIX = "kuryr.cluster:"
OWNER_TAG_PREFIX = "kuryr.owner:"
POOL_TAG_PREFIX = "kuryr.pool:"
TRUNK_TAG_PREFIX = "kuryr.trunk:"
"""On every port made for a trunk, attached or not: ``kuryr.trunk:<trunk id>`` (Neutron
rewrites ``device_owner`` on attach and detach, so that cannot say it)."""
DEVICE_OWNER = "compute:kuryr"
SUBPORT_OWNER = "trunk:subport"


@dataclass(frozen=True)
class PortRequest:
    """What the pod's port must look like. Also the pool key (minus the owner)."""

    node: str
    """``binding:host_id``: the OVN chassis hostname of the pod's node."""
    project_id: str
    network_id: str
    subnet_id: str
    security_groups: tuple[str, ...]
    """Sorted, so equal sets compare equal."""
    trunk_id: str = ""
    """Nested pods: the trunk of the pod's node (VM) the port is attached to as a VLAN
    subport; empty for bare-metal nodes."""

    @property
    def pool_key(self) -> tuple[str, str, str, tuple[str, ...]]:
        """(node or trunk id, project, network, SGs): nested pools are per trunk."""
        return (self.trunk_id or self.node, self.project_id, self.network_id, self.security_groups)


@dataclass(frozen=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True)
class NeutronPort:
    """The fields of a Neutron port that the controller uses."""

    id: str
    mac_address: str
    network_id: str
    fixed_ips: tuple[FixedIp, ...]
    status: str
    """``ACTIVE`` or ``DOWN`` (or ``BUILD``)."""
    binding_host_id: str
    security_groups: tuple[str, ...]
    tags: tuple[str, ...] = field(default=())
    device_owner: str = DEVICE_OWNER
    name: str = ""
    device_id: str = ""
    """The owner pod's uid while in use (mirrors the owner tag), empty when free. Claims
    set it with an ``If-Match`` revision constraint, so two claimers cannot both win."""
    project_id: str = ""
    revision_number: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    trunk_parent_of: str = ""
    """``trunk_details.trunk_id``: the trunk this port is the parent port of ('' if none)."""
    vlan_id: int | None = None
    """Nested ports: the segmentation id of this port on its trunk, read from the trunk's
    sub-port list by the subport provider (never set from the port's own JSON)."""

    @property
    def trunk_id(self) -> str:
        """The trunk this port was made for (its ``kuryr.trunk:`` tag), '' for bare metal."""
        for tag in self.tags:
            if tag.startswith(TRUNK_TAG_PREFIX):
                return tag[len(TRUNK_TAG_PREFIX) :]
        return ""

    @property
    def owner_uid(self) -> str:
        """The pod uid this port belongs to ('' when free): device_id, else the owner tag."""
        if self.device_id:
            return self.device_id
        for tag in self.tags:
            if tag.startswith(OWNER_TAG_PREFIX):
                return tag[len(OWNER_TAG_PREFIX) :]
        return ""


class PortProvider(Protocol):
    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        """The port for ``owner_uid``: the one already tagged with it, else a pooled or new
        one, re-tagged (``kuryr.owner:<uid>``), renamed and with the requested security
        groups. Idempotent. Raises TemporaryError/PermanentError from the error tree
        (quota, no free IP, subnet missing are PermanentError with Neutron's reason)."""
        ...

    async def release(self, port_id: str, owner_uid: str) -> None:
        """Give the port back: to its pool (reset name/tags/SGs) or delete it.
        Idempotent: a port that is gone, or no longer tagged with ``owner_uid``, is fine."""
        ...

    async def get(self, port_id: str) -> NeutronPort | None:
        """Current state of a port (for ACTIVE status), or None if it is gone."""
        ...
