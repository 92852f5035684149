"""A thin, typed asyncio client for the Kubernetes REST API over ``httpx.AsyncClient``.

Objects are plain JSON (:data:`kuryr_k8s.k8s.objects.Obj`); a :class:`Resource` names the
collection. Every failure leaves this module as an error of :mod:`kuryr_k8s.k8s.errors`.
Tests swap the network for a function with ``httpx.MockTransport`` (``transport=``); the
real network is :class:`~kuryr_k8s.k8s.transport.AiohttpTransport`.
See ``docs/design/k8s-client.md`` for why we do not use a generated client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.config import KubeSettings
from kuryr_k8s.k8s.errors import ApiUnreachable, error_from_status
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import Resource
from kuryr_k8s.k8s.transport import AiohttpTransport

THROTTLE_RETRIES = 5
"""How often a request answered 429 is sent again (after ``Retry-After``) before the 429
is raised as a ``ServerError`` (temporary: the reconciler backs off and retries)."""
MAX_THROTTLE_DELAY = 10.0

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
PropagationPolicy = Literal["Foreground", "Background", "Orphan"]


class PatchType(StrEnum):
    """Patch flavours, named by their content type."""

    MERGE = "application/merge-patch+json"
    """RFC 7386 JSON merge patch: maps merge, lists are replaced, ``None`` deletes."""
    JSON = "application/json-patch+json"
    """RFC 6902 JSON patch: a list of ``{"op", "path", "value"}`` operations."""
    STRATEGIC = "application/strategic-merge-patch+json"
    """Kubernetes strategic merge: lists merge by key (built-in kinds only, not CRDs)."""


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream. For BOOKMARK only the resourceVersion is meaningful."""

    type: EventType
    object: Obj


@dataclass(frozen=True)
class ObjectList:
    """A list answer: items, the collection's resourceVersion, and the paging token."""

    items: list[Obj]
    resource_version: str
    continue_token: str | None = None


class _BearerAuth(httpx.Auth):
    def __init__(self, settings: KubeSettings) -> None:
        self._settings = settings

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._settings.bearer_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


class KubeClient:
    """CRUD, subresources, paging and watch over one API server.

    ``namespace=None`` on a namespaced resource means "all namespaces" for list/watch and
    "the object's own namespace, else the default namespace" for single-object verbs.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        default_namespace: str = "default",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        throttle_retries: int = THROTTLE_RETRIES,
    ) -> None:
        self._http = http
        self.default_namespace = default_namespace
        self._sleep = sleep
        self._throttle_retries = throttle_retries

    @classmethod
    def from_settings(
        cls,
        settings: KubeSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> KubeClient:
        """Build a client; ``transport`` replaces the network (tests). The network is
        aiohttp's client (:mod:`kuryr_k8s.k8s.transport` says why), with a pool of 256
        connections: every informer holds one for its watch, leave room beyond them."""
        if transport is None:
            transport = AiohttpTransport(ssl_context=settings.ssl_context(), limit=256)
        http = httpx.AsyncClient(
            base_url=settings.server,
            auth=_BearerAuth(settings),
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json", "User-Agent": "kuryr-k8s"},
        )
        return cls(http, default_namespace=settings.namespace, sleep=sleep)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- single objects ---------------------------------------------------------------

    async def get(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        return await self._call("GET", self._path(res, namespace, name, subresource))

    async def create(self, res: Resource, body: Obj, namespace: str | None = None) -> Obj:
        ns = self._ns(res, namespace or objects.namespace(body))
        body = self._typed(res, body)
        return await self._call("POST", res.path(ns), json_body=body)

    async def replace(self, res: Resource, body: Obj, *, subresource: str | None = None) -> Obj:
        """PUT the whole object; fails with ``Conflict`` if its resourceVersion is stale."""
        path = self._path(res, objects.namespace(body), objects.name(body), subresource)
        return await self._call("PUT", path, json_body=self._typed(res, body))

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Obj | list[Obj],
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str | None = None,
    ) -> Obj:
        path = self._path(res, namespace, name, subresource)
        return await self._call("PATCH", path, json_body=patch, content_type=patch_type)

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: PropagationPolicy | None = None,
        grace_period_seconds: int | None = None,
        precondition_uid: str | None = None,
        precondition_resource_version: str | None = None,
    ) -> Obj:
        """Delete; returns the object (still present when finalizers hold it) or a Status."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        preconditions = {
            k: v
            for k, v in (
                ("uid", precondition_uid),
                ("resourceVersion", precondition_resource_version),
            )
            if v is not None
        }
        if preconditions:
            options["preconditions"] = preconditions
        return await self._call("DELETE", self._path(res, namespace, name), json_body=options)

    async def post_subresource(
        self, res: Resource, name: str, subresource: str, body: Obj, namespace: str | None = None
    ) -> Obj:
        """POST to a subresource, e.g. ``pods/NAME/binding`` or ``pods/NAME/eviction``."""
        return await self._call(
            "POST", self._path(res, namespace, name, subresource), json_body=body
        )

    # -- collections ------------------------------------------------------------------

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> ObjectList:
        """One page of a list; pass ``continue_token`` from the previous page for the next."""
        params = _selectors(label_selector, field_selector)
        if limit is not None:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        body = await self._call("GET", res.path(namespace), params=params)
        m = body.get("metadata") or {}
        return ObjectList(
            items=list(body.get("items") or []),
            resource_version=str(m.get("resourceVersion", "")),
            continue_token=m.get("continue") or None,
        )

    async def list_all(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = 500,
    ) -> ObjectList:
        """All pages of a list, as one consistent snapshot (``Gone`` if a token expires)."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = await self.list(
                res,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size,
                continue_token=token,
            )
            items.extend(page.items)
            token = page.continue_token
            if not token:
                return ObjectList(items, page.resource_version)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Stream changes after ``resource_version`` until the server ends the stream.

        A watch ERROR event is raised as its API error (``Gone`` when the version is too
        old); a broken connection as ``ApiUnreachable``. Closing the iterator (or
        cancelling its consumer) closes the connection.
        """
        params = _selectors(label_selector, field_selector)
        params["watch"] = "true"
        if resource_version:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        # The server ends the stream after timeoutSeconds; leave it some slack before we do.
        read = None if timeout_seconds is None else timeout_seconds + 30.0
        timeout = httpx.Timeout(30.0, read=read)
        try:
            async with self._http.stream(
                "GET", res.path(namespace), params=params, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _error(resp)
                async for line in resp.aiter_lines():
                    if line.strip():
                        yield _watch_event(line)
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"watch {res.plural}: {exc!r}") from exc

    # -- internals --------------------------------------------------------------------

    def _ns(self, res: Resource, namespace: str | None) -> str | None:
        if not res.namespaced:
            return None
        return namespace or self.default_namespace

    def _path(
        self, res: Resource, namespace: str | None, name: str, subresource: str | None = None
    ) -> str:
        return res.path(self._ns(res, namespace), name, subresource)

    @staticmethod
    def _typed(res: Resource, body: Obj) -> Obj:
        body = dict(body)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        return body

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        headers = {}
        content = None
        if json_body is not None:
            content = json.dumps(json_body).encode()
            headers["Content-Type"] = content_type
        for attempt in range(self._throttle_retries + 1):
            try:
                resp = await self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.HTTPError as exc:
                raise ApiUnreachable(f"{method} {path}: {exc!r}") from exc
            if resp.status_code != 429 or attempt == self._throttle_retries:
                break
            # 429 means the server did not act on the request (throttled, or "storage is
            # (re)initializing" right after a CRD is created): wait as told, then again.
            await self._sleep(throttle_delay(resp.headers.get("Retry-After")))
        if resp.status_code >= 400:
            raise _error(resp)  # a 429 that outlived the retries: a TemporaryError
        try:
            body = resp.json()
        except ValueError as exc:
            raise ApiUnreachable(f"{method} {path}: answer is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiUnreachable(f"{method} {path}: answer is not a JSON object")
        return body


def throttle_delay(retry_after: str | None) -> float:
    """Seconds to wait after a 429: ``Retry-After`` (seconds), 1 s when absent, at most
    ``MAX_THROTTLE_DELAY``."""
    try:
        delay = float(retry_after) if retry_after is not None else 1.0
    except ValueError:
        delay = 1.0
    return min(max(delay, 0.0), MAX_THROTTLE_DELAY)


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _error(resp: httpx.Response) -> Exception:
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    return error_from_status(resp.status_code, body, retry_after=resp.headers.get("Retry-After"))


def _watch_event(line: str) -> WatchEvent:
    try:
        raw = json.loads(line)
        kind = raw["type"]
        obj = raw["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiUnreachable(f"malformed watch event {line[:200]!r}: {exc}") from exc
    if kind == "ERROR":
        code = obj.get("code") if isinstance(obj, dict) else None
        raise error_from_status(code if isinstance(code, int) else 500, obj)
    if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise ApiUnreachable(f"unknown watch event type {kind!r}")
    return WatchEvent(kind, obj)
