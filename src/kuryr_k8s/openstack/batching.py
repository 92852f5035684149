"""Coalescing single-port creates into Neutron bulk ``POST /ports``, sized so a bulk never
runs a subnet out of addresses.

Without pools, every pod needs a new port. One ``POST`` per pod puts a burst of 50 pods
behind 50 requests on Neutron's API workers; Neutron's bulk create makes the same ports in
one request for a fraction of the time. :class:`CreateBatcher` sends a create at once when
nothing is in flight (a single pod waits for no one) and gathers the creates that arrive
meanwhile into the next round, up to ``max_batch`` ports::

    create(spec) ─▶ queue ─▶ idle? send now ─▶ in flight: the next creates wait and go
                                               together when it answers

A round sends, per subnet, one bulk of as many ports as the
:class:`~kuryr_k8s.openstack.addresses.AddressBudget` grants (the subnet keeps a margin of
free addresses after it) and the rest one ``POST`` each: a bulk refused for lack of
addresses loses its allocations for good on Neutron Zed (``addresses.py``), a single
create loses nothing. When Neutron refuses a bulk anyway (quota, another client took the
addresses, a subnet gone), each of its creates is sent again alone, so one pod's bad
request or the last free addresses do not fail the others. A temporary failure (Neutron
unavailable) is handed to every create of the bulk, as a single create's would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kuryr_k8s.model.errors import PermanentError
from kuryr_k8s.openstack.addresses import AddressBudget
from kuryr_k8s.openstack.neutron import Neutron, PortSpec
from kuryr_k8s.openstack.ports import NeutronPort

LOG = logging.getLogger(__name__)

_Item = tuple[PortSpec, "asyncio.Future[NeutronPort]"]


@dataclass
class BatchStats:
    """What the batcher did (plain counters)."""

    requests: int = 0
    """``POST /ports`` requests sent (bulks, singles and retries alone)."""
    ports: int = 0
    """Ports asked for in them."""
    split: int = 0
    """Bulks refused by Neutron and retried one create at a time."""
    sizes: list[int] = field(default_factory=list)
    """Size of each request sent, in order (kept for the last 1,000)."""


class CreateBatcher:
    """Creates ports for concurrent callers with as few requests as Neutron's addresses
    allow (see the module doc)."""

    def __init__(
        self,
        neutron: Neutron,
        *,
        budget: AddressBudget | None = None,
        max_batch: int = 50,
        max_in_flight: int = 1,
        on_created: Callable[[PortSpec, NeutronPort], None] | None = None,
    ) -> None:
        """``on_created`` sees every port made, before its caller does, even when the
        caller was cancelled meanwhile: record it there and nothing is lost."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.neutron = neutron
        self.budget = budget if budget is not None else AddressBudget(neutron)
        self._on_created = on_created
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.stats = BatchStats()
        self._queue: deque[_Item] = deque()
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
            batch: list[_Item] = []
            while self._queue and len(batch) < self.max_batch:
                spec, future = self._queue.popleft()
                if not future.cancelled():  # its caller gave up before it was sent
                    batch.append((spec, future))
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._send(batch), name=f"create {len(batch)} ports")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Item]) -> None:
        try:
            groups: dict[tuple[str, str], list[_Item]] = {}
            for item in batch:
                groups.setdefault((item[0].network_id, item[0].subnet_id), []).append(item)
            await asyncio.gather(*(self._send_group(items) for items in groups.values()))
        finally:
            self._in_flight -= 1
            self._kick()

    async def _send_group(self, items: list[_Item]) -> None:
        """One subnet's creates of a round: a bulk as big as the budget grants, the rest
        alone."""
        spec = items[0][0]
        head: list[_Item] = []
        rest: list[_Item] = []
        try:
            async with self.budget.bulk(spec.network_id, spec.subnet_id, len(items)) as n:
                head, rest = items[:n], items[n:]
                self._count(len(head))
                ports = await self.neutron.create_ports([s for s, _ in head])
        except PermanentError as exc:
            if len(head) <= 1:  # a single create's answer (or the budget's read failed)
                for _, future in head or items:
                    _settle(future, exc)
                if not head:
                    return
            else:
                LOG.info("bulk create of %d ports refused (%s): one at a time", len(head), exc)
                self.stats.split += 1
                rest = head + rest
        except Exception as exc:  # temporary: every caller retries as it would alone
            for _, future in items:
                _settle(future, exc)
            return
        else:
            for (s, future), port in zip(head, ports, strict=True):
                self._deliver(s, future, port)
        await asyncio.gather(*(self._alone(s, fut) for s, fut in rest))

    async def _alone(self, spec: PortSpec, future: asyncio.Future[NeutronPort]) -> None:
        self._count(1)
        try:
            async with self.budget.bulk(spec.network_id, spec.subnet_id, 1):
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
