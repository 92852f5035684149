"""The object store: indexed objects, the global resourceVersion, watch history and fan-out.

All mutation happens synchronously on the event loop thread, so every call here is atomic
with respect to the others; watchers get events through their own queues.

Indexes: objects by (resource, namespace, name), by uid, and owner uid -> dependents.
Watchers are kept per resource, so an event only visits the watchers of its own kind.
The history is a bounded window of recent events; a watch may resume from any
resourceVersion inside the window, older ones get ``410 Gone``/``Expired``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.sandbox.kubeapi.selectors import FieldSelector, LabelSelector

Obj = dict[str, Any]
Ref = tuple[str, str, str]
"""(resource key, namespace, name) of a stored object."""

WATCH_QUEUE_LIMIT = 100_000


@dataclass(frozen=True)
class Event:
    """One change: ``type`` is ADDED, MODIFIED or DELETED; ``old`` is the previous state."""

    rv: int
    type: str
    key: str
    obj: Obj
    old: Obj | None = None

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")


def field_value(obj: Obj, path: str) -> str:
    """The string a field selector compares against (``true``/``false`` for booleans)."""
    if path == "source":
        return str((obj.get("source") or {}).get("component") or "")
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@dataclass(eq=False)
class Watcher:
    """A watch stream's subscription; events arrive already filtered and translated."""

    key: str
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    queue: asyncio.Queue[tuple[str, Obj] | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(
            lambda p: field_value(obj, p)
        )

    def translate(self, ev: Event) -> tuple[str, Obj] | None:
        """The event this watcher sees: objects entering or leaving its selection count as
        ADDED/DELETED, like the real watch cache does."""
        now, before = self.matches(ev.obj), self.matches(ev.old)
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if now else None
        if now and before:
            return ("MODIFIED", ev.obj)
        if now:
            return ("ADDED", ev.obj)
        if before:
            return ("DELETED", ev.obj)
        return None

    def offer(self, ev: Event) -> None:
        if self.closed:
            return
        out = self.translate(ev)
        if out is None:
            return
        if self.queue.qsize() >= WATCH_QUEUE_LIMIT:
            self.close()
            return
        self.queue.put_nowait(out)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class TooOld(Exception):
    """The requested resourceVersion fell out of the history window."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")


class Store:
    """Objects, indexes, resourceVersion counter, history and watchers."""

    def __init__(self, history: int = 10_000) -> None:
        self.rv = 0
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {}
        self._uids: dict[str, Ref] = {}
        self._dependents: dict[str, set[Ref]] = {}
        self._history: deque[Event] = deque(maxlen=history)
        self.window_start = 0
        self._watchers: dict[str, set[Watcher]] = {}
        self.listeners: list[Callable[[Event], None]] = []
        self.changed = False

    # ------------------------------------------------------------ reads

    def get(self, key: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get(namespace, {}).get(name)

    def by_uid(self, uid: str) -> Obj | None:
        ref = self._uids.get(uid)
        return self.get(*ref) if ref else None

    def ref_of_uid(self, uid: str) -> Ref | None:
        return self._uids.get(uid)

    def dependents(self, uid: str) -> list[Ref]:
        return sorted(self._dependents.get(uid, ()))

    def iter(self, key: str, namespace: str | None = None) -> Iterator[Obj]:
        """Objects of one resource, sorted by namespace then name (the real list order)."""
        spaces = self._objects.get(key, {})
        selected = [namespace] if namespace is not None else sorted(spaces)
        for ns in selected:
            items = spaces.get(ns, {})
            for name in sorted(items):
                yield items[name]

    def count(self, key: str, namespace: str | None = None) -> int:
        spaces = self._objects.get(key, {})
        if namespace is not None:
            return len(spaces.get(namespace, {}))
        return sum(len(v) for v in spaces.values())

    def keys(self) -> list[str]:
        return [k for k, spaces in self._objects.items() if any(spaces.values())]

    # ------------------------------------------------------------ writes

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: str, obj: Obj, event_type: str, old: Obj | None = None) -> Event:
        """Store ``obj`` (its ``metadata.resourceVersion`` already set) and publish."""
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        self._objects.setdefault(key, {}).setdefault(ns, {})[name] = obj
        self._index(key, obj, old)
        return self._publish(Event(int(meta["resourceVersion"]), event_type, key, obj, old))

    def remove(self, key: str, obj: Obj, old: Obj | None = None) -> Event:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        spaces = self._objects.get(key, {})
        spaces.get(ns, {}).pop(name, None)
        if ns in spaces and not spaces[ns]:
            del spaces[ns]
        self._unindex(key, obj)
        return self._publish(Event(int(meta["resourceVersion"]), "DELETED", key, obj, old))

    def _index(self, key: str, obj: Obj, old: Obj | None) -> None:
        if old is not None:
            self._unindex(key, old)
        meta = obj["metadata"]
        ref = (key, meta.get("namespace", ""), meta["name"])
        self._uids[meta["uid"]] = ref
        for owner in meta.get("ownerReferences") or []:
            self._dependents.setdefault(str(owner.get("uid")), set()).add(ref)

    def _unindex(self, key: str, obj: Obj) -> None:
        meta = obj["metadata"]
        ref = (key, meta.get("namespace", ""), meta["name"])
        if self._uids.get(meta["uid"]) == ref:
            del self._uids[meta["uid"]]
        for owner in meta.get("ownerReferences") or []:
            deps = self._dependents.get(str(owner.get("uid")))
            if deps is not None:
                deps.discard(ref)
                if not deps:
                    del self._dependents[str(owner.get("uid"))]

    def _publish(self, ev: Event) -> Event:
        if len(self._history) == self._history.maxlen:
            self.window_start = self._history[0].rv
        self._history.append(ev)
        self.changed = True
        for watcher in list(self._watchers.get(ev.key, ())):
            watcher.offer(ev)
        for listener in list(self.listeners):
            listener(ev)
        return ev

    # ------------------------------------------------------------ watch

    def subscribe(self, watcher: Watcher, since: int | None) -> list[tuple[str, Obj]]:
        """Register ``watcher``; returns the events it must see first.

        ``since=None`` means "current state" (synthetic ADDED events for every match);
        otherwise the history after ``since`` is replayed, or :class:`TooOld` is raised.
        """
        if since is None:
            ns = watcher.namespace
            initial = [("ADDED", o) for o in self.iter(watcher.key, ns) if watcher.matches(o)]
        else:
            if since < self.window_start:
                raise TooOld(since, self.window_start)
            initial = []
            for ev in self._replay(since):
                if ev.key == watcher.key:
                    out = watcher.translate(ev)
                    if out is not None:
                        initial.append(out)
        self._watchers.setdefault(watcher.key, set()).add(watcher)
        return initial

    def _replay(self, since: int) -> Iterator[Event]:
        if not self._history or self._history[-1].rv <= since:
            return iter(())
        # History RVs increase strictly; skip the prefix quickly.
        lo, hi = 0, len(self._history)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._history[mid].rv <= since:
                lo = mid + 1
            else:
                hi = mid
        return itertools.islice(self._history, lo, None)

    def events_after(self, since: int) -> Iterator[Event]:
        return self._replay(since)

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.key, set()).discard(watcher)
        watcher.closed = True

    def watcher_count(self) -> int:
        return sum(len(v) for v in self._watchers.values())

    def close_watchers(self, key: str | None = None) -> None:
        """End the watch streams of one resource (all when ``key`` is None)."""
        for watched, watchers in self._watchers.items():
            if key is None or watched == key:
                for w in list(watchers):
                    w.close()

    # ------------------------------------------------------------ persistence

    def snapshot(self) -> Obj:
        objects = [
            {"key": key, "object": obj}
            for key, spaces in self._objects.items()
            for items in spaces.values()
            for obj in items.values()
        ]
        return {"resourceVersion": self.rv, "objects": objects}

    def restore(self, data: Obj) -> list[tuple[str, Obj]]:
        """Load a snapshot (into an empty store); returns the (key, object) pairs loaded."""
        loaded: list[tuple[str, Obj]] = []
        for entry in data.get("objects", []):
            key, obj = entry["key"], entry["object"]
            meta = obj["metadata"]
            self._objects.setdefault(key, {}).setdefault(meta.get("namespace", ""), {})[
                meta["name"]
            ] = obj
            self._index(key, obj, None)
            loaded.append((key, obj))
        self.rv = max(self.rv, int(data.get("resourceVersion", 0)))
        self.window_start = self.rv
        return loaded
