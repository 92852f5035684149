"""How big a bulk ``POST /ports`` may be without losing addresses to Neutron.

Neutron's ML2 ``create_port_bulk`` (Zed, the sandbox's 21.0.0, and every release with
the same code) allocates the addresses of all the ports of a bulk one after another
*before* its ``try`` block (``allocate_ips_for_ports``), each allocation committed on
its own. When port *k* gets none (``IpAddressGenerationFailure``), the request fails and
the allocations of ports 1..k-1 are never rolled back: their ``ipamallocations`` rows stay,
no port references them, ``network-ip-availabilities`` (which counts ports' addresses)
calls them free, and every later create on the subnet is refused. Nothing in Neutron
frees them but deleting the subnet (``docs/design/pool-ownership.md``, decision 11).

So a bulk must never be the request that runs a subnet dry. :class:`AddressBudget` keeps,
per subnet, the free count Neutron reported (one ``GET /network-ip-availabilities/<net>``,
trusted for ``ttl`` seconds), minus the addresses our own creates took since then or are
taking now, minus the addresses found *lost* (see below), and grants a bulk of at most
that many minus ``margin`` (addresses other clients may be taking meanwhile). Less room
than two ports, a cloud that will not tell (403: the API is admin-only by default) or
``margin`` larger than what is left: the creates go one ``POST`` per port (a single create
allocates inside its transaction and loses nothing when refused).

Lost addresses: whenever Neutron refuses a create of ours for lack of addresses, the
subnet had no allocatable address at that moment, so whatever ``network-ip-availabilities``
still calls free there is lost (leaked by an earlier refused bulk, ours or another
client's). The budget re-reads it and subtracts it from then on, so a subnet that already
leaked still gets correctly sized bulks, and says so once in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from kuryr_k8s.openstack.neutron import IpExhausted, Neutron

LOG = logging.getLogger(__name__)

FREE_TTL = 2.0
"""Seconds a free-address count read from Neutron is trusted (decremented meanwhile by
what we create)."""
BULK_MARGIN = 4
"""Addresses a bulk leaves untouched by what we know: others' creates since our read."""


@dataclass
class _Subnet:
    free: int | None = None
    """Free addresses as Neutron reported them at ``read_at`` (None: not known)."""
    read_at: float = float("-inf")
    taken_since: int = 0
    """Addresses our creates took since the read (counted again if the read saw them:
    errs on the safe side)."""
    in_flight: int = 0
    """Addresses asked for by our creates still waiting for Neutron's answer."""
    lost: int = 0
    """Addresses Neutron calls free but cannot allocate (leaked by a refused bulk)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class BudgetStats:
    reads: int = 0
    """``network-ip-availabilities`` reads."""
    narrowed: int = 0
    """Bulks granted fewer ports than asked (single creates included)."""
    refused: int = 0
    """Creates of ours Neutron refused for lack of addresses."""
    refused_bulks: int = 0
    """Of them, bulks (each may have leaked addresses: should stay 0)."""


class AddressBudget:
    """Per-subnet free-address accounting for sizing bulk creates; see the module doc."""

    def __init__(
        self,
        neutron: Neutron,
        *,
        margin: int = BULK_MARGIN,
        ttl: float = FREE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if margin < 0 or ttl < 0:
            raise ValueError("margin and ttl must not be negative")
        self.neutron = neutron
        self.margin = margin
        self.ttl = ttl
        self._clock = clock
        self._subnets: dict[str, _Subnet] = {}
        self._unknown_warned: set[str] = set()
        self.stats = BudgetStats()

    def room(self, subnet_id: str) -> int | None:
        """Addresses left by what we know (before the margin), None if never known."""
        sub = self._subnets.get(subnet_id)
        if sub is None or sub.free is None:
            return None
        return sub.free - sub.taken_since - sub.in_flight - sub.lost

    def lost(self, subnet_id: str) -> int:
        """Addresses of the subnet found lost to Neutron (see the module doc)."""
        sub = self._subnets.get(subnet_id)
        return sub.lost if sub is not None else 0

    async def _read(self, network_id: str, subnet_id: str, sub: _Subnet) -> None:
        self.stats.reads += 1
        sub.free = await self.neutron.free_ips(network_id, subnet_id)
        sub.read_at = self._clock()
        sub.taken_since = 0
        if sub.free is None and subnet_id not in self._unknown_warned:
            self._unknown_warned.add(subnet_id)
            LOG.warning(
                "Neutron does not tell the free addresses of subnet %s "
                "(GET /network-ip-availabilities is admin-only by default): its ports are "
                "created one POST each, never in bulk (a bulk that runs out of addresses "
                "loses them for good on Neutron Zed); allow that read to the controller's "
                "role for bulk creates",
                subnet_id,
            )

    async def _grant(self, network_id: str, subnet_id: str, wanted: int) -> int:
        sub = self._subnets.setdefault(subnet_id, _Subnet())
        if wanted <= 1:
            return wanted
        async with sub.lock:  # concurrent askers share one read
            if self._clock() - sub.read_at > self.ttl:
                await self._read(network_id, subnet_id, sub)
        room = self.room(subnet_id)
        granted = 1 if room is None else max(1, min(wanted, room - self.margin))
        if granted < wanted:
            self.stats.narrowed += 1
        return granted

    @asynccontextmanager
    async def bulk(self, network_id: str, subnet_id: str, wanted: int) -> AsyncIterator[int]:
        """How many of ``wanted`` ports to create on the subnet in one request (≥ 1; 1 =
        a single create), held as in flight until the block ends: send exactly that many.
        A block ending with :class:`IpExhausted` marks the subnet's remaining count lost."""
        granted = await self._grant(network_id, subnet_id, wanted)
        sub = self._subnets[subnet_id]
        sub.in_flight += granted
        try:
            yield granted
        except IpExhausted:
            sub.in_flight -= granted
            await self._refused(network_id, subnet_id, sub, granted)
            raise
        except BaseException:
            sub.in_flight -= granted
            raise
        sub.in_flight -= granted
        sub.taken_since += granted

    async def _refused(self, network_id: str, subnet_id: str, sub: _Subnet, size: int) -> None:
        """Neutron had no address for a create of ours: what it still calls free is lost."""
        self.stats.refused += 1
        if size > 1:
            self.stats.refused_bulks += 1
        async with sub.lock:
            await self._read(network_id, subnet_id, sub)
            if sub.free is None:
                return
            # our creates still in flight may hold addresses the read did not see as used;
            # the count only grows (a port deleted between the refusal and the read may be
            # taken for lost: bulks get smaller, single creates still use every address)
            phantom = max(0, sub.free - sub.in_flight)
            if phantom > sub.lost:
                LOG.error(
                    "subnet %s: Neutron refused a create of ours (%s) for lack of addresses "
                    "while it reports %d free: %d addresses are lost to Neutron (a bulk "
                    "create refused for lack of addresses leaks its allocations on Neutron "
                    "Zed; only deleting the subnet, or an operator removing the orphan rows "
                    "of ipamallocations, frees them). Bulks on it are sized without them.",
                    subnet_id,
                    f"a bulk of {size}" if size > 1 else "a single port",
                    sub.free,
                    phantom,
                )
                sub.lost = phantom
