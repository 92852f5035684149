"""HTTP handlers: turn aiohttp requests into :class:`~.api.Api` calls and Status answers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kuryr_k8s.sandbox.kubeapi import (
    auth,
    decode,
    discovery,
    errors,
    escalation,
    protobuf,
    routing,
    tables,
)
from kuryr_k8s.sandbox.kubeapi.api import Api
from kuryr_k8s.sandbox.kubeapi.options import DeleteOptions, WriteOptions
from kuryr_k8s.sandbox.kubeapi.resources import REVIEWS, ResourceType
from kuryr_k8s.sandbox.kubeapi.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from kuryr_k8s.sandbox.kubeapi.store import Watcher
from kuryr_k8s.sandbox.kubeapi.watch import WatchParams, WatchStream, parse_since

Obj = dict[str, Any]
LOG = logging.getLogger(__name__)

_TRUE = ("1", "true", "True")
_BOUND = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def _warning(text: str) -> str:
    """A ``Warning: 299 - "..."`` value; control and non-ASCII characters escaped."""
    return f'299 - "{json.dumps(text)[1:-1]}"'


def json_response(body: Obj, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {"Warning": ", ".join(_warning(w) for w in warnings)} if warnings else None
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(exc: errors.ApiError) -> web.Response:
    return json_response(exc.status(), exc.code)


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def _page_not_found() -> web.Response:
    return web.Response(
        status=404, text="404 page not found\n", content_type="text/plain", charset="utf-8"
    )


def _exact_rv(rv: str | None, match: str | None) -> int | None:
    """The resourceVersion of an ``Exact`` list (None for any other list)."""
    if match != "Exact" or not rv:
        return None
    try:
        return int(rv)
    except ValueError as exc:
        raise errors.bad_request(f"invalid resource version: {rv}") from exc


def _decode_protobuf(raw: bytes) -> Obj:
    try:
        return protobuf.decode(raw)
    except protobuf.UnsupportedKind as exc:
        raise errors.unsupported_media(
            protobuf.CONTENT_TYPE, ["application/json", "application/yaml"]
        ) from exc
    except protobuf.ProtobufError as exc:
        raise errors.bad_request(f"error decoding protobuf body: {exc}") from exc


def request_user(request: web.Request) -> auth.User:
    """Who sent ``request`` (set by the server's authentication middleware)."""
    user = request.get(USER_KEY)
    return user if isinstance(user, auth.User) else auth.ADMIN


USER_KEY = web.RequestKey("kuryr-kubeapi-user", auth.User)


@dataclass
class Handlers:
    api: Api
    bookmark_interval: float = 60.0
    address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.tokens = auth.Tokens(self.api.store)
        self.authorizer = auth.Authorizer(self.api.store)

    # ------------------------------------------------------------ entry

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except errors.ApiError as exc:
            return error_response(exc)
        except Exception as exc:
            LOG.exception("internal error on %s %s", request.method, request.path)
            return error_response(errors.ApiError(500, "InternalError", f"internal error: {exc}"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        target = routing.parse(request.path)
        if isinstance(target, routing.DiscoveryTarget):
            if request.method != "GET":
                raise errors.method_not_allowed()
            accept = request.headers.get("Accept", "")
            if (
                target.version is None
                and target.group in ("", None)
                and discovery.wants_aggregated(accept)
            ):
                doc = discovery.aggregated(self.api.registry, core=target.group == "")
                return web.Response(
                    body=json.dumps(doc, separators=(",", ":")).encode(),
                    headers={"Content-Type": discovery.AGGREGATED},
                )
            return json_response(self._discovery(target))
        rt = self.api.registry.lookup(target.group, target.version, target.plural)
        if rt is None and target.version not in self.api.registry.group_versions().get(
            target.group, []
        ):
            return _page_not_found()  # no such group/version: the Go mux's plain 404
        if rt is None or (target.namespace is not None and not rt.namespaced):
            raise errors.no_such_resource()
        if target.subresource and target.subresource not in rt.subresources:
            raise errors.no_such_resource()
        return await self._resource(request, rt, target)

    def _discovery(self, target: routing.DiscoveryTarget) -> Obj:
        registry = self.api.registry
        if target.group == "" and target.version is None:
            return discovery.api_versions(self.address)
        if target.group is None:
            return discovery.api_group_list(registry)
        found = (
            discovery.api_group(registry, target.group)
            if target.version is None
            else discovery.resource_list(registry, target.group, target.version)
        )
        if found is None:
            raise errors.no_such_resource()
        return found

    async def _resource(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.StreamResponse:
        method, name, sub = request.method, target.name, target.subresource
        if rt.route in REVIEWS or sub == "token":
            return await self._review_or_token(request, rt, target)
        if rt.key == "/bindings":
            if method != "POST" or name:
                raise errors.method_not_allowed()
            body = await self._body(request)
            meta = body.get("metadata") if isinstance(body, dict) else None
            pod = meta.get("name") if isinstance(meta, dict) else None
            self.api.bind(target.namespace or "", str(pod or ""), body)
            return json_response(_BOUND, 201)
        if method == "GET" and not name:
            return await self._list_or_watch(request, rt, target)
        if method == "GET" and sub in ("", "status"):
            obj = self.api.get(rt, target.namespace or "", name)
            return self._object_response(request, rt, target.version, obj)
        if method == "POST" and not name:
            return await self._create(request, rt, target)
        if method == "POST" and sub == "binding":
            body = await self._body(request)
            meta = body.get("metadata") if isinstance(body, dict) else None
            if isinstance(meta, dict) and meta.get("name") and meta["name"] != name:
                raise errors.bad_request("name in URL does not match name in Binding object")
            self.api.bind(target.namespace or "", name, body)
            return json_response(_BOUND, 201)
        if method == "PUT" and name and sub in ("", "status", "finalize"):
            return await self._replace(request, rt, target)
        if method == "PATCH" and name and sub in ("", "status"):
            return await self._patch(request, rt, target)
        if method == "DELETE" and not sub:
            return await self._delete(request, rt, target)
        raise errors.method_not_allowed()

    async def _review_or_token(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.Response:
        """TokenRequest and the self reviews: create-only, answered, never stored."""
        if request.method != "POST" or (target.name and target.subresource != "token"):
            raise errors.method_not_allowed()
        body = await self._body(request)
        user = request_user(request)
        if target.subresource == "token":
            sa = self.api.require(rt, target.namespace or "", target.name)
            return json_response(self.tokens.issue(sa, body), 201)
        if rt.route == REVIEWS[0]:
            return json_response(auth.self_subject_access_review(self.authorizer, user, body), 201)
        return json_response(auth.self_subject_review(user), 201)

    def _no_escalation(
        self, request: web.Request, rt: ResourceType, target: routing.Target, body: Any
    ) -> None:
        """RBAC objects may not grant more than their writer holds (create and update)."""
        if rt.group == auth.RBAC_GROUP:
            escalation.check(
                self.authorizer, request_user(request), rt.plural, target.namespace or "", body
            )

    # ------------------------------------------------------------ helpers

    async def _raw(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > decode.MAX_BODY:
            raise errors.too_large(decode.MAX_BODY)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > decode.MAX_BODY:
                raise errors.too_large(decode.MAX_BODY)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _body(self, request: web.Request) -> Any:
        raw = await self._raw(request)
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if "yaml" in ctype:
            return decode.parse_yaml_or_json(raw)
        if ctype == protobuf.CONTENT_TYPE:
            return _decode_protobuf(raw)
        if ctype not in ("application/json", "", "*/*"):
            raise errors.unsupported_media(ctype, ["application/json", "application/yaml"])
        return decode.parse_json(raw)

    def _write_options(self, request: web.Request) -> WriteOptions:
        q = request.query
        return WriteOptions(
            dry_run=q.get("dryRun") == "All", strict=q.get("fieldValidation") == "Strict"
        )

    def _object_response(
        self,
        request: web.Request,
        rt: ResourceType,
        version: str,
        obj: Obj,
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        obj = self.api.present(rt, version, obj)
        if wants_table(request):
            include = request.query.get("includeObject", "Metadata")
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return json_response(tables.to_table(rt, version, [obj], meta, include), status)
        return json_response(obj, status, warnings)

    # ------------------------------------------------------------ verbs

    async def _create(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.Response:
        if rt.namespaced and target.namespace is None:
            raise errors.method_not_allowed()
        body = await self._body(request)
        self._no_escalation(request, rt, target, body)
        opts = self._write_options(request)
        obj = self.api.create(rt, target.version, target.namespace or "", body, opts)
        return self._object_response(request, rt, target.version, obj, 201, opts.warnings)

    async def _replace(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.Response:
        body = await self._body(request)
        if target.subresource == "finalize":
            obj = self.api.finalize_namespace(target.name, body)
            return self._object_response(request, rt, target.version, obj)
        self._no_escalation(request, rt, target, body)
        opts = self._write_options(request)
        existed = self.api.store.get(rt.key, target.namespace or "", target.name) is not None
        obj = self.api.replace(
            rt, target.version, target.namespace or "", target.name, body, target.subresource, opts
        )
        code = 200 if existed else 201  # a PUT that created (leases, endpoints, events)
        return self._object_response(request, rt, target.version, obj, code, opts.warnings)

    async def _patch(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.Response:
        raw = await self._raw(request)
        opts = self._write_options(request)
        existed = self.api.store.get(rt.key, target.namespace or "", target.name) is not None
        obj = self.api.patch(
            rt,
            target.version,
            target.namespace or "",
            target.name,
            request.headers.get("Content-Type", ""),
            raw,
            target.subresource,
            opts,
            request.query.get("fieldManager", ""),
        )
        code = 200 if existed else 201
        return self._object_response(request, rt, target.version, obj, code, opts.warnings)

    def _delete_options(self, request: web.Request, body: Any) -> DeleteOptions:
        q = request.query
        body = body if isinstance(body, dict) else {}
        pre = body.get("preconditions") if isinstance(body.get("preconditions"), dict) else {}
        policy = body.get("propagationPolicy") or q.get("propagationPolicy")
        if body.get("orphanDependents") is True or q.get("orphanDependents") in _TRUE:
            policy = policy or "Orphan"
        if policy not in (None, "Orphan", "Foreground", "Background"):
            raise errors.bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
        grace = body.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
        try:
            grace_value = None if grace is None else int(grace)
        except (TypeError, ValueError) as exc:
            raise errors.bad_request(f"invalid gracePeriodSeconds: {grace!r}") from exc
        dry = body.get("dryRun") == ["All"] or q.get("dryRun") == "All"
        return DeleteOptions(policy, grace_value, pre.get("uid"), pre.get("resourceVersion"), dry)

    async def _delete(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.Response:
        raw = await self._raw(request)
        body = decode.parse_json(raw) if raw.strip() else {}
        opts = self._delete_options(request, body)
        ns = target.namespace or ""
        if not target.name:
            return await self._delete_collection(request, rt, target, opts)
        obj = self.api.delete(rt, ns, target.name, opts)
        if obj["metadata"].get("deletionTimestamp"):
            # The object while its deletion is pending (pods always, even with grace 0);
            # a Status when it is gone at once, custom resources too (recorded).
            return self._object_response(request, rt, target.version, obj)
        details = {"name": target.name, "group": rt.group, "kind": rt.plural}
        if not rt.group:
            del details["group"]
        details["uid"] = obj["metadata"]["uid"]
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
        )

    async def _delete_collection(
        self, request: web.Request, rt: ResourceType, target: routing.Target, opts: DeleteOptions
    ) -> web.Response:
        if rt.key == "/namespaces":
            raise errors.method_not_allowed()
        labels, fields = self._selectors(request)
        listed = self.api.list_objects(rt, target.namespace, labels, fields)
        deleted = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            try:
                self.api.delete(rt, meta.get("namespace", ""), meta["name"], opts)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
                continue
            deleted.append(obj)  # as listed before the delete, like a real server
        if rt.crd is None:
            deleted = [
                {k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in deleted
            ]
        listed["items"] = deleted
        return json_response(listed)

    def _selectors(self, request: web.Request) -> tuple[Any, Any]:
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            fields = parse_field_selector(request.query.get("fieldSelector"))
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc
        return labels, fields

    async def _list_or_watch(
        self, request: web.Request, rt: ResourceType, target: routing.Target
    ) -> web.StreamResponse:
        q = request.query
        labels, fields = self._selectors(request)
        if target.watch_path or q.get("watch") in _TRUE:
            return await self._watch(request, rt, target, labels, fields)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError as exc:
            raise errors.bad_request(f"invalid limit: {q.get('limit')}") from exc
        listed = self.api.list_objects(
            rt,
            target.namespace,
            labels,
            fields,
            max(limit, 0),
            q.get("continue") or None,
            exact=_exact_rv(q.get("resourceVersion"), q.get("resourceVersionMatch")),
        )
        items = [self.api.present(rt, target.version, o) for o in listed["items"]]
        if wants_table(request):
            include = q.get("includeObject", "Metadata")
            return json_response(
                tables.to_table(rt, target.version, items, listed["metadata"], include)
            )
        if rt.crd is None:
            # Typed lists of built-in kinds carry no kind/apiVersion on their items.
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        listed["items"] = items
        if rt.crd is not None:
            listed["apiVersion"] = f"{rt.group}/{target.version}"
        return json_response(listed)

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        target: routing.Target,
        labels: Any,
        fields: Any,
    ) -> web.StreamResponse:
        q = request.query
        self.api.check_fields(rt, fields)
        send_initial = q.get("sendInitialEvents") in _TRUE
        if send_initial and q.get("resourceVersionMatch") != "NotOlderThan":
            raise errors.invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                [
                    errors.forbidden_field(
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    )
                ],
            )
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        except ValueError as exc:
            raise errors.bad_request("invalid timeoutSeconds") from exc
        params = WatchParams(
            since=parse_since(q.get("resourceVersion"), send_initial),
            timeout=timeout,
            bookmarks=q.get("allowWatchBookmarks") in _TRUE,
            initial_events_end=send_initial,
            bookmark_interval=self.bookmark_interval,
        )
        watcher = Watcher(rt.key, target.namespace if rt.namespaced else None, labels, fields)
        table = wants_table(request)
        include = q.get("includeObject", "Metadata")
        version = target.version

        sent_headers: list[bool] = []

        def transform(kind: str, obj: Obj) -> Obj:
            obj = self.api.present(rt, version, obj)
            if not table or kind in ("BOOKMARK", "ERROR"):
                return obj
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            # Like a real server, only the first Table event of a watch has the columns.
            headers = not sent_headers
            sent_headers.append(True)
            return tables.to_table(rt, version, [obj], meta, include, headers=headers)

        stream = WatchStream(self.api.store, rt, watcher, params, transform)
        return await stream.serve(request)
