"""Coalescing single-port creates into Neutron bulk ``POST /ports``.

Without pools, every pod needs a new port. One ``POST`` per pod puts a burst of 50 pods
behind 50 requests on Neutron's API workers; Neutron's bulk create makes the same ports in
one request for a fraction of the time. :class:`CreateBatcher` sends a create at once when
nothing is in flight (a single pod waits for no one) and gathers the creates that arrive
meanwhile into the next bulk request, up to ``max_batch`` ports::

    create(spec) ─▶ queue ─▶ idle? send now ─▶ in flight: the next creates wait and go
                                               together when it answers (one POST)

Bulk create is all-or-nothing: when Neutron refuses a batch (quota, no free address, a
subnet gone), each of its creates is sent again alone, so one pod's bad request or the
last free addresses do not fail the others. A temporary failure (Neutron unavailable) is
handed to every create of the batch, as a single create's would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kuryr_k8s.model.errors import PermanentError
from kuryr_k8s.openstack.neutron import Neutron, PortSpec
from kuryr_k8s.openstack.ports import NeutronPort

LOG = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the batcher did (plain counters)."""

    requests: int = 0
    """Bulk ``POST`` requests sent (retries alone included)."""
    ports: int = 0
    """Ports asked for in them."""
    split: int = 0
    """Batches refused by Neutron and retried one create at a time."""
    sizes: list[int] = field(default_factory=list)
    """Size of each batch sent, in order (kept for the last 1,000)."""


class CreateBatcher:
    """Creates ports for concurrent callers with as few bulk requests as Neutron allows."""

    def __init__(
        self,
        neutron: Neutron,
        *,
        max_batch: int = 50,
        max_in_flight: int = 1,
        on_created: Callable[[PortSpec, NeutronPort], None] | None = None,
    ) -> None:
        """``on_created`` sees every port made, before its caller does, even when the
        caller was cancelled meanwhile: record it there and nothing is lost."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.neutron = neutron
        self._on_created = on_created
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.stats = BatchStats()
        self._queue: deque[tuple[PortSpec, asyncio.Future[NeutronPort]]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(self, spec: PortSpec) -> NeutronPort:
        """One port as ``spec`` says; raises what Neutron's answer for it raises."""
        future: asyncio.Future[NeutronPort] = asyncio.get_running_loop().create_future()
        self._queue.append((spec, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            batch: list[tuple[PortSpec, asyncio.Future[NeutronPort]]] = []
            while self._queue and len(batch) < self.max_batch:
                spec, future = self._queue.popleft()
                if not future.cancelled():  # its caller gave up before it was sent
                    batch.append((spec, future))
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._send(batch), name=f"bulk create of {len(batch)}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[PortSpec, asyncio.Future[NeutronPort]]]) -> None:
        try:
            self._count(len(batch))
            try:
                ports = await self.neutron.create_ports([spec for spec, _ in batch])
            except PermanentError as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    return
                LOG.info("bulk create of %d ports refused (%s): one at a time", len(batch), exc)
                self.stats.split += 1
                await asyncio.gather(*(self._alone(spec, fut) for spec, fut in batch))
                return
            except Exception as exc:  # temporary: every caller retries as it would alone
                for _, future in batch:
                    _settle(future, exc)
                return
            for (spec, future), port in zip(batch, ports, strict=True):
                self._deliver(spec, future, port)
        finally:
            self._in_flight -= 1
            self._kick()

    async def _alone(self, spec: PortSpec, future: asyncio.Future[NeutronPort]) -> None:
        self._count(1)
        try:
            (port,) = await self.neutron.create_ports([spec])
        except Exception as exc:
            _settle(future, exc)
            return
        self._deliver(spec, future, port)

    def _deliver(
        self, spec: PortSpec, future: asyncio.Future[NeutronPort], port: NeutronPort
    ) -> None:
        if self._on_created is not None:
            self._on_created(spec, port)
        if not future.done():
            future.set_result(port)

    def _count(self, size: int) -> None:
        self.stats.requests += 1
        self.stats.ports += size
        self.stats.sizes.append(size)
        del self.stats.sizes[:-1000]

    async def close(self) -> None:
        """Wait for the requests already sent (their ports must reach their callers)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _settle(future: asyncio.Future[NeutronPort], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
