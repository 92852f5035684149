"""Pools of pre-created, pre-bound Neutron ports per (node, project, network, SG set).

The :class:`~kuryr_k8s.openstack.ports.PortProvider` used when
``[kubernetes] vif_pool_driver = neutron``; semantics follow upstream's ``[vif_pool]``
(``ports_pool_min/batch/max/update_frequency``). See ``docs/design/ports-and-pools.md``
and, for ownership, ``docs/design/pool-ownership.md``.

Invariants:

* **One owner per port, decided in memory by the leader.** A free port sits in exactly
  one pool's deque and is popped under that pool's lock; the :class:`Ledger` records the
  owner. The reconciler's KuryrPort status write that names the port is the commit point
  (only the Lease holder writes it). No Neutron call on a warm acquire: Neutron's
  ``device_id``/``name``/tags follow through the :class:`MarkWriter`, off the critical
  path and never during a burst.
* **Security groups are never deferred**: a port is handed out from the pool of the
  requested SG set; a port borrowed from a sibling pool gets its SGs updated before it is
  returned; a released port goes back to the pool of the SGs it has.
* **Rebuild from the KuryrPorts and one port list.** :meth:`PooledPortProvider.rebuild`
  (run by :meth:`start` before :attr:`ready`): ports named by a KuryrPort are in use
  (ledger); a port marked with a live pod that names no port yet is that pod's (a claim
  of a predecessor); other bound, unowned ports are free; ports of dead owners are left
  to garbage collection.
* Recycling is free of Neutron calls: a released port goes to the back of its pool and
  is preferred only after a short cool-down; its marks are reset later. Above
  ``ports_pool_max`` free ports, a released port is deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kuryr_k8s.controller.poolset import (
    MAX_BULK,
    LiveOwners,
    Pool,
    PoolSet,
)
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import KuryrError, ResourceNotReady
from kuryr_k8s.openstack.addresses import AddressBudget
from kuryr_k8s.openstack.neutron import Neutron, NeutronNotFound
from kuryr_k8s.openstack.ownership import Ledger, MarkWriter, load_ledger, with_marks
from kuryr_k8s.openstack.ports import NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import (
    LiveRefs,
    OwnerLocks,
    PlainPortProvider,
    PoolKey,
    PortTagging,
    no_refs,
    pool_key_of,
    spec_for,
)

LOG = logging.getLogger(__name__)

COOLDOWN = 5.0
"""Seconds a released port is passed over while other free ports exist (the old pod's
attachment on the node is gone by then)."""


class PooledPortProvider(PoolSet):
    """Pooled :class:`~kuryr_k8s.openstack.ports.PortProvider`; also see :func:`make_provider`.

    Lifecycle: ``await start()`` (rebuild, then the maintenance loop and the mark writer)
    before the first ``acquire``; until then ``acquire``/``release`` raise
    ResourceNotReady. ``stop()`` flushes the marks (bounded) and cancels background work.
    """

    def __init__(
        self,
        neutron: Neutron,
        tagging: PortTagging,
        settings: VifPoolSettings,
        live_owners: LiveOwners,
        *,
        live_refs: LiveRefs = no_refs,
        mark_delay: float = 20.0,
        budget: AddressBudget | None = None,
    ) -> None:
        super().__init__(settings)
        self.neutron = neutron
        self.budget = budget if budget is not None else AddressBudget(neutron)
        """Sizes every bulk so it never runs the subnet dry (``openstack/addresses.py``)."""
        self.tagging = tagging
        self._live_owners = live_owners
        self._live_refs = live_refs
        self._owners = OwnerLocks()
        self.ledger = Ledger()
        self.marks = MarkWriter(neutron, self.busy, max_delay=mark_delay)
        self._ready = False

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        await self.rebuild()
        self.marks.start()
        self._start_maintenance("port-pools")

    async def stop(self) -> None:
        self._ready = False
        await self._cancel_background()
        await self.marks.stop()

    async def rebuild(self) -> None:
        """Forget the in-memory pools and ledger; rebuild them from one list of our ports,
        the KuryrPorts' references and the live owners (no per-port Neutron call)."""
        self._ready = False
        ports = await self.neutron.list_ports(tags=[self.tagging.cluster_tag])
        refs = await self._live_refs()
        live = set(await self._live_owners())
        self._pools.clear()
        self._origin.clear()
        self.ledger.clear()
        named, adopted, rest = load_ledger(
            [p for p in ports if not p.trunk_id], refs, live, self._own
        )
        free = orphans = 0
        for port in rest:
            if port.owner_uid and port.owner_uid not in live and port.device_id:
                orphans += 1  # owner gone: garbage collection's, after its grace period
                continue
            # Free, a release a crash interrupted, or a second port of a live owner (a
            # create or claim of a predecessor that landed late): into the pool.
            if not port.binding_host_id or not port.fixed_ips:
                continue  # not a pool port (never bound); garbage collection's business
            self._to_pool(port, cool=False)
            free += 1
        LOG.info(
            "port pools rebuilt: %d free in %d pools, %d in use (%d adopted), "
            "%d orphans left to GC",
            free,
            len(self._pools),
            named + adopted,
            adopted,
            orphans,
        )
        self._ready = True

    # ---- the PortProvider contract ------------------------------------------------------

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            port = self.ledger.port_of(owner_uid)
            if port is not None:
                return await self._with_sgs(port, request.security_groups)
            return await self._acquire_from_pool(request, owner_uid, name)

    async def release(self, port_id: str, owner_uid: str) -> None:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            owner = self.ledger.owner_of(port_id)
            if owner is None and self._in_pool(port_id) is None:
                await self._take_stray(port_id, owner_uid)
                return
            if owner != owner_uid:
                return  # not this owner's (or already released)
            port = self.ledger.unassign(port_id)
            assert port is not None
            key = pool_key_of(port)
            pool = self._pools.get(key)
            maximum = self.settings.ports_pool_max
            if (maximum and pool is not None and len(pool.free) >= maximum) or not port.fixed_ips:
                self.marks.forget(port_id)
                await self.neutron.delete_port(port_id)
                return
            self._to_pool(port, cool=True)

    async def _take_stray(self, port_id: str, owner_uid: str) -> None:
        """A port marked with ``owner_uid`` that neither the ledger nor a pool knows: a
        create or claim of a predecessor that landed after the rebuild (the duplicate
        sweep finds it). Into the pool, if it is still marked so."""
        seen = await self.neutron.get_port(port_id)
        if (
            seen is not None
            and seen.owner_uid == owner_uid
            and self.tagging.cluster_tag in seen.tags
            and not seen.trunk_id
            and seen.fixed_ips
            and seen.binding_host_id
        ):
            LOG.info("port %s of %s was not in the ledger: into its pool", port_id, owner_uid)
            self._to_pool(seen, cool=True)

    async def get(self, port_id: str) -> NeutronPort | None:
        return await self.neutron.get_port(port_id)

    # ---- the ledger, for the reconciler -------------------------------------------------

    async def find(self, owner_uid: str) -> NeutronPort | None:
        """The owner's port, if it has one (the ledger; no Neutron call)."""
        return self.ledger.port_of(owner_uid)

    def owns(self, port_id: str) -> bool:
        """Whether the port is one of ours in use (ledger) or free in a pool."""
        return self.ledger.owner_of(port_id) is not None or self._in_pool(port_id) is not None

    async def known(self, port_id: str, owner_uid: str) -> NeutronPort | None:
        """``port_id`` if it is ``owner_uid``'s, else None (named by a KuryrPort status).

        The ledger decides; a free pool port is adopted (a status write that landed after
        the rebuild); a port unknown here is read once from Neutron and adopted if it is
        free or marked with this owner."""
        owner = self.ledger.owner_of(port_id)
        if owner is not None:
            return self.ledger.port_of(owner) if owner == owner_uid else None
        if self.ledger.port_of(owner_uid) is not None:
            return None  # the owner already has another port
        pool = self._in_pool(port_id)
        if pool is not None:
            free = next(p for p in pool.free if p.id == port_id)
            pool.free.remove(free)
            pool.cooling.pop(port_id, None)
            return self._own(owner_uid, free)
        seen = await self.neutron.get_port(port_id)
        if (
            seen is None
            or seen.trunk_id
            or self.tagging.cluster_tag not in seen.tags  # not ours (another cluster, a user's)
            or seen.owner_uid not in ("", owner_uid)
        ):
            return None
        return self._own(owner_uid, seen)

    def lost(self, port_id: str) -> None:
        """Neutron says the port is gone: forget it everywhere."""
        self.ledger.unassign(port_id)
        self.forget(port_id)
        self.marks.forget(port_id)

    # ---- for metrics, GC and the pool-manager -------------------------------------------

    def forget_node(self, node: str) -> list[str]:
        """Drop the pools of a node that is gone; returns their free port ids."""
        return self._forget_pools(node)

    async def warm(self, request: PortRequest) -> int:
        """Fill the pool of ``request`` up to ``ports_pool_min`` now (e.g. for every node at
        start, so even a node's first pod finds a bound port); returns its free count."""
        self._check_ready()
        pool = self._pool_for(request.pool_key, request.subnet_id)
        await self._refill(pool, wait_quiet=False)
        return len(pool.free)

    async def drain_network(self, network_id: str) -> int:
        """Delete the free ports of every pool on ``network_id`` (a namespace network is
        being deleted: free pool ports would keep it busy); returns how many."""
        deleted = 0
        for pool in [p for p in self._pools.values() if p.key[2] == network_id]:
            async with pool.lock:
                while pool.free:
                    port = pool.free.popleft()
                    self.marks.forget(port.id)
                    deleted += await self.neutron.delete_port(port.id)
        return deleted

    async def free_all(self) -> int:
        """Delete every free port of every pool (upstream's ``freePool``); returns how many.
        In-use ports are untouched."""
        deleted = 0
        for pool in list(self._pools.values()):
            async with pool.lock:
                while pool.free:
                    port = pool.free.popleft()
                    self.marks.forget(port.id)
                    deleted += await self.neutron.delete_port(port.id)
        return deleted

    # ---- internals ----------------------------------------------------------------------

    def _check_ready(self) -> None:
        if not self._ready:
            raise ResourceNotReady("port pools are being rebuilt from Neutron", delay=1.0)

    def _own(self, owner_uid: str, port: NeutronPort, name: str | None = None) -> NeutronPort:
        """Record ``port`` as the owner's and have its marks follow."""
        owned = with_marks(
            port, owner_uid, port.name if name is None else name, self.tagging.in_use(owner_uid)
        )
        self.ledger.assign(owner_uid, owned)
        self.marks.want(port, owned)
        return owned

    def _to_pool(self, port: NeutronPort, *, cool: bool) -> None:
        key = pool_key_of(port)
        free = with_marks(port, "", "", self.tagging.free(key))
        self.marks.want(port, free)
        pool = self._pool_for(key, port.fixed_ips[0].subnet_id)
        if cool:
            pool.cooling[free.id] = time.monotonic() + COOLDOWN
        pool.free.append(free)

    def _in_pool(self, port_id: str) -> Pool | None:
        for pool in self._pools.values():
            if any(p.id == port_id for p in pool.free):
                return pool
        return None

    async def _with_sgs(self, port: NeutronPort, sgs: tuple[str, ...]) -> NeutronPort:
        """The owned port with exactly ``sgs`` (one Neutron update if they differ)."""
        if tuple(sorted(port.security_groups)) == tuple(sorted(sgs)):
            return port
        updated = await self.neutron.update_port(port.id, security_groups=sgs)
        port = dataclasses.replace(port, security_groups=updated.security_groups)
        self.ledger.update(port)
        return port

    async def _claim_candidate(
        self,
        pool: Pool,
        candidate: NeutronPort,
        made_for_owner: bool,
        request: PortRequest,
        owner_uid: str,
        name: str,
    ) -> NeutronPort | None:
        if made_for_owner:  # created with the owner's marks already
            self.ledger.assign(owner_uid, candidate)
            return candidate
        try:
            candidate = await self._with_sgs(candidate, request.security_groups)
        except NeutronNotFound:
            LOG.warning("pool port %s is gone; dropped", candidate.id)
            self.marks.forget(candidate.id)
            return None
        except KuryrError:
            self._to_pool(candidate, cool=False)  # still free: keep it for the next pod
            raise
        return self._own(owner_uid, candidate, name)

    async def _discard(self, port: NeutronPort) -> None:
        self.marks.forget(port.id)
        await self.neutron.delete_port(port.id)

    bulk_owners = True

    def _unreserve(self, pool: Pool, port: NeutronPort) -> None:
        self._to_pool(port, cool=False)

    async def _create(
        self, pool: Pool, count: int, owners: list[tuple[str, str]] | None = None
    ) -> list[NeutronPort]:
        """``count`` new ports (one bulk call); the first ``len(owners)`` are made for
        those (uid, name) owners (marked: ``device_id``, name, owner tags), the rest free.
        Fewer when the subnet has not clearly room for them all (a bulk that runs out of
        addresses loses them for good on Neutron Zed: the budget sizes it, down to a
        single create); the first owner's port always comes first."""
        async with self.budget.bulk(pool.key[2], pool.subnet_id, min(count, MAX_BULK)) as n:
            specs = [spec_for(pool.request, self.tagging.free(pool.key))] * n
            for i, (uid, name) in enumerate((owners or [])[:n]):
                specs[i] = spec_for(
                    pool.request, self.tagging.in_use(uid), owner_uid=uid, name=name
                )
            created = await self.neutron.create_ports(specs)
        LOG.info("created %d ports for pool %s", len(created), pool.key)
        return created


def make_provider(
    neutron: Neutron,
    tagging: PortTagging,
    settings: VifPoolSettings,
    live_owners: LiveOwners,
    live_refs: LiveRefs = no_refs,
) -> PooledPortProvider | PlainPortProvider:
    """The provider ``[kubernetes] vif_pool_driver`` asks for. Both have ``start()``,
    ``stop()`` and ``ready`` besides the PortProvider contract."""
    if settings.enabled:
        return PooledPortProvider(neutron, tagging, settings, live_owners, live_refs=live_refs)
    return PlainPortProvider(neutron, tagging, live_owners=live_owners, live_refs=live_refs)


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
