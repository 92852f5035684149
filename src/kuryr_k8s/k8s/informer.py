"""Informer: a cache of one resource kept current by list+watch; handlers get changed keys.

The loop, as client-go's reflector does it::

    list (paged) ─▶ replace the store ─▶ watch from the list's resourceVersion
        ▲                                   │ ADDED/MODIFIED/DELETED: update store, notify key
        │ 410 Gone                          │ BOOKMARK: remember resourceVersion only
        └───────────────────────────────────┤ stream ends: watch again from the last version
                                            └ error: sleep (capped, jittered backoff), re-watch

Handlers receive only the ``namespace/name`` key: reconcilers read the cache (``store``) to
learn the current state, which makes them level-triggered. Deleted objects are gone from the
store when their key is delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import NoReturn

from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import Gone
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import Resource
from kuryr_k8s.k8s.timing import Backoff, Clock, SystemClock
from kuryr_k8s.model.errors import KuryrError

LOG = logging.getLogger(__name__)

Handler = Callable[[str], None]
"""Called with the key of an object that was added, changed or deleted."""
Indexer = Callable[[Obj], Iterable[str]]
"""Returns the index values of an object, e.g. ``lambda o: [labels(o).get("node", "")]``."""


class Store:
    """Objects by key, with optional secondary indexes. Read-only for everyone but the informer."""

    def __init__(self, indexers: Mapping[str, Indexer] | None = None) -> None:
        self._items: dict[str, Obj] = {}
        self._indexers = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {n: {} for n in self._indexers}

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def keys(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[Obj]:
        return list(self._items.values())

    def by_index(self, index: str, value: str) -> list[Obj]:
        """Objects whose indexer ``index`` returned ``value``."""
        keys = self._indexes[index].get(value, set())
        return [self._items[k] for k in sorted(keys)]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def put(self, obj: Obj) -> str:
        k = objects.key(obj)
        self.remove(k)
        self._items[k] = obj
        for index, fn in self._indexers.items():
            for value in fn(obj):
                self._indexes[index].setdefault(value, set()).add(k)
        return k

    def remove(self, k: str) -> None:
        old = self._items.pop(k, None)
        if old is None:
            return
        for index, fn in self._indexers.items():
            for value in fn(old):
                bucket = self._indexes[index].get(value)
                if bucket is not None:
                    bucket.discard(k)
                    if not bucket:
                        del self._indexes[index][value]

    def replace(self, objs: Iterable[Obj]) -> set[str]:
        """Make the store hold exactly ``objs``; returns the keys that changed or vanished."""
        new = {objects.key(o): o for o in objs}
        changed = {k for k in self._items if k not in new}
        changed |= {
            k
            for k, o in new.items()
            if k not in self._items
            or objects.resource_version(self._items[k]) != objects.resource_version(o)
        }
        for k in list(self._items):
            if k not in new:
                self.remove(k)
        for o in new.values():
            self.put(o)
        return changed


class Informer:
    """List+watch one resource (optionally one namespace / selector) into a :class:`Store`."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, Indexer] | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.store = Store(indexers)
        self.resource_version = ""
        """The last version seen (list, event or bookmark): where a re-watch resumes."""
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff()
        self._clock: Clock = clock or SystemClock()
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        """Register a callback; it receives keys of changes from then on (and of each list)."""
        self._handlers.append(handler)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Return once the first full list is in the store (wrap in ``asyncio.timeout``)."""
        await self._synced.wait()

    async def run(self) -> NoReturn:
        """Run until cancelled. Never raises for API trouble: it logs, backs off, retries."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._watch()
            except Gone:
                LOG.info(
                    "%s: resourceVersion %s expired, listing again",
                    self.resource.plural,
                    self.resource_version,
                )
                need_list = True
                if self._backoff.attempt:
                    await self._clock.sleep(self._backoff.next())
                else:
                    self._backoff.attempt += 1
            except KuryrError as exc:
                delay = self._backoff.next()
                LOG.warning("%s: %s; retrying in %.1fs", self.resource.plural, exc, delay)
                await self._clock.sleep(delay)

    async def _relist(self) -> None:
        page = await self.client.list_all(
            self.resource,
            self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            page_size=self._page_size,
        )
        changed = self.store.replace(page.items)
        self.resource_version = page.resource_version
        self._synced.set()
        self._backoff.reset()
        for k in sorted(changed):
            self._notify(k)

    async def _watch(self) -> None:
        started = self._clock.monotonic()
        seen = 0
        stream = self.client.watch(
            self.resource,
            self._namespace,
            resource_version=self.resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            allow_bookmarks=True,
            timeout_seconds=self._watch_timeout,
        )
        async for event in stream:
            seen += 1
            self._backoff.reset()
            rv = objects.resource_version(event.object)
            if event.type == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            if event.type == "DELETED":
                k = objects.key(event.object)
                self.store.remove(k)
            else:
                k = self.store.put(event.object)
            self.resource_version = rv or self.resource_version
            self._notify(k)
        if not seen and self._clock.monotonic() - started < 1.0:
            # A server that closes watches at once would make this a hot loop.
            await self._clock.sleep(self._backoff.next())

    def _notify(self, k: str) -> None:
        for handler in self._handlers:
            try:
                handler(k)
            except Exception:
                LOG.exception("%s: handler %r failed for %s", self.resource.plural, handler, k)
