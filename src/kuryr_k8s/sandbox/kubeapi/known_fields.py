"""Field validation for built-in kinds: the fields Go's decoder knows, where we list them.

A real server drops unknown fields while decoding into the Go types, and reports them as
``Warning`` headers (``fieldValidation=Warn``, the default) or rejects the request
(``Strict``, which kubectl sends). We list the known fields of the object envelopes,
``ObjectMeta``, ``PodSpec`` and ``Container``: the places typos usually land. Below those,
everything is kept, so a field we do not list is never lost.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
Tree = dict[str, Any]
"""field name -> subtree (a dict), ``None`` (opaque), or ``[subtree]`` for lists of objects."""

_META: Tree = dict.fromkeys(
    [
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ]
)
_CONTAINER: Tree = dict.fromkeys(
    [
        "name",
        "image",
        "command",
        "args",
        "workingDir",
        "ports",
        "envFrom",
        "env",
        "resources",
        "resizePolicy",
        "restartPolicy",
        "volumeMounts",
        "volumeDevices",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "imagePullPolicy",
        "securityContext",
        "stdin",
        "stdinOnce",
        "tty",
        "targetContainerName",
    ]
)
_POD_SPEC: Tree = {
    **dict.fromkeys(
        [
            "volumes",
            "restartPolicy",
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "dnsPolicy",
            "nodeSelector",
            "serviceAccountName",
            "serviceAccount",
            "automountServiceAccountToken",
            "nodeName",
            "hostNetwork",
            "hostPID",
            "hostIPC",
            "shareProcessNamespace",
            "securityContext",
            "imagePullSecrets",
            "hostname",
            "subdomain",
            "affinity",
            "schedulerName",
            "tolerations",
            "hostAliases",
            "priorityClassName",
            "priority",
            "dnsConfig",
            "readinessGates",
            "runtimeClassName",
            "enableServiceLinks",
            "preemptionPolicy",
            "overhead",
            "topologySpreadConstraints",
            "setHostnameAsFQDN",
            "os",
            "hostUsers",
            "schedulingGates",
            "resourceClaims",
            "resources",
        ]
    ),
    "containers": [_CONTAINER],
    "initContainers": [_CONTAINER],
    "ephemeralContainers": [_CONTAINER],
}


def _envelope(*fields: str, **trees: Any) -> Tree:
    return {"apiVersion": None, "kind": None, "metadata": _META, **dict.fromkeys(fields), **trees}


KNOWN: dict[str, Tree] = {
    "/pods": _envelope("status", spec=_POD_SPEC),
    "/configmaps": _envelope("data", "binaryData", "immutable"),
    "/secrets": _envelope("data", "stringData", "type", "immutable"),
    "/services": _envelope("spec", "status"),
    "/namespaces": _envelope("spec", "status"),
    "/nodes": _envelope("spec", "status"),
    "/endpoints": _envelope("subsets"),
    "/serviceaccounts": _envelope("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    "/events": _envelope(
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "series",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ),
    "discovery.k8s.io/endpointslices": _envelope("addressType", "endpoints", "ports"),
    "networking.k8s.io/networkpolicies": _envelope("spec", "status"),
    "coordination.k8s.io/leases": _envelope("spec"),
    "apiextensions.k8s.io/customresourcedefinitions": _envelope("spec", "status"),
}


def prune_unknown(key: str, obj: Obj) -> tuple[Obj, list[str]]:
    """Drop fields the Go types of ``key`` would not decode; returns the dropped paths."""
    tree = KNOWN.get(key)
    if tree is None:
        return obj, []
    dropped: list[str] = []
    return _prune(obj, tree, "", dropped), dropped


def _prune(value: Any, tree: Tree, path: str, dropped: list[str]) -> Any:
    if not isinstance(value, dict):
        return value
    out: Obj = {}
    for key, item in value.items():
        sub_path = f"{path}.{key}" if path else key
        if key not in tree:
            dropped.append(sub_path)
            continue
        sub = tree[key]
        if isinstance(sub, dict):
            out[key] = _prune(item, sub, sub_path, dropped)
        elif isinstance(sub, list) and isinstance(item, list):
            out[key] = [_prune(v, sub[0], f"{sub_path}[{i}]", dropped) for i, v in enumerate(item)]
        else:
            out[key] = item
    return out
