"""A small keyed work queue: one reconcile per key at a time, keys in parallel, backoff per key.

Adding a key that is being reconciled marks it dirty: it runs once more afterwards, so no
change is lost and no key runs twice at once. ``TemporaryError`` (and unexpected errors)
requeue the key after its own capped, jittered backoff (or the error's ``delay``);
``PermanentError`` is logged and waits for the next change of the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from kuryr_k8s.k8s import Backoff
from kuryr_k8s.model.errors import PermanentError, TemporaryError

LOG = logging.getLogger(__name__)

Reconcile = Callable[[str], Awaitable[float | None]]
"""Makes the world match the object of a key; may return "look again in N seconds"."""


class KeyQueue:
    def __init__(
        self,
        reconcile: Reconcile,
        *,
        base: float = 1.0,
        cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._reconcile = reconcile
        self._base = base
        self._cap = cap
        self._rng = rng or random.Random()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._backoffs: dict[str, Backoff] = {}

    def add(self, key: str, delay: float = 0.0) -> None:
        """Reconcile ``key`` (after ``delay`` seconds)."""
        if delay > 0:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.create_task(self._work(key), name=f"reconcile {key}")

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._timers)

    async def _work(self, key: str) -> None:
        try:
            while True:
                self._dirty.discard(key)
                retry = await self._once(key)
                if key not in self._dirty:
                    break
            if retry is not None:
                self.add(key, retry)
        finally:
            self._running.pop(key, None)

    async def _once(self, key: str) -> float | None:
        backoff = self._backoffs.setdefault(
            key, Backoff(base=self._base, cap=self._cap, rng=self._rng)
        )
        try:
            after = await self._reconcile(key)
        except TemporaryError as exc:
            delay = exc.delay if exc.delay is not None else backoff.next()
            LOG.info("%s: %s; retrying in %.1fs", key, exc, delay)
            return delay
        except PermanentError as exc:
            LOG.error("%s: %s (not retried until the object changes)", key, exc)
            return None
        except Exception:
            delay = backoff.next()
            LOG.exception("%s: unexpected error; retrying in %.1fs", key, delay)
            return delay
        self._backoffs.pop(key, None)
        return after

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
