"""Time and backoff, injectable so that tests are deterministic.

``Clock`` is what informers, leader election and event aggregation read; ``SystemClock``
is the real one, and tests pass a fake that advances only when told.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for durations, and sleeping."""

    def now(self) -> datetime:
        """Aware UTC wall-clock time (written into objects)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for expiry decisions)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter ("decorrelated" enough for reconnects).

    ``next()`` returns a delay in ``[base * 2**n / 2, min(cap, base * 2**n)]``; ``reset()``
    after a success.
    """

    base: float = 0.5
    """First delay, seconds."""
    cap: float = 30.0
    """Largest delay, seconds."""
    rng: random.Random = field(default_factory=random.Random)
    """Source of jitter (seeded in tests)."""
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0
