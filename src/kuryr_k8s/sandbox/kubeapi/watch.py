"""Watch streams: newline-delimited JSON events over one chunked HTTP response.

Like the real watch cache: ``resourceVersion`` unset/``0`` starts with synthetic ADDED
events for the current state, a newer one replays the history after it, one older than the
history window yields a single ERROR event (410 Expired). ``timeoutSeconds`` ends the
stream, ``allowWatchBookmarks`` adds BOOKMARK events every ``bookmark_interval`` seconds
and two seconds before the timeout, ``sendInitialEvents`` ends the initial ADDED burst with
a bookmark annotated ``k8s.io/initial-events-end``.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.resources import ResourceType
from kuryr_k8s.sandbox.kubeapi.store import Store, TooOld, Watcher

Obj = dict[str, Any]
Transform = Callable[[str, Obj], Obj]


class _EncodedEvents:
    """Recently encoded events, shared by all streams: N watchers of one kind encode each
    event once. Entries keep their object alive, so an ``id()`` cannot be reused meanwhile."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lines: OrderedDict[tuple[int, str], tuple[Obj, bytes]] = OrderedDict()

    def line(self, kind: str, obj: Obj) -> bytes:
        key = (id(obj), kind)
        hit = self._lines.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        line = _encode(kind, obj)
        self._lines[key] = (obj, line)
        if len(self._lines) > self._size:
            self._lines.popitem(last=False)
        return line


def _encode(kind: str, obj: Obj) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


ENCODED = _EncodedEvents()


@dataclass
class WatchParams:
    since: int | None
    timeout: float | None
    bookmarks: bool
    initial_events_end: bool
    bookmark_interval: float


def parse_since(rv: str | None, send_initial: bool) -> int | None:
    if send_initial or rv in (None, "", "0"):
        return None
    text = str(rv)
    if not text.isdigit():
        # What a real server answers (a 500 without a reason, from strconv.ParseUint).
        raise errors.ApiError(
            500,
            "",
            f'resourceVersion: Invalid value: "{text}": strconv.ParseUint: parsing '
            f'"{text}": invalid syntax',
        )
    return int(text)


class WatchStream:
    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        watcher: Watcher,
        params: WatchParams,
        transform: Transform,
    ) -> None:
        self.store, self.rt, self.watcher, self.params = store, rt, watcher, params
        self.transform = transform
        self.response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        self.response.enable_chunked_encoding()

    async def _send(self, kind: str, obj: Obj) -> None:
        await self.response.write(_encode(kind, obj))

    async def _event(self, kind: str, obj: Obj) -> None:
        shown = self.transform(kind, obj)
        if shown is obj:
            await self.response.write(ENCODED.line(kind, obj))
        else:
            await self._send(kind, shown)

    def _bookmark(self, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta}

    async def serve(self, request: web.Request) -> web.StreamResponse:
        await self.response.prepare(request)
        try:
            initial = self.store.subscribe(self.watcher, self.params.since)
        except TooOld as exc:
            gone = errors.gone(str(exc)).status()
            await self._send("ERROR", gone)
            return self.response
        try:
            for kind, obj in initial:
                await self._event(kind, obj)
            if self.params.initial_events_end and self.params.bookmarks:
                await self._send("BOOKMARK", self._bookmark(initial_end=True))
            await self._loop()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(self.watcher)
        return self.response

    def _next_bookmark(self, now: float, deadline: float | None) -> float | None:
        if not self.params.bookmarks:
            return None
        when = now + self.params.bookmark_interval
        if deadline is not None:
            when = min(when, deadline - 2)
        return when if when > now else None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.params.timeout if self.params.timeout else None
        bookmark_at = self._next_bookmark(loop.time(), deadline)
        queue = self.watcher.queue
        while True:
            wake = min((t for t in (deadline, bookmark_at) if t is not None), default=None)
            try:
                wait = None if wake is None else max(wake - loop.time(), 0)
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return
                if bookmark_at is not None and loop.time() >= bookmark_at:
                    await self._drain_then_bookmark()
                    bookmark_at = self._next_bookmark(loop.time(), deadline)
                continue
            if item is None:
                return
            await self._event(*item)

    async def _drain_then_bookmark(self) -> None:
        while not self.watcher.queue.empty():
            item = self.watcher.queue.get_nowait()
            if item is None:
                self.watcher.queue.put_nowait(None)  # let the main loop see the end
                return
            await self._event(*item)
        await self._send("BOOKMARK", self._bookmark())
