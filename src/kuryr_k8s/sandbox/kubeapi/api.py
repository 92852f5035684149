"""REST semantics on top of the store: create, get, list, update, patch, delete, bind.

This module is transport-free (the HTTP layer is :mod:`.server`): every method takes
decoded arguments and returns the object (or raises :class:`~.errors.ApiError`).
The rules follow the generic registry of the kube-apiserver: server-managed metadata,
``generation`` bumps on spec changes only, optimistic concurrency on ``resourceVersion``,
status subresources, finalizers and ``deletionTimestamp``, graceful pod deletion.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import uuid
from typing import Any

from kuryr_k8s.sandbox.kubeapi import (
    decode,
    errors,
    events,
    known_fields,
    lifecycle,
    patch,
    rbac_validation,
    schema,
    validation,
)
from kuryr_k8s.sandbox.kubeapi.defaults import DEFAULTERS, IpAllocator
from kuryr_k8s.sandbox.kubeapi.options import DeleteOptions, WriteOptions, timestamp
from kuryr_k8s.sandbox.kubeapi.resources import Registry, ResourceType, crd_resource_type
from kuryr_k8s.sandbox.kubeapi.selectors import FieldSelector, LabelSelector
from kuryr_k8s.sandbox.kubeapi.store import Store, field_value

Obj = dict[str, Any]

CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions"
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj["metadata"]
    return meta


_OMIT_EMPTY = ("labels", "annotations", "finalizers", "ownerReferences", "managedFields")
CREATE_ON_UPDATE = ("/endpoints", "/events", "coordination.k8s.io/leases")
"""Kinds whose PUT creates a missing object (``AllowCreateOnUpdate`` in their strategy)."""
MICROTIME_FIELDS = {
    "coordination.k8s.io/leases": ("spec.acquireTime", "spec.renewTime"),
    "/events": ("eventTime",),
}
"""``MicroTime`` fields: the real decoder wants exactly six fractional digits."""


def omit_empty_meta(obj: Obj) -> None:
    """Go's ``omitempty``: empty maps and lists in ``ObjectMeta`` are not stored."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in _OMIT_EMPTY:
            if key in meta and not meta[key]:
                del meta[key]


def _check_microtimes(rt: ResourceType, obj: Obj) -> None:
    for path in MICROTIME_FIELDS.get(rt.key, ()):
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and not _MICROTIME.fullmatch(node):
            detail = (
                'cannot parse "Z" as ".000000"'
                if node.endswith("Z")
                else 'cannot parse "" as ".000000"'
            )
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: parsing '
                f'time "{node}" as "2006-01-02T15:04:05.000000Z07:00": {detail}'
            )


_MICROTIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})")


def _pod_ips(pod: Obj) -> None:
    """The v1 conversion of ``podIP``/``podIPs`` (and ``hostIP``/``hostIPs``): when both are
    given and differ, the single field wins; a single field alone fills the list."""
    status = pod.get("status")
    if not isinstance(status, dict):
        return
    for one, many in (("podIP", "podIPs"), ("hostIP", "hostIPs")):
        ip, ips = status.get(one), status.get(many)
        if not isinstance(ip, str) or not ip:
            continue
        first = ips[0] if isinstance(ips, list) and ips else None
        if not isinstance(first, dict) or first.get("ip") != ip:
            status[many] = [{"ip": ip}]


def _strip_for_generation(rt: ResourceType, obj: Obj) -> Obj:
    out = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    if rt.has_status:
        out.pop("status", None)
    return out


class Api:
    """The REST verbs over one :class:`Store` and :class:`Registry`."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.ips = IpAllocator()

    # ------------------------------------------------------------ helpers

    def require(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self.store.get("/namespaces", "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if _meta(ns).get("deletionTimestamp"):
            exc = errors.forbidden(
                rt.plural,
                rt.group,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )
            exc.details["causes"] = [
                errors.Cause(
                    "NamespaceTerminating",
                    "metadata.namespace",
                    f"namespace {namespace} is being terminated",
                ).render()
            ]
            raise exc

    def _check_type_meta(self, rt: ResourceType, version: str, body: Obj) -> None:
        want = f"{rt.group}/{version}" if rt.group else version
        got_version = body.get("apiVersion")
        if got_version and got_version != want:
            raise errors.bad_request(
                f"the API version in the data ({got_version}) does not match the expected API "
                f"version ({want})"
            )
        if body.get("kind") and body["kind"] != rt.kind:
            raise errors.bad_request(
                f'{body["kind"]} in version "{version}" cannot be handled as a {rt.kind}: '
                f"the kind in the data ({body['kind']}) does not match the expected kind "
                f"({rt.kind})"
            )

    def decode(self, rt: ResourceType, version: str, namespace: str, body: Any) -> Obj:
        obj = copy.deepcopy(decode.check_shape(rt, body))
        self._check_type_meta(rt, version, obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if rt.group == events.GROUP:
            obj = events.to_core(obj)
            obj["apiVersion"] = "v1"
        if rt.key == "/events":
            events.core_defaults(obj)
        if rt.key == "/pods":
            _pod_ips(obj)
        if rt.key in rbac_validation.DEFAULTERS:  # v1 defaults, applied when decoding
            rbac_validation.DEFAULTERS[rt.key](obj)
        _check_microtimes(rt, obj)
        omit_empty_meta(obj)
        return obj

    def present(self, rt: ResourceType, version: str, obj: Obj) -> Obj:
        """The object as served in ``version`` (custom resources are stored once)."""
        wanted = f"{rt.group}/{version}" if rt.group else version
        if rt.group == events.GROUP:
            return {**events.to_v1(obj), "apiVersion": wanted}
        if obj.get("apiVersion") == wanted:
            return obj
        out = dict(obj)
        out["apiVersion"] = wanted
        return out

    def _invalid(self, rt: ResourceType, name: str, causes: list[errors.Cause]) -> None:
        if causes:
            raise errors.invalid(rt.kind, rt.group, name, causes)

    def _field_validation(self, dropped: list[str], opts: WriteOptions) -> None:
        if dropped and opts.strict:
            raise errors.bad_request(
                "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in dropped)
            )
        opts.warnings += [f'unknown field "{p}"' for p in dropped]

    def _custom_admit(self, rt: ResourceType, obj: Obj, opts: WriteOptions) -> Obj:
        body = validation.custom_schema(rt)
        if body is None:
            return obj
        pruned, dropped = schema.prune(obj, body)
        self._field_validation(dropped, opts)
        return dict(schema.apply_defaults(pruned, body))

    def _admit(self, rt: ResourceType, obj: Obj, old: Obj | None, opts: WriteOptions) -> Obj:
        if rt.crd is not None:
            obj = self._custom_admit(rt, obj, opts)
        else:
            obj, dropped = known_fields.prune_unknown(rt.key, obj)
            self._field_validation(dropped, opts)
        self._invalid(rt, _meta(obj).get("name", ""), validation.validate(rt, obj, old))
        if rt.group == events.GROUP and old is None:
            causes = events.validate_v1_create(obj)
            if causes:
                raise errors.invalid(rt.kind, "", _meta(obj).get("name", ""), causes)
        return obj

    # ------------------------------------------------------------ reads

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        return self.require(rt, namespace, name)

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int = 0,
        cont: str | None = None,
        exact: int | None = None,
    ) -> Obj:
        self.check_fields(rt, fields)
        start, list_rv = _decode_continue(cont) if cont else (None, self.store.rv)
        source = self.store.iter(rt.key, namespace if rt.namespaced else None)
        if exact is not None and exact != self.store.rv:
            source = iter(self._snapshot_at(rt, namespace if rt.namespaced else None, exact))
            list_rv = exact
        items: list[Obj] = []
        remaining = 0
        for obj in source:
            meta = obj["metadata"]
            if start is not None and (meta.get("namespace", ""), meta["name"]) <= start:
                continue
            if not (labels.matches(meta.get("labels")) and _fields_match(fields, obj)):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
        out_meta: Obj = {"resourceVersion": str(list_rv)}
        if remaining:
            last = items[-1]["metadata"]
            out_meta["continue"] = _encode_continue(
                (last.get("namespace", ""), last["name"]), list_rv
            )
            if labels.empty and not fields.requirements:
                out_meta["remainingItemCount"] = remaining  # not known with selectors
        list_kind = f"{rt.kind}List"
        if rt.crd is not None:
            list_kind = rt.crd["spec"]["names"].get("listKind") or list_kind
        return {
            "kind": list_kind,
            "apiVersion": rt.api_version,
            "metadata": out_meta,
            "items": items,
        }

    def _snapshot_at(self, rt: ResourceType, namespace: str | None, rv: int) -> list[Obj]:
        """The objects as they were at ``rv`` (``resourceVersionMatch=Exact``), rebuilt by
        undoing the history; 410 when ``rv`` is older than the window, as a compacted etcd."""
        if rv < self.store.window_start or rv > self.store.rv:
            raise errors.gone("The resourceVersion for the provided list is too old.")
        state = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in self.store.iter(rt.key, namespace)
        }
        for ev in reversed(list(self.store.events_after(rv))):
            if ev.key != rt.key or (namespace is not None and ev.namespace != namespace):
                continue
            ref = (ev.namespace, ev.obj["metadata"]["name"])
            if ev.type == "ADDED":
                state.pop(ref, None)
            elif ev.old is not None:
                state[ref] = ev.old
        return [state[k] for k in sorted(state)]

    def check_fields(self, rt: ResourceType, fields: FieldSelector) -> None:
        for path in sorted(fields.paths()):
            if path not in rt.label_names:
                raise errors.bad_request(f"field label not supported: {path}")

    # ------------------------------------------------------------ create

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
            if self.store.get(rt.key, namespace, name) is None:
                return name
        raise errors.ApiError(500, "AlreadyExists", "could not generate a unique name")

    def create(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        body: Any,
        opts: WriteOptions | None = None,
    ) -> Obj:
        opts = opts or WriteOptions()
        obj = self.decode(rt, version, namespace, body)
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(rt, ns, meta["generateName"])
        if not meta.get("name"):
            self._invalid(
                rt,
                "",
                [
                    errors.Cause(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        self._check_namespace(rt, ns, meta["name"])
        for key in _SERVER_META:
            meta.pop(key, None)
        if rt.has_status and rt.key != "/nodes":
            obj.pop("status", None)
        obj = self._admit(rt, obj, None, opts)
        self._check_create_rules(rt, obj)
        if self.store.get(rt.key, ns, meta["name"]) is not None:
            raise errors.already_exists(rt.plural, rt.group, meta["name"])
        defaulter = DEFAULTERS.get(rt.key)
        if defaulter is not None and not (opts.dry_run and rt.key == "/services"):
            defaulter(obj, self.ips, None)
        return obj if opts.dry_run else self.commit_create(rt, obj)

    def _check_create_rules(self, rt: ResourceType, obj: Obj) -> None:
        """Rules that need the store: taken cluster IPs, names owned by built-in kinds,
        custom resources of a terminating CRD."""
        name = obj["metadata"]["name"]
        if rt.key == "/services":
            ip = (obj.get("spec") or {}).get("clusterIP")
            if ip and ip != "None" and self.ips.used(ip):
                self._invalid(
                    rt,
                    name,
                    [
                        errors.invalid_value(
                            "spec.clusterIPs",
                            ip,
                            f"failed to allocate IP {ip}: provided IP is already allocated",
                        )
                    ],
                )
        if rt.key == CRD_KEY:
            self._invalid(rt, name, validation.crd_create_rules(obj, self.registry))
        if rt.crd is not None:
            crd = self.store.get(CRD_KEY, "", f"{rt.plural}.{rt.group}")
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                raise errors.forbidden(
                    rt.plural,
                    rt.group,
                    name,
                    "create not allowed while custom resource definition is terminating",
                )

    def commit_create(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp()
        meta["resourceVersion"] = str(self.store.next_rv())
        if rt.generation:
            meta["generation"] = 1
        if rt.key == CRD_KEY:
            self.registry.add(crd_resource_type(obj))
        self.store.put(rt.key, obj, "ADDED")
        return obj

    # ------------------------------------------------------------ update

    def replace(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        body: Any,
        subresource: str = "",
        opts: WriteOptions | None = None,
    ) -> Obj:
        opts = opts or WriteOptions()
        obj = self.decode(rt, version, namespace, body)
        if obj["metadata"].get("name") != name:
            raise errors.bad_request(
                f"the name of the object ({obj['metadata'].get('name', '')}) does not match the "
                f"name on the URL ({name})"
            )
        old = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if old is None:
            if rt.key in CREATE_ON_UPDATE and not subresource:
                obj["metadata"].pop("resourceVersion", None)
                return self.create(rt, version, namespace, obj, opts)
            raise errors.not_found(rt.plural, rt.group, name)
        if not obj["metadata"].get("resourceVersion"):
            if rt.crd is not None or rt.key == CRD_KEY:
                self._invalid(
                    rt,
                    name,
                    [
                        errors.invalid_value(
                            "metadata.resourceVersion", "0x0", "must be specified for an update"
                        )
                    ],
                )
            if rt.key == "coordination.k8s.io/leases":
                raise errors.invalid(
                    rt.plural,
                    rt.group,
                    name,
                    [
                        errors.Cause(
                            "FieldValueInvalid",
                            "metadata.resourceVersion",
                            "Invalid value: 0: must be specified for an update",
                        )
                    ],
                )
        return self.update(rt, old, obj, subresource, opts)

    def update(
        self, rt: ResourceType, old: Obj, new: Obj, subresource: str, opts: WriteOptions
    ) -> Obj:
        """Apply ``new`` over ``old`` (already decoded) with the update rules."""
        name = old["metadata"]["name"]
        want_rv = new["metadata"].get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name, errors.STALE)
        new = self._carry_over(rt, old, new, subresource)
        defaulter = DEFAULTERS.get(rt.key)
        if defaulter is not None:
            defaulter(new, self.ips, old)
        new = self._admit(rt, new, old, opts)
        self._check_finalizers(rt, old, new)
        if _same(old, new):
            return old
        if (
            _strip_for_generation(rt, old) != _strip_for_generation(rt, new)
            and "generation" in old["metadata"]
        ):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if rt.key == "/services":
            self.ips.reserve([str((new.get("spec") or {}).get("clusterIP") or "")])
        return old if opts.dry_run else self.commit_update(rt, old, new)

    def _carry_over(self, rt: ResourceType, old: Obj, new: Obj, subresource: str) -> Obj:
        meta, old_meta = new["metadata"], old["metadata"]
        for key in _SERVER_META:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if subresource == "status":
            return _status_update(rt, old, new)
        if rt.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return new

    def _check_finalizers(self, rt: ResourceType, old: Obj, new: Obj) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        before = set(old["metadata"].get("finalizers") or [])
        added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
        if added:
            quoted = ", ".join(f'"{f}"' for f in added)
            self._invalid(
                rt,
                old["metadata"]["name"],
                [
                    errors.forbidden_field(
                        "metadata.finalizers",
                        f"no new finalizers can be added if the object is being deleted, found new "
                        f"finalizers []string{{{quoted}}}",
                    )
                ],
            )

    def commit_update(self, rt: ResourceType, old: Obj, new: Obj, mark: bool = False) -> Obj:
        """Store ``new``; an object left with nothing holding its deletion goes.

        Like the real registry: the DELETED event carries the last stored state (with the
        new resourceVersion), so an update that drops the last finalizer is never seen as
        MODIFIED. Marking an object deleted (``mark``) is always written first (MODIFIED),
        even when it then goes at once (a pod deleted with a grace period of 0).
        """
        meta = new["metadata"]
        if rt.key == CRD_KEY and not meta.get("deletionTimestamp"):
            self.registry.add(crd_resource_type(new))
        if _removable(rt, new) and not mark:
            removed = self.commit_remove(rt, old)
            meta["resourceVersion"] = removed["metadata"]["resourceVersion"]
            return new
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(rt.key, new, "MODIFIED", old)
        if _removable(rt, new):
            self.commit_remove(rt, new)
        return new

    def commit_remove(self, rt: ResourceType, stored: Obj) -> Obj:
        """Remove ``stored`` (the current object); the DELETED event shows it with a new
        resourceVersion."""
        obj = copy.deepcopy(stored)
        obj["metadata"]["resourceVersion"] = str(self.store.next_rv())
        if rt.key == "/services":
            self.ips.release((obj.get("spec") or {}).get("clusterIP"))
        self.store.remove(rt.key, obj, stored)
        if rt.key == CRD_KEY:
            gone = crd_resource_type(obj).key
            self.registry.remove(gone)
            self.store.close_watchers(gone)  # like a real server tearing the storage down
        return obj

    # ------------------------------------------------------------ patch

    def patch(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        subresource: str = "",
        opts: WriteOptions | None = None,
        field_manager: str = "",
    ) -> Obj:
        opts = opts or WriteOptions()
        ctype = content_type.split(";")[0].strip().lower()
        accepted = [JSON_PATCH, MERGE, APPLY] + ([] if rt.crd is not None else [STRATEGIC])
        if ctype not in accepted:
            raise errors.unsupported_media(ctype, accepted)
        doc = decode.parse_yaml_or_json(raw) if ctype == APPLY else decode.parse_json(raw)
        old = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if ctype == APPLY:
            if not field_manager:
                raise errors.bad_request(
                    "PATCH requests with apply content type require fieldManager"
                )
            if old is None and not subresource:
                return self.create(rt, version, namespace, doc, opts)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        merged = self._apply_patch(rt, ctype, old, doc)
        new = self.decode(rt, version, namespace, merged)
        if new["metadata"].get("name") != name:
            raise errors.bad_request(
                "metadata.name: Invalid value: the name in the patch does not match the object"
            )
        return self.update(rt, old, new, subresource, opts)

    def _apply_patch(self, rt: ResourceType, ctype: str, old: Obj, doc: Any) -> Any:
        current = self.present(rt, rt.version, old)
        try:
            if ctype == JSON_PATCH:
                return patch.json_patch(current, doc)
            if ctype == STRATEGIC:
                return patch.strategic_merge_patch(current, doc)
            if not isinstance(doc, dict):
                raise patch.PatchError("merge patch must be a JSON object")
            return patch.merge_patch(current, doc)
        except patch.PatchError as exc:
            if exc.unprocessable:
                raise errors.unprocessable(str(exc)) from exc
            raise errors.bad_request(str(exc)) from exc

    # ------------------------------------------------------------ delete, binding, finalize

    def delete(
        self, rt: ResourceType, namespace: str, name: str, opts: DeleteOptions | None = None
    ) -> Obj:
        return lifecycle.delete(self, rt, namespace, name, opts or DeleteOptions())

    def bind(self, namespace: str, name: str, body: Any) -> None:
        lifecycle.bind(self, namespace, name, body)

    def finalize_namespace(self, name: str, body: Any) -> Obj:
        return lifecycle.finalize_namespace(self, name, body)


def _status_update(rt: ResourceType, old: Obj, new: Obj) -> Obj:
    """What a ``/status`` write may change.

    Custom resources and CRDs: only ``status``. Built-in kinds reset ``spec`` (and pods
    their owner references) but keep metadata changes, as their status strategies do.
    """
    if rt.crd is not None or rt.key == CRD_KEY:
        out = copy.deepcopy(old)
        if "status" in new:
            out["status"] = new["status"]
        else:
            out.pop("status", None)
        return out
    out = dict(new)
    if "spec" in old:
        out["spec"] = copy.deepcopy(old["spec"])
    else:
        out.pop("spec", None)
    if rt.key == "/pods":
        refs = old["metadata"].get("ownerReferences")
        out["metadata"] = {k: v for k, v in new["metadata"].items() if k != "ownerReferences"}
        if refs:
            out["metadata"]["ownerReferences"] = refs
    return out


def _fields_match(fields: FieldSelector, obj: Obj) -> bool:
    return fields.matches(lambda path: field_value(obj, path))


def _removable(rt: ResourceType, obj: Obj) -> bool:
    """Deleted objects go once finalizers are gone and no grace period is running."""
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if meta.get("deletionGracePeriodSeconds"):
        return False
    return not (rt.key == "/namespaces" and (obj.get("spec") or {}).get("finalizers"))


def _same(old: Obj, new: Obj) -> bool:
    def norm(obj: Obj) -> Obj:
        out = dict(obj)
        out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        return out

    return norm(old) == norm(new)


def _encode_continue(start: tuple[str, str], rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(start)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[tuple[str, str], int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return (str(data["start"][0]), str(data["start"][1])), int(data["rv"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from exc
