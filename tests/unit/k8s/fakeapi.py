"""A small in-memory Kubernetes API behind ``httpx.MockTransport``, for unit tests.

It implements just the semantics the client and informer rely on: resourceVersions from one
counter, create/get/replace (optimistic concurrency)/merge+JSON patch/delete (preconditions,
finalizers), status and binding subresources, label/field selectors, list paging with
``limit``/``continue``, and watch streams with resume, bookmarks and 410 after compaction.
Tests steer it: ``fail_next`` injects errors, ``compact`` forgets history, ``end_watches``
closes every open stream, ``bookmark`` sends a BOOKMARK to open streams.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx

from kuryr_k8s.k8s import KubeClient, KubeSettings

Obj = dict[str, Any]


@dataclass
class _Fault:
    status: int
    reason: str
    method: str | None
    times: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Path:
    collection: str  # e.g. "/api/v1/pods" (namespace-independent)
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse(path: str) -> _Path:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    head = parts[:2] if parts[0] == "api" else parts[:3]
    rest = parts[len(head) :]
    ns = None
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return _Path("/" + "/".join([*head, plural]), ns, name, sub)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _json_patch(obj: Obj, ops: list[Obj]) -> Obj:
    obj = copy.deepcopy(obj)
    for op in ops:
        keys = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = obj
        for k in keys[:-1]:
            parent = parent[int(k)] if isinstance(parent, list) else parent[k]
        last = keys[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(idx, op["value"])
                else:
                    parent[idx] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
    return obj


def _field(obj: Obj, dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _matches(obj: Obj, label_selector: str | None, field_selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        if "!=" in term:
            k, _, v = term.partition("!=")
            if _field(obj, k) == v:
                return False
        else:
            k, _, v = term.partition("=")
            if _field(obj, k) != v.lstrip("="):
                return False
    return True


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str | None, str], Obj]] = {}
        self.rv = 100
        self.history: list[tuple[int, str, str, Obj]] = []
        self.compacted = 0
        self.faults: list[_Fault] = []
        self.requests: list[httpx.Request] = []
        self._changed = asyncio.Condition()
        self._generation = 0  # bumped by end_watches()
        self._bookmarks = 0
        self._watches_open = asyncio.Event()
        self._watches_open.set()

    # -- test controls -------------------------------------------------------------

    def client(
        self, sleep: Callable[[float], Awaitable[None]] | None = None, *, server: str | None = None
    ) -> KubeClient:
        """A client of this API; ``sleep`` (e.g. ``FakeClock.sleep``) for 429 retries.
        ``server``: the URL where :func:`unit.k8s.loopback.serve` serves this API; the
        client then uses its real network instead of ``httpx.MockTransport``."""
        if server is not None:
            settings = KubeSettings(server=server, token="t0ken")
            return KubeClient.from_settings(settings, sleep=sleep or FakeClock().sleep)
        settings = KubeSettings(server="https://fake.invalid", token="t0ken")
        return KubeClient.from_settings(
            settings,
            transport=httpx.MockTransport(self.handle),
            sleep=sleep or FakeClock().sleep,
        )

    def fail_next(
        self,
        status: int,
        reason: str = "",
        *,
        method: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.faults.append(_Fault(status, reason, method, times, headers or {}))

    def compact(self) -> None:
        """Forget all history: watches from older versions get 410 Gone."""
        self.compacted = self.rv
        self.history.clear()

    async def end_watches(self) -> None:
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def watching(self) -> int:
        """How many watch requests have arrived."""
        return sum(1 for r in self.requests if r.url.params.get("watch") == "true")

    async def bookmark(self) -> None:
        async with self._changed:
            self._bookmarks += 1
            self._changed.notify_all()

    def hold_watches(self) -> None:
        """New watch requests wait until ``release_watches``."""
        self._watches_open.clear()

    def release_watches(self) -> None:
        self._watches_open.set()

    def seed(self, collection: str, obj: Obj) -> Obj:
        """Store an object directly (no request), as if created earlier."""
        return self._store_new(collection, obj.get("metadata", {}).get("namespace"), obj)

    # -- the handler -------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("watch") == "true":
            await self._watches_open.wait()
        self.requests.append(request)
        for fault in self.faults:
            if fault.method in (None, request.method) and fault.times > 0:
                fault.times -= 1
                return self._status(fault.status, fault.reason, "injected", fault.headers)
        p = _parse(request.url.path)
        q = request.url.params
        body = json.loads(request.content) if request.content else None
        if request.method == "GET" and p.name is None:
            if q.get("watch") == "true":
                return self._watch(p, q)
            return self._list(p, q)
        handler = getattr(self, "_" + request.method.lower())
        try:
            result: httpx.Response = await handler(p, body, request)
        except KeyError:
            return self._status(404, "NotFound", f"{p.collection} {p.name} not found")
        return result

    async def _get(self, p: _Path, body: Any, request: httpx.Request) -> httpx.Response:
        assert p.name is not None
        return httpx.Response(200, json=self.objects[p.collection][(p.namespace, p.name)])

    async def _post(self, p: _Path, body: Obj, request: httpx.Request) -> httpx.Response:
        if p.subresource == "binding":
            assert p.name is not None
            pod = copy.deepcopy(self.objects[p.collection][(p.namespace, p.name)])
            pod.setdefault("spec", {})["nodeName"] = body["target"]["name"]
            await self._update(p, pod, "MODIFIED")
            return self._status(201, "", "bound")
        name = body.get("metadata", {}).get("name")
        if (p.namespace, name) in self.objects.get(p.collection, {}):
            return self._status(409, "AlreadyExists", f"{name} already exists")
        obj = self._store_new(p.collection, p.namespace, body)
        await self._notify()
        return httpx.Response(201, json=obj)

    async def _put(self, p: _Path, body: Obj, request: httpx.Request) -> httpx.Response:
        assert p.name is not None
        current = self.objects[p.collection][(p.namespace, p.name)]
        sent_rv = body.get("metadata", {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            return self._status(409, "Conflict", "the object has been modified")
        if p.subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = body.get("status")
        else:
            new = copy.deepcopy(body)
            new["metadata"] = {**current["metadata"], **body.get("metadata", {})}
            if "status" in current:
                new["status"] = current["status"]
        return httpx.Response(200, json=await self._update(p, new, "MODIFIED"))

    async def _patch(self, p: _Path, body: Any, request: httpx.Request) -> httpx.Response:
        assert p.name is not None
        current = self.objects[p.collection][(p.namespace, p.name)]
        if request.headers["content-type"] == "application/json-patch+json":
            try:
                new = _json_patch(current, body)
            except (ValueError, KeyError, IndexError) as exc:
                return self._status(422, "Invalid", str(exc))
        else:
            new = merge_patch(current, body)
        return httpx.Response(200, json=await self._update(p, new, "MODIFIED"))

    async def _delete(self, p: _Path, body: Obj | None, request: httpx.Request) -> httpx.Response:
        assert p.name is not None
        current = self.objects[p.collection][(p.namespace, p.name)]
        pre = (body or {}).get("preconditions") or {}
        meta = current["metadata"]
        for k in ("uid", "resourceVersion"):
            if k in pre and pre[k] != meta[k]:
                return self._status(409, "Conflict", f"precondition failed: {k}")
        if meta.get("finalizers"):
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
            return httpx.Response(200, json=await self._update(p, new, "MODIFIED"))
        del self.objects[p.collection][(p.namespace, p.name)]
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self.history.append((self.rv, p.collection, "DELETED", gone))
        await self._notify()
        return httpx.Response(200, json=gone)

    # -- collections -------------------------------------------------------------------

    def _selected(self, p: _Path, q: httpx.QueryParams) -> list[Obj]:
        items = [
            o
            for (ns, _), o in sorted(self.objects.get(p.collection, {}).items(), key=str)
            if p.namespace in (None, ns)
        ]
        return [o for o in items if _matches(o, q.get("labelSelector"), q.get("fieldSelector"))]

    def _list(self, p: _Path, q: httpx.QueryParams) -> httpx.Response:
        items = self._selected(p, q)
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0) or len(items)
        page = items[start : start + limit]
        meta: Obj = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return httpx.Response(200, json={"kind": "List", "metadata": meta, "items": page})

    def _watch(self, p: _Path, q: httpx.QueryParams) -> httpx.Response:
        since = int(q.get("resourceVersion") or self.rv)
        # What the watch has seen is taken now, when the request arrives, not when its
        # body is first read (over a socket that comes later): a bookmark() made after the
        # request arrived reaches it.
        return httpx.Response(
            200, content=self._stream(p, q, since, self._generation, self._bookmarks)
        )

    async def _stream(
        self, p: _Path, q: httpx.QueryParams, since: int, generation: int, bookmarks: int
    ) -> AsyncIterator[bytes]:
        if since < self.compacted:
            status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            yield (json.dumps({"type": "ERROR", "object": status}) + "\n").encode()
            return
        sent = since
        while True:
            for rv, coll, kind, obj in list(self.history):
                if rv > sent:
                    sent = rv  # other collections' events too, or we would spin on them
                    ns = obj["metadata"].get("namespace")
                    if (
                        coll == p.collection
                        and p.namespace in (None, ns)
                        and _matches(obj, q.get("labelSelector"), q.get("fieldSelector"))
                    ):
                        yield (json.dumps({"type": kind, "object": obj}) + "\n").encode()
            if bookmarks != self._bookmarks:
                bookmarks = self._bookmarks  # also when not sent, or we would spin on it
                if q.get("allowWatchBookmarks") == "true":
                    bm = {"kind": "", "metadata": {"resourceVersion": str(self.rv)}}
                    sent = max(sent, self.rv)
                    yield (json.dumps({"type": "BOOKMARK", "object": bm}) + "\n").encode()
            async with self._changed:
                if generation != self._generation:
                    return
                if not any(rv > sent for rv, *_ in self.history) and (bookmarks == self._bookmarks):
                    await self._changed.wait()
                if generation != self._generation:
                    return

    # -- helpers -----------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _store_new(self, collection: str, namespace: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        meta["resourceVersion"] = self._next_rv()
        self.objects.setdefault(collection, {})[(namespace, meta["name"])] = obj
        self.history.append((self.rv, collection, "ADDED", copy.deepcopy(obj)))
        return obj

    async def _update(self, p: _Path, new: Obj, kind: str) -> Obj:
        assert p.name is not None
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.objects[p.collection][(p.namespace, p.name)]
            kind = "DELETED"
        else:
            self.objects[p.collection][(p.namespace, p.name)] = new
        self.history.append((self.rv, p.collection, kind, copy.deepcopy(new)))
        await self._notify()
        return new

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    def _status(
        code: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason}
        body["message"] = message
        return httpx.Response(code, json=body, headers=headers)


class FakeClock:
    """Time that moves only when told to (``advance``) or when someone sleeps."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)
