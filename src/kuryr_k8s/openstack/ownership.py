"""Who owns which port: the in-memory ledger, and Neutron's marks that follow it.

``docs/design/pool-ownership.md``: a port belongs to a pod iff a live KuryrPort's status
names it. The leader mirrors that in a :class:`Ledger` (loaded from the KuryrPort cache
when it starts leading, updated by every acquire and release), so a warm acquire is a
pop from an in-memory pool, with no Neutron call. Neutron's ``device_id``, ``name`` and
``kuryr.owner:``/``kuryr.pool:`` tags are *marks* for humans, garbage collection and
older controllers; a :class:`MarkWriter` converges them in the background, coalescing
repeated changes and yielding to bursts (it writes only while no pod waits for a port,
or once a mark has waited ``max_delay`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.openstack.neutron import Neutron, NeutronNotFound
from kuryr_k8s.openstack.ports import NeutronPort

LOG = logging.getLogger(__name__)


class Ledger:
    """Port id ↔ owner uid for the ports this controller handed out (or found handed out
    by the KuryrPorts at its start). One port per owner, one owner per port."""

    def __init__(self) -> None:
        self._by_owner: dict[str, NeutronPort] = {}
        self._owner_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_owner)

    def clear(self) -> None:
        self._by_owner.clear()
        self._owner_of.clear()

    def port_of(self, owner_uid: str) -> NeutronPort | None:
        return self._by_owner.get(owner_uid)

    def owner_of(self, port_id: str) -> str | None:
        return self._owner_of.get(port_id)

    def assign(self, owner_uid: str, port: NeutronPort) -> None:
        """Record ``port`` as ``owner_uid``'s; raises ValueError if either is taken by
        another (callers decide which claim wins before assigning)."""
        other = self._owner_of.get(port.id)
        if other is not None and other != owner_uid:
            raise ValueError(f"port {port.id} already belongs to {other}")
        mine = self._by_owner.get(owner_uid)
        if mine is not None and mine.id != port.id:
            raise ValueError(f"owner {owner_uid} already has port {mine.id}")
        self._by_owner[owner_uid] = port
        self._owner_of[port.id] = owner_uid

    def update(self, port: NeutronPort) -> None:
        """Refresh the stored copy of an owned port (e.g. its SGs after an update)."""
        owner = self._owner_of.get(port.id)
        if owner is not None:
            self._by_owner[owner] = port

    def unassign(self, port_id: str) -> NeutronPort | None:
        owner = self._owner_of.pop(port_id, None)
        if owner is None:
            return None
        return self._by_owner.pop(owner, None)

    def items(self) -> Iterator[tuple[str, NeutronPort]]:
        return iter(list(self._by_owner.items()))


def load_ledger(
    ports: Iterable[NeutronPort],
    refs: Mapping[str, str],
    live: Collection[str],
    own: Callable[[str, NeutronPort], object],
) -> tuple[int, int, list[NeutronPort]]:
    """Decide who owns what at the start of leadership (``pool-ownership.md`` §5).

    ``own(uid, port)`` is called for every port named by a KuryrPort status (``refs``:
    port id -> uid; a port named twice goes to the first, a second port of one owner is
    not taken), then for every port marked with a live owner that has none yet (a claim
    or create whose answer a predecessor never recorded). Returns (named, adopted, the
    ports nobody owns)."""
    by_id = {p.id: p for p in ports}
    owner_of: dict[str, str] = {}
    has: set[str] = set()
    named = adopted = 0
    for port_id, owner in refs.items():
        port = by_id.get(port_id)
        if port is None or owner in has or port_id in owner_of:
            continue
        own(owner, port)
        owner_of[port_id] = owner
        has.add(owner)
        named += 1
    rest: list[NeutronPort] = []
    for port in by_id.values():
        if port.id in owner_of:
            continue
        owner = port.owner_uid
        if owner and owner in live and owner not in has:
            own(owner, port)
            has.add(owner)
            adopted += 1
        else:
            rest.append(port)
    return named, adopted, rest


@dataclass(frozen=True)
class Marks:
    """What Neutron shows about a port's owner."""

    device_id: str
    name: str
    tags: frozenset[str]

    @classmethod
    def of(cls, port: NeutronPort) -> Marks:
        return cls(port.device_id, port.name, frozenset(port.tags))


@dataclass
class _Pending:
    port: NeutronPort
    """The port as Neutron has it (its marks are what we last saw written)."""
    want: Marks
    since: float


class MarkWriter:
    """Background convergence of Neutron's marks to the ledger (see the module doc).

    ``want(seen, desired)``: ``seen`` is the port as Neutron has it now, ``desired`` the
    port as it should look (same id). A later ``want`` for the same port replaces the
    desire and keeps the older ``seen``; a desire equal to what Neutron has is dropped.
    ``busy()`` says pods are waiting for ports: writes then wait, unless a mark has
    waited ``max_delay`` seconds. At most ``concurrency`` writes are in flight.
    """

    def __init__(
        self,
        neutron: Neutron,
        busy: Callable[[], bool] = lambda: False,
        *,
        concurrency: int = 2,
        max_delay: float = 20.0,
        poll: float = 0.2,
    ) -> None:
        self.neutron = neutron
        self._busy = busy
        self._concurrency = concurrency
        self._max_delay = max_delay
        self._poll = poll
        self._pending: dict[str, _Pending] = {}
        self._inflight: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self.written = 0
        self.errors = 0

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._inflight)

    def want(self, seen: NeutronPort, desired: NeutronPort) -> None:
        target = Marks.of(desired)
        current = self._pending.get(seen.id)
        base = current.port if current is not None else seen
        if Marks.of(base) == target and seen.id not in self._inflight:
            self._pending.pop(seen.id, None)
            return
        since = current.since if current is not None else time.monotonic()
        self._pending[seen.id] = _Pending(base, target, since)
        self._wake.set()

    def forget(self, port_id: str) -> None:
        """The port is being deleted: no marks for it any more."""
        self._pending.pop(port_id, None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="neutron marks")

    async def stop(self, flush_timeout: float = 10.0) -> None:
        """Write what is pending (bounded by ``flush_timeout``), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), flush_timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for worker in list(self._workers):
            worker.cancel()
        for worker in list(self._workers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker

    async def flush(self) -> None:
        """Write everything pending now, ignoring ``busy`` (tests, shutdown)."""
        while self._pending or self._inflight:
            ready = [pid for pid in self._pending if pid not in self._inflight]
            batch = ready[: max(0, self._concurrency - len(self._inflight))]
            for pid in batch:
                self._spawn(pid)
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            now = time.monotonic()
            due = [
                pid
                for pid, p in self._pending.items()
                if pid not in self._inflight
                and (not self._busy() or now - p.since >= self._max_delay)
            ]
            room = self._concurrency - len(self._inflight)
            for pid in due[: max(0, room)]:
                self._spawn(pid)
            await asyncio.sleep(self._poll)

    def _spawn(self, port_id: str) -> None:
        item = self._pending.pop(port_id)
        self._inflight.add(port_id)
        task = asyncio.create_task(self._write(item), name=f"marks {port_id}")
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    async def _write(self, item: _Pending) -> None:
        port, want = item.port, item.want
        try:
            if (port.device_id, port.name) != (want.device_id, want.name):
                port = await self.neutron.update_port(
                    port.id, device_id=want.device_id, name=want.name
                )
            if frozenset(port.tags) != want.tags:
                port = await self.neutron.set_tags(port, sorted(want.tags))
            self.written += 1
        except NeutronNotFound:
            return
        except KuryrError as exc:
            self.errors += 1
            LOG.warning("marks of port %s not written yet (%s); retrying later", port.id, exc)
            if port.id not in self._pending:
                self._pending[port.id] = _Pending(port, want, item.since)
            await asyncio.sleep(1.0)
            return
        finally:
            self._inflight.discard(item.port.id)
            self._wake.set()
        newer = self._pending.get(port.id)
        if newer is not None:  # desired again while we wrote: base it on what we wrote
            newer.port = port
            if Marks.of(port) == newer.want:
                del self._pending[port.id]


def with_marks(port: NeutronPort, device_id: str, name: str, tags: tuple[str, ...]) -> NeutronPort:
    """``port`` as it looks once its marks are written."""
    return dataclasses.replace(port, device_id=device_id, name=name, tags=tags)
