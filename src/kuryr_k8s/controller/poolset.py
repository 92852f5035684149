"""What the bare-metal pools (``pool.py``) and the subport pools (``subports.py``) share.

:class:`PoolSet` keeps free ports per pool key (``(node or trunk, project, network,
sorted SGs)``) and does what does not depend on the kind of port: taking one (own pool,
else a sibling pool of the same node/trunk with other SGs, else a new batch whose first
port is made for the waiting pod), refilling below ``ports_pool_min`` off the critical
path, trimming above ``ports_pool_max`` and the maintenance loop. A subclass makes a
batch (:meth:`PoolSet._create`) and gets rid of a port (:meth:`PoolSet._discard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import KuryrError, TemporaryError
from kuryr_k8s.openstack.neutron import (
    IpExhausted,
    Neutron,
    NeutronNotFound,
    QuotaExceeded,
    RevisionConflict,
)
from kuryr_k8s.openstack.ports import NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import PoolKey

LOG = logging.getLogger(__name__)

LiveOwners = Callable[[], Awaitable[Collection[str]]]
"""The uids of pods that own (or may own) a port: every live KuryrPort's ``spec.podUid``.
Must raise rather than answer from a cache that has not synced yet."""

DEMAND_WINDOW = 60.0
"""Seconds of acquires a pool remembers to size itself (``max(ports_pool_min, demand)``)."""
DEMAND_CAP = 200
"""Largest pool a demand-based refill aims for (``ports_pool_max`` caps it further)."""
QUIET = 0.5
"""A pool with no acquire for this long is quiet: refills and mark writes may run."""
QUIET_WAIT_MAX = 30.0
"""Longest a refill waits for quiet before it runs anyway."""

MAX_BULK = 20
"""Largest bulk create we send: bigger ones make Neutron's IPAM retry (upstream pain)."""
CLAIM_ATTEMPTS = 5
"""Re-reads after a lost ``If-Match`` before giving a port up (Neutron bumps a new
port's revision by itself once, when the binding completes)."""
MAX_CANDIDATES = 10
"""Ports one ``acquire`` tries to claim before giving up with a TemporaryError."""


@dataclass
class Pool:
    key: PoolKey
    subnet_id: str
    nested: bool = False
    """The key's first element is a trunk id (subports), else a node name."""
    free: deque[NeutronPort] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held to take a port and while a bulk is made for waiting pods."""
    refill_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a background refill: never ``lock``, so a refill that Neutron keeps waiting
    (seconds, or a quota error after long) never blocks pods from the free ports."""
    waiting: int = 0
    refill: asyncio.Task[None] | None = None
    cooling: dict[str, float] = field(default_factory=dict)
    """Released port id -> monotonic time until which it is passed over if others are free."""
    takes: deque[float] = field(default_factory=deque)
    """Monotonic times of recent acquires from this pool (demand)."""
    queue: dict[str, str] = field(default_factory=dict)
    """Owners waiting for a port of this pool (uid -> port name), in arrival order."""
    reserved: dict[str, NeutronPort] = field(default_factory=dict)
    """Ports a bulk made for a waiting owner, until that owner takes it."""

    def pop_free(self) -> NeutronPort:
        """The oldest free port that is not cooling down, else the oldest one."""
        now = time.monotonic()
        chosen = 0
        for i, port in enumerate(self.free):
            until = self.cooling.get(port.id)
            if until is None or until <= now:
                chosen = i
                break
        port = self.free[chosen]
        del self.free[chosen]
        self.cooling.pop(port.id, None)
        return port

    def demand(self, now: float) -> int:
        while self.takes and self.takes[0] < now - DEMAND_WINDOW:
            self.takes.popleft()
        return len(self.takes)

    @property
    def request(self) -> PortRequest:
        first, project, network, sgs = self.key
        if self.nested:
            return PortRequest("", project, network, self.subnet_id, sgs, trunk_id=first)
        return PortRequest(first, project, network, self.subnet_id, sgs)


class PoolSet:
    """Free-port bookkeeping; see the module docstring."""

    nested = False

    def __init__(self, settings: VifPoolSettings) -> None:
        self.settings = settings
        self._pools: dict[PoolKey, Pool] = {}
        self._origin: dict[str, PoolKey] = {}
        """In-use port id -> the pool it was taken from (its SGs are restored on release)."""
        self.refill_errors = 0
        """Background refills that failed (Neutron errors); details are in the log."""
        self._background: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._last_take = 0.0

    def busy(self) -> bool:
        """Pods are waiting for ports, or one was handed out less than QUIET s ago."""
        if time.monotonic() - self._last_take < QUIET:
            return True
        return any(pool.waiting for pool in self._pools.values())

    def target(self, pool: Pool) -> int:
        """How many free ports ``pool`` aims for: ``ports_pool_min`` or the recent demand."""
        want = max(self.settings.ports_pool_min, min(pool.demand(time.monotonic()), DEMAND_CAP))
        if self.settings.ports_pool_max:
            want = min(want, self.settings.ports_pool_max)
        return want if self.settings.ports_pool_min else 0

    # ---- background work ----------------------------------------------------------------

    def _start_maintenance(self, name: str) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._maintain_forever(), name=name)

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_background(self, extra: Iterable[asyncio.Task[None]] = ()) -> None:
        """Cancel refills, background tasks, ``extra`` and the maintenance loop (in-flight
        Neutron calls finish in their threads)."""
        tasks = [p.refill for p in self._pools.values() if p.refill is not None]
        tasks += self._background
        tasks += extra
        if self._loop_task is not None:
            tasks.append(self._loop_task)
            self._loop_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- what subclasses provide --------------------------------------------------------

    async def _create(
        self, pool: Pool, count: int, owners: list[tuple[str, str]] | None = None
    ) -> list[NeutronPort]:
        """``count`` new free ports for ``pool`` (one bulk call); with ``owners`` =
        [(uid, name), ...] the first ones are made for those owners (only the first one
        unless :attr:`bulk_owners`)."""
        raise NotImplementedError

    async def _discard(self, port: NeutronPort) -> None:
        """Get rid of a free port (trim)."""
        raise NotImplementedError

    async def _claim_candidate(
        self,
        pool: Pool,
        candidate: NeutronPort,
        made_for_owner: bool,
        request: PortRequest,
        owner_uid: str,
        name: str,
    ) -> NeutronPort | None:
        """Make ``candidate`` (from :meth:`_take`) the owner's, or None to try the next."""
        raise NotImplementedError

    # ---- shared -------------------------------------------------------------------------

    def sizes(self) -> dict[PoolKey, int]:
        """Free ports per pool key."""
        return {key: len(pool.free) for key, pool in self._pools.items()}

    def forget(self, port_id: str) -> None:
        """Drop a port from the free lists (garbage collection deleted it)."""
        self._origin.pop(port_id, None)
        for pool in self._pools.values():
            for port in list(pool.free):
                if port.id == port_id:
                    pool.free.remove(port)
                    pool.cooling.pop(port_id, None)

    def _forget_pools(self, first: str) -> list[str]:
        """Drop the pools of a node (or trunk) that is gone; returns their free port ids."""
        dropped: list[str] = []
        for key in [k for k in self._pools if k[0] == first]:
            pool = self._pools.pop(key)
            if pool.refill is not None:
                pool.refill.cancel()
            dropped += [p.id for p in pool.free]
        return dropped

    async def maintain_once(self) -> None:
        """Refill every pool below ``ports_pool_min``; trim every pool above the maximum."""
        for pool in list(self._pools.values()):
            if len(pool.free) < self.target(pool) and not pool.refill_lock.locked():
                await self._refill(pool)
            maximum = self.settings.ports_pool_max
            while maximum and len(pool.free) > maximum:
                await self._discard(pool.free.pop())

    async def _acquire_from_pool(
        self, request: PortRequest, owner_uid: str, name: str
    ) -> NeutronPort:
        """Take a port from the request's pool (or a new batch) and claim it."""
        pool = self._pool_for(request.pool_key, request.subnet_id)
        for _ in range(MAX_CANDIDATES):
            candidate, made_for_owner = await self._take(pool, owner_uid, name)
            claimed = await self._claim_candidate(
                pool, candidate, made_for_owner, request, owner_uid, name
            )
            if claimed is not None:
                break
        else:
            raise TemporaryError(
                f"no pool port of {request.trunk_id or request.node} could be claimed after "
                f"{MAX_CANDIDATES} tries (ports keep changing in Neutron)",
                delay=1.0,
            )
        self._origin[claimed.id] = request.pool_key
        self._schedule_refill(pool)
        return claimed

    def _pool_for(self, key: PoolKey, subnet_id: str) -> Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(key, subnet_id, self.nested)
        elif not pool.subnet_id:
            pool.subnet_id = subnet_id
        return pool

    async def _take(self, pool: Pool, owner_uid: str, name: str) -> tuple[NeutronPort, bool]:
        """A port for ``pool``'s next pod and whether it was made for that pod: one a bulk
        made for it while it waited, a free one of its own, else one of a sibling pool
        (same node/trunk, project and network, other SGs: the claim sets the SGs), else a
        fresh bulk made for this pod and, when :attr:`bulk_owners`, for the pods waiting
        behind it too (each port created with its owner's marks: no mark write later);
        the rest go to the pool."""
        pool.waiting += 1
        pool.queue[owner_uid] = name
        now = self._last_take = time.monotonic()
        pool.takes.append(now)
        taken = False
        try:
            async with pool.lock:
                reserved = pool.reserved.pop(owner_uid, None)
                if reserved is not None:
                    taken = True
                    return reserved, True
                if pool.free:
                    taken = True
                    return pool.pop_free(), False
                sibling = self._sibling_with_free(pool.key)
                if sibling is not None:
                    taken = True
                    return sibling.pop_free(), False
                owners = [(owner_uid, name)]
                if self.bulk_owners:
                    owners += [
                        (uid, n)
                        for uid, n in pool.queue.items()
                        if uid != owner_uid and uid not in pool.reserved
                    ][: MAX_BULK - 1]
                count = max(self.settings.ports_pool_batch, min(pool.waiting, MAX_BULK))
                count = max(count, len(owners))
                try:
                    created = await self._create(pool, count, owners=owners)
                except (IpExhausted, QuotaExceeded) as exc:
                    if count == 1:
                        raise
                    # A bulk is all-or-nothing: room for this pod may remain.
                    LOG.warning(
                        "bulk of %d ports refused (%s); creating this pod's alone", count, exc
                    )
                    created = await self._create(pool, 1, owners=owners[:1])
                mine, rest = created[0], created[1:]
                made = min(len(owners), len(created)) if self.bulk_owners else 1
                for (uid, _name), port in zip(owners[1:made], rest, strict=False):
                    if uid in pool.queue:
                        pool.reserved[uid] = port
                    else:  # stopped waiting while the bulk ran
                        self._unreserve(pool, port)
                pool.free.extend(rest[made - 1 :])
                taken = True
                return mine, True
        finally:
            pool.waiting -= 1
            pool.queue.pop(owner_uid, None)
            if not taken:  # cancelled or failed: a port made for it must not be stranded
                stranded = pool.reserved.pop(owner_uid, None)
                if stranded is not None:
                    self._unreserve(pool, stranded)

    bulk_owners = False
    """Whether :meth:`_create` makes a port for every owner it is given (else only the
    first: subports cannot be attached with a ``device_id``)."""

    def _unreserve(self, pool: Pool, port: NeutronPort) -> None:
        """A port made for an owner that stopped waiting goes to the pool."""
        pool.free.append(port)

    def _sibling_with_free(self, key: PoolKey) -> Pool | None:
        for other in self._pools.values():
            if other.key[:3] == key[:3] and other.key != key and other.free:
                return other
        return None

    def _schedule_refill(self, pool: Pool) -> None:
        if len(pool.free) >= self.target(pool):
            return
        if pool.refill is not None and not pool.refill.done():
            return
        pool.refill = asyncio.create_task(self._refill(pool), name=f"refill {pool.key[0]}")

    async def _quiet(self) -> None:
        """Wait (bounded) until no pod waits for a port: a refill must not take Neutron's
        workers from a burst (the burst's own bulk creates are on its critical path)."""
        for _ in range(int(QUIET_WAIT_MAX / (QUIET / 2))):
            if not self.busy():
                return
            await asyncio.sleep(QUIET / 2)

    async def _refill(self, pool: Pool, *, wait_quiet: bool = True) -> None:
        """Bulk creates (each at most MAX_BULK) until ``pool`` holds its :meth:`target`."""
        try:
            while True:
                if wait_quiet:
                    await self._quiet()
                async with pool.refill_lock:
                    missing = self.target(pool) - len(pool.free)
                    if missing <= 0:
                        return
                    count = max(missing, self.settings.ports_pool_batch)
                    if self.settings.ports_pool_max:
                        count = min(count, self.settings.ports_pool_max - len(pool.free))
                    if count <= 0:
                        return
                    pool.free.extend(await self._create(pool, min(count, MAX_BULK)))
        except KuryrError as exc:
            self.refill_errors += 1
            LOG.warning("could not refill pool %s: %s", pool.key, exc)

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ports_pool_update_frequency)
            try:
                await self.maintain_once()
            except KuryrError as exc:
                LOG.warning("pool maintenance failed: %s", exc)


def changed_sgs(have: tuple[str, ...], want: tuple[str, ...]) -> tuple[str, ...] | None:
    """``want`` if it differs from ``have``, else None: an unchanged SG list in an update
    still costs Neutron/OVN security-group work."""
    return None if tuple(sorted(have)) == tuple(sorted(want)) else want


async def reset_port(
    neutron: Neutron, port: NeutronPort, sgs: tuple[str, ...], tags: tuple[str, ...]
) -> NeutronPort | None:
    """Clear owner and name, restore ``sgs`` (with ``If-Match``, re-read on 412), then set
    ``tags``. None if the port vanished or someone else claimed it meanwhile."""
    current = port
    for _ in range(CLAIM_ATTEMPTS):
        if current.owner_uid and current.owner_uid != port.owner_uid:
            return None
        try:
            current = await neutron.update_port(
                port.id,
                if_revision=current.revision_number,
                device_id="",
                name="",
                security_groups=changed_sgs(current.security_groups, sgs),
            )
        except RevisionConflict:
            fresh = await neutron.get_port(port.id)
            if fresh is None:
                return None
            current = fresh
            continue
        except NeutronNotFound:
            return None
        return await neutron.set_tags(current, tags)
    return None
