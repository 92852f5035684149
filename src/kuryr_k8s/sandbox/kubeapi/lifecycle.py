"""Deletion (preconditions, propagation, finalizers, graceful pod deletion), pod binding and
namespace finalization: the verbs that move objects through their life cycle."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.defaults import crd_terminating_condition
from kuryr_k8s.sandbox.kubeapi.options import DeleteOptions, now, parse_timestamp, timestamp
from kuryr_k8s.sandbox.kubeapi.resources import ResourceType

if TYPE_CHECKING:
    from kuryr_k8s.sandbox.kubeapi.api import Api

Obj = dict[str, Any]

IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
NO_GRACE_FIELD = ("/namespaces", "apiextensions.k8s.io/customresourcedefinitions")
"""Kinds whose own delete sets only ``deletionTimestamp`` (no grace period field)."""
PROPAGATION_FINALIZERS = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
"""Added by a CRD's DELETE (as the apiextensions registry does), never while it lives."""


def _check_preconditions(rt: ResourceType, meta: Obj, opts: DeleteOptions) -> None:
    checks = (
        ("UID", opts.uid, meta["uid"], "deleted and then recreated"),
        ("ResourceVersion", opts.resource_version, meta["resourceVersion"], "modified"),
    )
    for what, wanted, actual, hint in checks:
        if wanted and wanted != actual:
            raise errors.ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.kind} "{meta["name"]}": the {what} in the '
                f"precondition ({wanted}) does not match the {what} in record ({actual}). The "
                f"object might have been {hint}",
                {"name": meta["name"], "kind": rt.kind},
            )


def delete(api: Api, rt: ResourceType, namespace: str, name: str, opts: DeleteOptions) -> Obj:
    """DELETE one object: mark it (finalizers, grace period, namespaces) or remove it."""
    old = api.require(rt, namespace, name)
    meta = old["metadata"]
    if rt.key == "/namespaces" and name in IMMORTAL_NAMESPACES:
        raise errors.forbidden("namespaces", "", name, "this namespace may not be deleted")
    _check_preconditions(rt, meta, opts)
    grace = grace_period(rt, old, opts)
    finalizers = list(meta.get("finalizers") or [])
    extra = PROPAGATION_FINALIZERS.get(opts.propagation or "")
    if extra and extra not in finalizers and not meta.get("deletionTimestamp"):
        finalizers.append(extra)
    crd_alive = rt.key == NO_GRACE_FIELD[1] and not meta.get("deletionTimestamp")
    if crd_alive and CRD_FINALIZER not in finalizers:
        finalizers.append(CRD_FINALIZER)
    if rt.key in ("/namespaces", "/pods") or finalizers or grace:
        # Pods always take the graceful path, even with a grace period of 0: a real server
        # writes deletionTimestamp first (MODIFIED), then removes the pod (DELETED).
        return _mark_deleted(api, rt, old, finalizers, grace, opts.dry_run)
    if opts.dry_run:
        return old
    return api.commit_remove(rt, old)


def grace_period(rt: ResourceType, obj: Obj, opts: DeleteOptions) -> int:
    """Seconds a pod gets to terminate: 0 unless it is bound and still running."""
    if rt.key != "/pods":
        return 0
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = opts.grace if opts.grace is not None else spec.get("terminationGracePeriodSeconds")
    grace = 30 if grace is None else max(int(grace), 0)
    current = obj["metadata"].get("deletionGracePeriodSeconds")
    if current is not None and grace > current:
        return int(current)
    return grace


def _mark_deleted(
    api: Api, rt: ResourceType, old: Obj, finalizers: list[str], grace: int, dry_run: bool
) -> Obj:
    meta = old["metadata"]
    if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", 0) <= grace:
        return old  # already terminating, and not sooner than asked
    new = copy.deepcopy(old)
    new_meta = new["metadata"]
    when = now() + timedelta(seconds=grace)
    if meta.get("deletionTimestamp"):
        when = min(when, parse_timestamp(meta["deletionTimestamp"]))
    new_meta["deletionTimestamp"] = timestamp(when)
    if rt.key not in NO_GRACE_FIELD:
        new_meta["deletionGracePeriodSeconds"] = grace
    first = not meta.get("deletionTimestamp")
    if first and "generation" in meta and rt.key not in NO_GRACE_FIELD:
        new_meta["generation"] = meta["generation"] + 1  # as rest.BeforeDelete does
    if first and rt.key == "apiextensions.k8s.io/customresourcedefinitions":
        conditions = (new.get("status") or {}).get("conditions")
        if conditions:
            conditions.append(crd_terminating_condition(timestamp()))
    if finalizers:
        new_meta["finalizers"] = finalizers
    if rt.key == "/namespaces":
        new.setdefault("status", {})["phase"] = "Terminating"
    if dry_run:
        return new
    return api.commit_update(rt, old, new, mark=True)


def bind(api: Api, namespace: str, name: str, body: Any) -> None:
    """POST pods/binding: set ``spec.nodeName`` and ``PodScheduled=True``, once."""
    pods = api.registry.get("/pods")
    assert pods is not None
    if not isinstance(body, dict) or not isinstance(body.get("target"), dict):
        raise errors.invalid("Binding", "", name, [errors.required("target")])
    target = body["target"].get("name")
    if not isinstance(target, str) or not target:
        raise errors.invalid("Binding", "", name, [errors.required("target.name")])
    old = api.require(pods, namespace, name)
    meta, spec = old["metadata"], old.get("spec") or {}
    if meta.get("deletionTimestamp"):
        raise errors.conflict(
            "pods/binding", "", name, f"pod {name} is being deleted, cannot be assigned to a host"
        )
    if spec.get("nodeName"):
        raise errors.conflict(
            "pods/binding",
            "",
            name,
            f'pod {name} is already assigned to node "{spec["nodeName"]}"',
        )
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = target
    conditions = new.setdefault("status", {}).setdefault("conditions", [])
    conditions[:] = [c for c in conditions if c.get("type") != "PodScheduled"]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": timestamp(),
        }
    )
    api.commit_update(pods, old, new)


def finalize_namespace(api: Api, name: str, body: Any) -> Obj:
    """PUT namespaces/{name}/finalize: replace ``spec.finalizers``."""
    nss = api.registry.get("/namespaces")
    assert nss is not None
    old = api.require(nss, "", name)
    spec = body.get("spec") if isinstance(body, dict) else None
    fins = spec.get("finalizers") if isinstance(spec, dict) else None
    if fins is not None and not isinstance(fins, list):
        raise errors.bad_request("spec.finalizers must be a list")
    new = copy.deepcopy(old)
    new.setdefault("spec", {})["finalizers"] = list(fins or [])
    if new == old:
        return old
    return api.commit_update(nss, old, new)
