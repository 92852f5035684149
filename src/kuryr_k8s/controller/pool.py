"""Pools of pre-created, pre-bound Neutron ports per (node, project, network, SG set).

The :class:`~kuryr_k8s.openstack.ports.PortProvider` used when
``[kubernetes] vif_pool_driver = neutron``; semantics follow upstream's ``[vif_pool]``
(``ports_pool_min/batch/max/update_frequency``). See ``docs/design/ports-and-pools.md``.

Invariants:

* **One owner per port.** In memory, a free port sits in exactly one pool's deque and is
  popped under that pool's lock, so two acquirers in this process never get the same
  one. In Neutron, the claim is ``PUT /ports/{id}`` with ``device_id = <pod uid>`` and
  ``If-Match: revision_number=<seen>``: if anything touched the port since we read it
  (another controller, a human), Neutron answers 412 and we re-read: a port that is no
  longer free is dropped from the pool, never shared.
* **Look up before create.** ``acquire`` first asks Neutron for the port whose
  ``device_id`` is the owner (within our cluster tag), so a retry after a crash gets the
  same port; acquires of one owner are serialized.
* **Neutron is the truth.** :meth:`PooledPortProvider.rebuild` (run by :meth:`start`
  before :attr:`ready`) forgets everything and lists our ports: a port with no owner is
  free (its tags are repaired if a crash left them half-flipped); a port whose owner is
  alive is in use; a port whose owner is gone is left to garbage collection.
* A released port is reset (name cleared, security groups back to those of the pool it
  came from, ``device_id`` cleared, tags flipped owner → pool) and recycled, or deleted
  when its pool already holds ``ports_pool_max`` free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kuryr_k8s.controller.poolset import (
    CLAIM_ATTEMPTS,
    MAX_BULK,
    LiveOwners,
    Pool,
    PoolSet,
    changed_sgs,
    reset_port,
)
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import KuryrError, ResourceNotReady
from kuryr_k8s.openstack.neutron import (
    Neutron,
    NeutronNotFound,
    RevisionConflict,
)
from kuryr_k8s.openstack.ports import NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import (
    OwnerLocks,
    PlainPortProvider,
    PoolKey,
    PortTagging,
    ensure_owned,
    find_owned,
    pool_key_of,
    spec_for,
)

LOG = logging.getLogger(__name__)

REVISION_REFRESH_DELAY = 2.0
"""Seconds after a bulk create before re-reading the new ports once: Neutron bumps a new
port's revision when its binding completes, and a claim with the stale revision would
cost a 412 and a re-read on the pod's critical path."""


class PooledPortProvider(PoolSet):
    """Pooled :class:`~kuryr_k8s.openstack.ports.PortProvider`; also see :func:`make_provider`.

    Lifecycle: ``await start()`` (rebuild, then the maintenance loop) before the first
    ``acquire``; until then ``acquire``/``release`` raise ResourceNotReady. ``stop()``
    cancels background work (in-flight Neutron calls finish in their threads).
    """

    def __init__(
        self,
        neutron: Neutron,
        tagging: PortTagging,
        settings: VifPoolSettings,
        live_owners: LiveOwners,
        *,
        revision_refresh_delay: float = REVISION_REFRESH_DELAY,
    ) -> None:
        super().__init__(settings)
        self.neutron = neutron
        self._refresh_delay = revision_refresh_delay
        self.tagging = tagging
        self._live_owners = live_owners
        self._owners = OwnerLocks()
        self._retags: dict[str, asyncio.Task[None]] = {}
        """Claimed port id -> its tag flip to ``kuryr.owner:<uid>``, still in flight."""
        self._ready = False

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        await self.rebuild()
        self._start_maintenance("port-pools")

    async def stop(self) -> None:
        self._ready = False
        retags, self._retags = list(self._retags.values()), {}
        if retags:  # short, and they make claimed ports look claimed: let them land
            await asyncio.wait(retags, timeout=10)
        await self._cancel_background(retags)

    async def rebuild(self) -> None:
        """Forget the in-memory pools and rebuild them from Neutron and the live owners."""
        self._ready = False
        ports = await self.neutron.list_ports(tags=[self.tagging.cluster_tag])
        live = set(await self._live_owners())
        self._pools.clear()
        self._origin.clear()
        free = in_use = orphans = 0
        for port in ports:
            owner = port.owner_uid
            if owner and (port.device_id or owner in live):
                # In use, or an orphan (owner gone) that garbage collection will delete;
                # an owner tag without device_id is a release a crash interrupted.
                if owner in live:
                    self._origin[port.id] = pool_key_of(port)
                    in_use += 1
                else:
                    orphans += 1
                continue
            if not port.binding_host_id or not port.fixed_ips:
                continue  # not a pool port (never bound); garbage collection's business
            key = pool_key_of(port)
            ready: NeutronPort | None = port
            if set(port.tags) != set(self.tagging.free(key)) or port.name:
                ready = await self._reset(port, key)
            if ready is None:
                continue
            self._pool_for(key, ready.fixed_ips[0].subnet_id).free.append(ready)
            free += 1
        LOG.info(
            "port pools rebuilt: %d free in %d pools, %d in use, %d orphans left to GC",
            free,
            len(self._pools),
            in_use,
            orphans,
        )
        self._ready = True

    # ---- the PortProvider contract ------------------------------------------------------

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            port = await find_owned(self.neutron, self.tagging, owner_uid)
            if port is not None:
                port = await ensure_owned(
                    self.neutron, self.tagging, port, request, owner_uid, name
                )
                self._origin.setdefault(port.id, request.pool_key)
                return port
            return await self._acquire_from_pool(request, owner_uid, name)

    async def release(self, port_id: str, owner_uid: str) -> None:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            await self._retag_done(port_id)
            port = await self.neutron.get_port(port_id)
            if port is None or port.owner_uid != owner_uid:
                self._origin.pop(port_id, None)
                return
            key = self._origin.pop(port_id, None) or pool_key_of(port)
            pool = self._pool_for(key, port.fixed_ips[0].subnet_id if port.fixed_ips else "")
            maximum = self.settings.ports_pool_max
            if (maximum and len(pool.free) >= maximum) or not port.fixed_ips:
                await self.neutron.delete_port(port_id)
                return
            reset = await self._reset(port, key)
            if reset is not None:
                pool.free.append(reset)

    async def get(self, port_id: str) -> NeutronPort | None:
        return await self.neutron.get_port(port_id)

    # ---- for metrics, GC and the pool-manager -------------------------------------------

    async def find(self, owner_uid: str) -> NeutronPort | None:
        """The owner's port, if it has one; never takes or creates a port (for releasing
        after a crash that kept the port id out of the KuryrPort status)."""
        return await find_owned(self.neutron, self.tagging, owner_uid)

    def forget_node(self, node: str) -> list[str]:
        """Drop the pools of a node that is gone; returns their free port ids."""
        return self._forget_pools(node)

    async def warm(self, request: PortRequest) -> int:
        """Fill the pool of ``request`` up to ``ports_pool_min`` now (e.g. for every node at
        start, so even a node's first pod finds a bound port); returns its free count."""
        self._check_ready()
        pool = self._pool_for(request.pool_key, request.subnet_id)
        await self._refill(pool)
        return len(pool.free)

    async def free_all(self) -> int:
        """Delete every free port of every pool (upstream's ``freePool``); returns how many.
        In-use ports are untouched."""
        deleted = 0
        for pool in list(self._pools.values()):
            async with pool.lock:
                while pool.free:
                    port = pool.free.popleft()
                    deleted += await self.neutron.delete_port(port.id)
        return deleted

    # ---- internals ----------------------------------------------------------------------

    def _check_ready(self) -> None:
        if not self._ready:
            raise ResourceNotReady("port pools are being rebuilt from Neutron", delay=1.0)

    async def _claim_candidate(
        self,
        pool: Pool,
        candidate: NeutronPort,
        made_for_owner: bool,
        request: PortRequest,
        owner_uid: str,
        name: str,
    ) -> NeutronPort | None:
        if made_for_owner:  # created with the owner's device_id already
            return candidate
        return await self._claim(candidate, request, owner_uid, name, pool)

    async def _discard(self, port: NeutronPort) -> None:
        await self.neutron.delete_port(port.id)

    async def _reset(self, port: NeutronPort, key: PoolKey) -> NeutronPort | None:
        """Clear owner and name, restore the pool's SGs, flip tags to the pool's. None if
        the port vanished or was claimed by someone else meanwhile."""
        return await reset_port(self.neutron, port, key[3], self.tagging.free(key))

    async def _create(
        self, pool: Pool, count: int, owner: tuple[str, str] | None = None
    ) -> list[NeutronPort]:
        """``count`` new free ports (one bulk call); with ``owner`` = (uid, name) the first
        one is made for that owner instead."""
        count = min(count, MAX_BULK)
        if count > 1:
            # A bulk that runs out of addresses fails as a whole *and* leaks the addresses
            # it had allocated until the subnet is deleted (seen on Neutron Zed), so never
            # ask for more than the subnet has left.
            free = await self.neutron.free_ips(pool.key[2], pool.subnet_id)
            if free is not None:
                count = max(1, min(count, free))
        specs = [spec_for(pool.request, self.tagging.free(pool.key))] * count
        if owner is not None:
            uid, name = owner
            specs[0] = spec_for(pool.request, self.tagging.in_use(uid), owner_uid=uid, name=name)
        created = await self.neutron.create_ports(specs)
        LOG.info("created %d ports for pool %s", len(created), pool.key)
        self._in_background(self._refresh_revisions(pool), "pool revisions")
        return created

    async def _refresh_revisions(self, pool: Pool) -> None:
        """Re-read the pool's free ports once their bindings settled (saves claims a 412)."""
        await asyncio.sleep(self._refresh_delay)
        try:
            ports = await self.neutron.list_ports(tags=list(self.tagging.free(pool.key)))
        except KuryrError as exc:
            LOG.debug("could not refresh pool %s: %s", pool.key, exc)
            return
        fresh = {p.id: p for p in ports if not p.owner_uid}
        for i, port in enumerate(pool.free):
            newer = fresh.get(port.id)
            if newer is not None and newer.revision_number > port.revision_number:
                pool.free[i] = newer

    async def _claim(
        self,
        port: NeutronPort,
        request: PortRequest,
        owner_uid: str,
        name: str,
        pool: Pool,
    ) -> NeutronPort | None:
        """Make ``port`` the owner's, or None if it is not free any more (then dropped)."""
        current = port
        for _ in range(CLAIM_ATTEMPTS):
            try:
                claimed = await self.neutron.update_port(
                    port.id,
                    if_revision=current.revision_number,
                    device_id=owner_uid,
                    name=name,
                    security_groups=changed_sgs(current.security_groups, request.security_groups),
                )
            except RevisionConflict:
                fresh = await self.neutron.get_port(port.id)
                if fresh is None or fresh.owner_uid:
                    LOG.warning("pool port %s was taken outside this pool; dropped", port.id)
                    return None
                current = fresh
                continue
            except NeutronNotFound:
                LOG.warning("pool port %s is gone; dropped", port.id)
                return None
            except KuryrError:
                pool.free.appendleft(port)
                raise
            return self._retag_soon(claimed, self.tagging.in_use(owner_uid))
        LOG.warning("pool port %s kept changing under us; put back", port.id)
        pool.free.append(current)
        return None

    def _retag_soon(self, claimed: NeutronPort, tags: tuple[str, ...]) -> NeutronPort:
        """Flip the claimed port's tags to its owner's off the pod's critical path.

        The claim itself (``device_id`` under If-Match) already makes the port the
        owner's: every look-up (``find_owned``, the rebuild, GC) goes by ``device_id``
        first, and a claim whose tags never flipped (crash, Neutron error) is repaired by
        ``ensure_owned`` or the rebuild. ``release`` waits for this before it resets."""
        task = asyncio.create_task(self._retag(claimed, tags), name=f"retag {claimed.id}")
        self._retags[claimed.id] = task
        task.add_done_callback(
            lambda t: (
                self._retags.pop(claimed.id, None) if self._retags.get(claimed.id) is t else None
            )
        )
        return dataclasses.replace(claimed, tags=tags)

    async def _retag(self, claimed: NeutronPort, tags: tuple[str, ...]) -> None:
        try:
            await self.neutron.set_tags(claimed, tags)
        except KuryrError as exc:
            LOG.warning("tags of claimed port %s not flipped (repaired later): %s", claimed.id, exc)

    async def _retag_done(self, port_id: str) -> None:
        task = self._retags.get(port_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def make_provider(
    neutron: Neutron,
    tagging: PortTagging,
    settings: VifPoolSettings,
    live_owners: LiveOwners,
) -> PooledPortProvider | PlainPortProvider:
    """The provider ``[kubernetes] vif_pool_driver`` asks for. Both have ``start()``,
    ``stop()`` and ``ready`` besides the PortProvider contract."""
    if settings.enabled:
        return PooledPortProvider(neutron, tagging, settings, live_owners)
    return PlainPortProvider(neutron, tagging)


def pool_ports(ports: Iterable[NeutronPort]) -> list[NeutronPort]:
    """The free pool ports among ``ports`` (no owner, bound to a node)."""
    return [p for p in ports if not p.owner_uid and p.binding_host_id]


class PoolSizes(Protocol):
    def sizes(self) -> dict[PoolKey, int]: ...


class PoolCollector(Collector):
    """``kuryr_port_pool_free{node,network}``: free ports per pool (SG sets summed); for
    subport pools the ``node`` label is the trunk id."""

    def __init__(self, provider: PoolSizes) -> None:
        self.provider = provider

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kuryr_port_pool_free", "Free pre-created ports per pool", labels=["node", "network"]
        )
        totals: dict[tuple[str, str], int] = {}
        for (node, _project, network, _sgs), size in self.provider.sizes().items():
            totals[(node, network)] = totals.get((node, network), 0) + size
        for labels, size in sorted(totals.items()):
            family.add_metric(list(labels), size)
        yield family
