"""Port status for many ports from one Neutron call (``docs/design/pool-ownership.md`` §4).

The KuryrPort reconciler never ``GET``s a single port to learn whether it is ACTIVE: it
asks :meth:`PortStatusWatcher.status` (the last status seen) and, while the port is not
ACTIVE, :meth:`watch` es it. One loop lists every watched port that is due in one
``GET /ports?id=…`` (chunks of :data:`CHUNK`) and calls ``on_change(key)`` for each
whose status changed, so the reconciler runs again exactly when there is news. A port
is polled every ``interval`` seconds for its first ``fast_for`` seconds after it was
watched *eagerly* (the node reported the pod plugged, or a subport whose trunk makes it
ACTIVE by itself), otherwise every ``slow_interval`` seconds: ports of pods that are not
plugged yet (or never will be) cost Neutron almost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.openstack.neutron import Neutron

LOG = logging.getLogger(__name__)

CHUNK = 100
"""Port ids per list call (keeps the URL well under common 8 KiB limits)."""


@dataclass
class _Watch:
    key: str
    since: float
    due: float
    eager: bool


class PortStatusWatcher:
    def __init__(
        self,
        neutron: Neutron,
        on_change: Callable[[str], None],
        *,
        interval: float = 0.3,
        fast_for: float = 30.0,
        slow_interval: float = 30.0,
    ) -> None:
        self.neutron = neutron
        self._on_change = on_change
        self._interval = interval
        self._fast_for = fast_for
        self._slow = slow_interval
        self._status: dict[str, str] = {}
        self._watched: dict[str, _Watch] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lists = 0

    def status(self, port_id: str) -> str | None:
        """The last status seen for the port (None: never looked at)."""
        return self._status.get(port_id)

    def seen(self, port_id: str, status: str) -> None:
        """A status learnt elsewhere (a create's answer): kept unless fresher is known."""
        self._status.setdefault(port_id, status)

    def watch(self, port_id: str, key: str, *, eager: bool = True) -> None:
        """Poll the port until its status changes from the last seen; then ``on_change(key)``.
        ``eager``: a change is expected now (poll fast); a lazy watch becomes eager when
        watched eagerly again."""
        now = time.monotonic()
        current = self._watched.get(port_id)
        if current is None:
            due = now if eager else now + self._slow
            self._watched[port_id] = _Watch(key, now, due, eager)
            self._wake.set()
        elif eager and not current.eager:
            self._watched[port_id] = _Watch(key, now, now, True)
            self._wake.set()

    def unwatch(self, port_id: str) -> None:
        self._watched.pop(port_id, None)

    def forget(self, port_id: str) -> None:
        self._watched.pop(port_id, None)
        self._status.pop(port_id, None)

    @property
    def watching(self) -> int:
        return len(self._watched)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="port statuses")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._watched.clear()

    async def poll_once(self) -> int:
        """List the due ports once; returns how many changed."""
        now = time.monotonic()
        due = [pid for pid, w in self._watched.items() if w.due <= now]
        changed = 0
        for i in range(0, len(due), CHUNK):
            chunk = due[i : i + CHUNK]
            statuses = await self.neutron.port_statuses(chunk)
            self.lists += 1
            now = time.monotonic()
            for pid in chunk:
                w = self._watched.get(pid)
                if w is None:
                    continue
                new = statuses.get(pid, "GONE")
                if new != self._status.get(pid):
                    self._status[pid] = new
                    del self._watched[pid]
                    changed += 1
                    self._on_change(w.key)
                    continue
                fast = w.eager and now - w.since < self._fast_for
                w.due = now + (self._interval if fast else self._slow)
        return changed

    async def _run(self) -> None:
        while True:
            if not self._watched:
                self._wake.clear()
                await self._wake.wait()
            if not any(w.due <= time.monotonic() for w in self._watched.values()):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                continue
            try:
                await self.poll_once()
            except KuryrError as exc:
                LOG.warning("could not list port statuses: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(self._interval)
