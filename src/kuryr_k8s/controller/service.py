"""The running controller: informers always, reconcilers only while leading.

::

    start ─▶ install CRDs ─▶ informers (pods, kuryrports) ─▶ synced ─▶ standby (ready)
                                                                        │ lease acquired
                                                                        ▼
             lose lease ◀─ engines + background loops ◀─ start-up steps (pool rebuild)

A standby keeps its caches warm, so taking over costs one lease period plus the start-up
steps, not a full list. Every cached key is queued on taking over and again every
``watch_reconcile_period``; events queue changed keys in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from kuryr_k8s.controller.engine import Engine, cancel_all
from kuryr_k8s.controller.health import HealthState
from kuryr_k8s.k8s.informer import Informer
from kuryr_k8s.k8s.leader import LeaderElector, LeadershipLost
from kuryr_k8s.k8s.timing import Clock, SystemClock
from kuryr_k8s.model.errors import KuryrError

LOG = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


@dataclass
class Controller:
    """Wires informers to engines under leader election. Built by the composition root."""

    informers: Sequence[Informer]
    engines: Sequence[Engine]
    elector: LeaderElector | None
    """None: reconcile at once, without a lease (single instance only)."""
    health: HealthState
    resync_period: float = 300.0
    startup: Sequence[Step] = ()
    """Run on each acquisition of leadership, before reconciling (e.g. pool rebuild)."""
    background: Sequence[Step] = ()
    """Loops that run only while leading (garbage collection)."""
    shutdown: Sequence[Step] = ()
    """Run when leadership ends (stop the pools' background work)."""
    clock: Clock = field(default_factory=SystemClock)
    caches: Sequence[Informer] = ()
    """Informers read by reconcilers but not reconciled themselves (Nodes, for the
    nested-node resolution): synced before readiness, their keys never queued."""
    leading: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        for informer in self.informers:
            informer.add_handler(self._enqueue)

    def _enqueue(self, key: str) -> None:
        for engine in self.engines:
            engine.enqueue(key)

    def _all_keys(self) -> set[str]:
        keys: set[str] = set()
        for informer in self.informers:
            keys.update(informer.store.keys())
        return keys

    async def run(self) -> None:
        """Until cancelled. Raises only if an informer task dies (a bug)."""
        everything = [*self.informers, *self.caches]
        watching = [asyncio.ensure_future(i.run()) for i in everything]
        try:
            for informer in everything:
                await informer.wait_synced()
            self.health.informers_synced = True
            LOG.info("informers synced: %d objects cached", len(self._all_keys()))
            if self.elector is None:
                self.health.role = "leader"
                await self._lead()
                return
            while True:
                self.health.role = "standby"
                try:
                    await self.elector.run(self._lead)
                    return
                except LeadershipLost as exc:
                    LOG.error("lost leadership (%s): back to standby", exc)
                except KuryrError as exc:  # e.g. Neutron down while rebuilding the pools
                    LOG.error("could not lead (%s): lease released, retrying as standby", exc)
                    await self.clock.sleep(self.elector.config.retry_period)
        finally:
            await cancel_all(watching)

    async def _lead(self) -> None:
        self.health.role = "leader"
        self.health.startup_done = False
        self.leading.set()
        tasks: list[asyncio.Future[None]] = []
        try:
            for step in self.startup:
                await step()
            self.health.startup_done = True
            tasks = [asyncio.ensure_future(e.run()) for e in self.engines]
            tasks += [asyncio.ensure_future(step()) for step in self.background]
            tasks.append(asyncio.ensure_future(self._resync()))
            LOG.info("leading: reconciling")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            self.leading.clear()
            self.health.role = "standby"
            await cancel_all(tasks)
            for step in self.shutdown:
                try:
                    await step()
                except Exception:
                    LOG.exception("shutdown step failed")

    async def _resync(self) -> None:
        while True:
            self._enqueue_all()
            await self.clock.sleep(self.resync_period)

    def _enqueue_all(self) -> None:
        keys = sorted(self._all_keys())
        for engine in self.engines:
            engine.enqueue_all(keys)
