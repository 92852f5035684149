"""Garbage collection of the Neutron ports of our cluster.

Each pass lists the ports tagged ``kuryr.cluster:<cluster id>`` (one call), *then* asks
who is alive, and deletes:

* **orphans**: ports whose owner (``device_id``, else the ``kuryr.owner:`` tag) is not a
  live pod uid;
* **stranded pool ports**: free ports bound to a node that no longer exists;
* **stranded subports**: free ports tagged ``kuryr.trunk:<T>`` when no live node resolves
  to trunk T any more (the VM is gone, or the trunk was deleted), or that are not attached
  to any trunk (a killed controller's bulk create that landed after it died);

but only when Neutron's ``updated_at`` of the port is older than the grace period. The
grace period is measured on Neutron's own timestamps, so it also covers the time the
controller was down, and it absorbs the lag of the caches behind ``live_owners`` and
``live_nodes``: a port is claimed only after its KuryrPort exists, and the live sets are
read after the port list, so a port listed with a live owner is always seen as live unless
that owner's KuryrPort is really gone. Deletes carry ``If-Match`` with the revision seen in
the list, so a port claimed or changed in between is left alone. Compare upstream: dead
ports were collected only when ``resource_tags`` was set, after 600 s DOWN.

A port tagged ``kuryr.trunk:`` is removed from its trunk before it is deleted (Neutron
refuses to delete a subport). Detaching bumps its revision, so the revision is checked
before the detach (read again) and the delete carries the revision read after it, with
the owner unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from kuryr_k8s.controller.settings import GcSettings
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.openstack.neutron import Neutron, RevisionConflict
from kuryr_k8s.openstack.ports import SUBPORT_OWNER, NeutronPort
from kuryr_k8s.openstack.provider import PortTagging

LOG = logging.getLogger(__name__)

LiveSet = Callable[[], Awaitable[Collection[str]]]


@dataclass
class GcResult:
    deleted_orphans: list[str] = field(default_factory=list)
    deleted_stranded: list[str] = field(default_factory=list)
    """Free pool ports of gone nodes, and free subports of trunks no live node has."""
    waiting: int = 0
    """Ports that qualify but are still inside the grace period."""


class GarbageCollector:
    """``live_owners``: uids of every live KuryrPort's pod. ``live_nodes``: names of the
    nodes that exist (None: never collect by node). Both must raise rather than answer
    from an unsynced cache. ``on_deleted`` is told each deleted port id and
    ``on_node_gone`` each node whose pool ports were collected (wire them to the pool's
    ``forget`` and ``forget_node``, so it neither hands out nor refills them)."""

    def __init__(
        self,
        neutron: Neutron,
        tagging: PortTagging,
        settings: GcSettings,
        live_owners: LiveSet,
        live_nodes: LiveSet | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_deleted: Callable[[str], None] | None = None,
        on_node_gone: Callable[[str], object] | None = None,
        live_trunks: LiveSet | None = None,
        on_trunk_gone: Callable[[str], object] | None = None,
        busy_trunks: Callable[[], Collection[str]] | None = None,
        known: Callable[[str], bool] | None = None,
    ) -> None:
        self.neutron = neutron
        self.tagging = tagging
        self.settings = settings
        self._live_owners = live_owners
        self._live_nodes = live_nodes
        self._now = now
        self._on_deleted = on_deleted
        self._on_node_gone = on_node_gone
        self._live_trunks = live_trunks
        """Trunk ids of the live nodes that are VMs (None: never collect by trunk)."""
        self._on_trunk_gone = on_trunk_gone
        self._busy_trunks = busy_trunks
        """Trunks with a create/attach in flight in this process: their unattached ports
        are being attached, not forgotten (read after the port list, like the live sets)."""
        self._known = known
        """Ports the port providers hold (in use in the ledger, or free in a pool): never
        collected, whatever Neutron's marks say (marks follow the ledger with a delay,
        ``pool-ownership.md`` §7). Asked after the port list, like the live sets."""
        self.deleted_total = 0

    async def run_once(self) -> GcResult:
        result = GcResult()
        ports = await self.neutron.list_ports(tags=[self.tagging.cluster_tag])
        owners = set(await self._live_owners())
        nodes = None if self._live_nodes is None else set(await self._live_nodes())
        if nodes is not None and not nodes:
            LOG.warning("no nodes known: not collecting pool ports by node this pass")
            nodes = None
        trunks = await self._trunks()
        busy = set(self._busy_trunks()) if self._busy_trunks is not None else set()
        cutoff = self._now() - timedelta(seconds=self.settings.grace_period)
        for port in ports:
            if self._known is not None and self._known(port.id):
                continue
            owner = port.owner_uid
            if owner:
                if owner in owners:
                    continue
                bucket = result.deleted_orphans
                why = f"owner {owner} is gone"
            elif port.trunk_id:
                attached = port.device_owner == SUBPORT_OWNER
                if attached and (trunks is None or port.trunk_id in trunks):
                    continue
                if not attached and port.trunk_id in busy:
                    continue
                bucket = result.deleted_stranded
                why = (
                    f"free subport of trunk {port.trunk_id}, which no live node has"
                    if attached
                    else f"free port made for trunk {port.trunk_id}, never attached"
                )
            elif nodes is not None and port.binding_host_id not in nodes:
                bucket = result.deleted_stranded
                why = f"free pool port of node {port.binding_host_id!r}, which is gone"
            else:
                continue
            if port.updated_at is None or port.updated_at > cutoff:
                result.waiting += 1
                continue
            trunk_gone = trunks is not None and port.trunk_id and port.trunk_id not in trunks
            if bucket is result.deleted_stranded and trunk_gone and self._on_trunk_gone:
                self._on_trunk_gone(port.trunk_id)  # the pool must not hand it out now
            try:
                # Only as listed: a port claimed or changed since is left alone.
                if port.trunk_id:
                    if not await self._delete_subport(port):
                        result.waiting += 1
                        continue
                    LOG.info("deleted subport %s: %s", port.id, why)
                elif await self.neutron.delete_port(port.id, if_revision=port.revision_number):
                    LOG.info("deleted port %s: %s", port.id, why)
            except RevisionConflict:
                result.waiting += 1
                continue
            bucket.append(port.id)
            self.deleted_total += 1
            if self._on_deleted is not None:
                self._on_deleted(port.id)
            if (
                bucket is result.deleted_stranded
                and not port.trunk_id
                and self._on_node_gone is not None
            ):
                self._on_node_gone(port.binding_host_id)
        return result

    async def _trunks(self) -> set[str] | None:
        if self._live_trunks is None:
            return None
        try:
            return set(await self._live_trunks())
        except KuryrError as exc:
            LOG.warning("live trunks unknown (%s): not collecting subports by trunk this pass", exc)
            return None

    async def _delete_subport(self, port: NeutronPort) -> bool:
        """Detach, then delete, only if the port is still as listed; False if it changed."""
        current = await self.neutron.get_port(port.id)
        if current is None:
            return True
        if current.revision_number != port.revision_number:
            return False
        await self.neutron.detach(port.trunk_id, port.id)
        after = await self.neutron.get_port(port.id)
        if after is None:
            return True
        if (after.device_id, after.owner_uid) != (port.device_id, port.owner_uid):
            return False
        await self.neutron.delete_port(port.id, if_revision=after.revision_number)
        return True

    async def run_forever(self) -> None:
        """A pass every ``interval`` seconds (the first one right away) until cancelled."""
        while True:
            try:
                await self.run_once()
            except KuryrError as exc:
                LOG.warning("garbage collection pass failed: %s", exc)
            await asyncio.sleep(self.settings.interval)
