"""The reconcile engine: a keyed, de-duplicated work queue drained by a few workers.

Semantics (controller-runtime's, in asyncio)::

    informer ─add(key)─▶ WorkQueue ─get()─▶ worker ─reconcile(key)─▶
                            ▲ (dirty/processing sets)       │
                            │                               ├ Result()              forget backoff
                            └─ add_after(key, delay) ◀──────┤ Result(requeue_after) delayed
                                                            ├ TemporaryError        backoff/delay
                                                            ├ PermanentError        recorded only
                                                            └ anything else         logged, backoff

* A key is in the queue at most once (de-duplicated) and is processed by at most one
  worker at a time; a key added while it is processed is queued again when it is done.
* Keys are processed in parallel up to ``workers`` (the concurrency cap).
* Backoff is exponential, capped and jittered, per key; a success forgets it.
* Reconcilers get only the key: they read the current state from informer caches and
  converge (level-triggered), so a lost or merged event is never a lost change.
* Fair share: keys belong to *groups* (``group_of(key)``, e.g. the workload that owns a
  pod); queued keys are handed out round-robin over the groups that have any, so a
  lone pod is next in line after at most one key of each other group, not behind a
  Deployment's 200 new replicas (API Priority and Fairness does the same per flow in
  kube-apiserver). Within a group, order is first in, first out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kuryr_k8s.k8s.timing import Clock, SystemClock
from kuryr_k8s.model.errors import PermanentError, TemporaryError

LOG = logging.getLogger(__name__)


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait for them; their errors were reported where they ran."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@dataclass(frozen=True)
class Result:
    """What a successful reconcile asks for next."""

    requeue_after: float | None = None
    """Seconds after which to look at the key again (e.g. to poll a port's status)."""


class Reconciler(Protocol):
    """Makes the world match the object named by ``key`` (``namespace/name``)."""

    kind: str
    """Short name for logs and metrics, e.g. ``pod`` or ``kuryrport``."""

    async def reconcile(self, key: str) -> Result: ...


class EngineMetrics(Protocol):
    """What the engine reports; :class:`kuryr_k8s.controller.metrics.Metrics` implements it."""

    def reconciled(self, kind: str, outcome: str, seconds: float) -> None: ...

    def queue_depth(self, kind: str, depth: int) -> None: ...


class _NoMetrics:
    def reconciled(self, kind: str, outcome: str, seconds: float) -> None:
        pass

    def queue_depth(self, kind: str, depth: int) -> None:
        pass


class WorkQueue:
    """client-go's workqueue semantics: ``queue`` order, ``dirty`` set, ``processing`` set."""

    def __init__(
        self, clock: Clock | None = None, group_of: Callable[[str], str] | None = None
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._group_of = group_of or (lambda key: "")
        self._queue = _FairQueue()
        self._bulk: deque[str] = deque()
        """Keys from a full resync: processed only when no event-driven key waits, so a
        new pod is not queued behind a thousand unchanged ones after a restart."""
        self._bulk_keys: set[str] = set()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._ready = asyncio.Event()
        self._timers: dict[str, tuple[float, asyncio.Task[None]]] = {}

    def __len__(self) -> int:
        return len(self._queue) + len(self._bulk_keys)

    @property
    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def add(self, key: str, *, background: bool = False) -> None:
        """Queue ``key`` unless it is queued already; safe to call from any callback.
        ``background``: a resync; an event for a key queued in the background promotes it."""
        if key in self._dirty:
            if not background and key in self._bulk_keys:
                self._bulk_keys.discard(key)  # its stale entry in _bulk is skipped
                self._queue.append(key, self._group(key))
                self._wake()
            return
        self._dirty.add(key)
        if key not in self._processing:
            if background:
                self._bulk.append(key)
                self._bulk_keys.add(key)
            else:
                self._queue.append(key, self._group(key))
            self._wake()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds; an earlier pending timer for it wins."""
        if delay <= 0:
            self.add(key)
            return
        due = self._clock.monotonic() + delay
        pending = self._timers.get(key)
        if pending is not None and not pending[1].done():
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, asyncio.ensure_future(self._later(key, delay)))

    async def _later(self, key: str, delay: float) -> None:
        await self._clock.sleep(delay)
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        """The next key to process; it stays "processing" until :meth:`done`."""
        while True:
            while self._bulk and self._bulk[0] not in self._bulk_keys:
                self._bulk.popleft()  # promoted to the event queue meanwhile
            if self._queue or self._bulk:
                break
            self._ready.clear()
            await self._ready.wait()
        if self._queue:
            key = self._queue.popleft()
        else:
            key = self._bulk.popleft()
            self._bulk_keys.discard(key)
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key, self._group(key))
            self._wake()

    def _group(self, key: str) -> str:
        try:
            return self._group_of(key)
        except Exception:  # a key is never lost to a grouping bug: it queues unshared
            LOG.exception("grouping %s failed; queued in the common group", key)
            return ""

    def pending_timers(self) -> list[str]:
        return sorted(k for k, (_, t) in self._timers.items() if not t.done())

    def shutdown(self) -> None:
        for _, task in self._timers.values():
            task.cancel()
        self._timers.clear()

    def _wake(self) -> None:
        self._ready.set()


class _FairQueue:
    """FIFO per group, round-robin over the groups that have keys waiting."""

    def __init__(self) -> None:
        self._groups: dict[str, deque[str]] = {}
        self._turns: deque[str] = deque()
        """Groups with keys waiting, in the order they get their next turn."""
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, key: str, group: str) -> None:
        keys = self._groups.get(group)
        if keys is None:
            keys = self._groups[group] = deque()
            self._turns.append(group)
        keys.append(key)
        self._len += 1

    def popleft(self) -> str:
        group = self._turns.popleft()
        keys = self._groups[group]
        key = keys.popleft()
        if keys:
            self._turns.append(group)
        else:
            del self._groups[group]
        self._len -= 1
        return key


@dataclass(frozen=True)
class EngineSettings:
    """How hard the engine works and how it backs off."""

    workers: int = 16
    """Keys reconciled in parallel (the concurrency cap)."""
    backoff_base: float = 0.5
    """First retry delay after a temporary error, seconds."""
    backoff_cap: float = 60.0
    """Largest retry delay, seconds."""


class Engine:
    """Runs one :class:`Reconciler` over a :class:`WorkQueue` with ``workers`` tasks."""

    def __init__(
        self,
        reconciler: Reconciler,
        settings: EngineSettings | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: EngineMetrics | None = None,
        group_of: Callable[[str], str] | None = None,
    ) -> None:
        """``group_of(key)``: the group whose fair share a key is queued in (see the
        module's docstring); default: one group, plain first in, first out."""
        self.reconciler = reconciler
        self.settings = settings or EngineSettings()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._metrics: EngineMetrics = metrics or _NoMetrics()
        self.queue = WorkQueue(self._clock, group_of)
        self.failures: dict[str, int] = {}
        """Consecutive failures per key (drives the backoff)."""
        self.permanent: dict[str, str] = {}
        """Keys whose last reconcile hit a PermanentError, with the message."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0

    @property
    def kind(self) -> str:
        return self.reconciler.kind

    def enqueue(self, key: str) -> None:
        self.queue.add(key)
        self._idle.clear()
        self._metrics.queue_depth(self.kind, len(self.queue))

    def enqueue_all(self, keys: Iterable[str]) -> None:
        """A resync: every key, behind any event-driven key (see :class:`WorkQueue`)."""
        for key in keys:
            self.queue.add(key, background=True)
        self._idle.clear()
        self._metrics.queue_depth(self.kind, len(self.queue))

    def backoff(self, key: str) -> float:
        """Next delay for ``key``: capped ``base * 2**n``, full jitter on the upper half."""
        n = self.failures.get(key, 0)
        ceiling = min(self.settings.backoff_cap, self.settings.backoff_base * 2.0 ** min(n, 30))
        self.failures[key] = n + 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def run(self) -> None:
        """Work until cancelled."""
        workers = [
            asyncio.ensure_future(self._worker()) for _ in range(max(1, self.settings.workers))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            await cancel_all(workers)
            self.queue.shutdown()

    async def wait_idle(self) -> None:
        """Return when nothing is queued or processing (pending timers do not count)."""
        while True:
            await self._idle.wait()
            if not len(self.queue) and not self._busy:
                return
            self._idle.clear()

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            self._busy += 1
            try:
                await self.process(key)
            finally:
                self._busy -= 1
                self.queue.done(key)
                self._metrics.queue_depth(self.kind, len(self.queue))
                if not len(self.queue) and not self._busy:
                    self._idle.set()

    async def process(self, key: str) -> None:
        """Reconcile ``key`` once and schedule what the outcome asks for."""
        started = self._clock.monotonic()
        outcome = "success"
        try:
            result = await self.reconciler.reconcile(key)
        except asyncio.CancelledError:
            raise
        except TemporaryError as exc:
            outcome = "requeue"
            delay = self.backoff(key)
            if exc.delay is not None and self.failures[key] <= 3:
                delay = exc.delay  # the error knows best, until it keeps failing
            elif exc.delay is not None:
                delay = max(delay, exc.delay)
            LOG.info("%s %s: %s; retrying in %.2fs", self.kind, key, exc, delay)
            self.queue.add_after(key, delay)
        except PermanentError as exc:
            outcome = "permanent_error"
            self.failures.pop(key, None)
            self.permanent[key] = str(exc)
            LOG.error("%s %s: %s (not retried until the object changes)", self.kind, key, exc)
        except Exception:
            outcome = "error"
            delay = self.backoff(key)
            LOG.exception("%s %s: unexpected error; retrying in %.2fs", self.kind, key, delay)
            self.queue.add_after(key, delay)
        else:
            self.failures.pop(key, None)
            self.permanent.pop(key, None)
            if result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
        finally:
            self._metrics.reconciled(self.kind, outcome, self._clock.monotonic() - started)
