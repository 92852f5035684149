"""Server-side printing: ``meta.k8s.io/v1 Table`` answers for ``kubectl get``.

kubectl asks ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``; the server picks the
columns. Built-in kinds get the columns of the real printers (wide-only columns have
``priority: 1``); custom resources get ``Name`` plus their ``additionalPrinterColumns``
(or ``Age`` when they declare none).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kuryr_k8s.sandbox.kubeapi.resources import ResourceType, crd_version

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]
"""(name, type, priority, cell function)."""


def human_duration(seconds: float) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(obj: Obj) -> str:
    stamp = obj["metadata"].get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - created).total_seconds())


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _or_none(value: Any) -> str:
    return str(value) if value not in (None, "", []) else "<none>"


# ---------------------------------------------------------------- pods


def _pod_ready(obj: Obj) -> str:
    total = len(_get(obj, "spec", "containers") or [])
    ready = sum(1 for s in _get(obj, "status", "containerStatuses") or [] if s.get("ready"))
    return f"{ready}/{total}"


def _pod_status(obj: Obj) -> str:
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reason = _get(obj, "status", "reason") or _get(obj, "status", "phase") or "Unknown"
    for cs in _get(obj, "status", "containerStatuses") or []:
        state = cs.get("state") or {}
        detail = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get(
            "reason"
        )
        if detail:
            reason = detail
    return str(reason)


def _pod_restarts(obj: Obj) -> int:
    return sum(
        int(s.get("restartCount") or 0) for s in _get(obj, "status", "containerStatuses") or []
    )


_POD: list[Column] = [
    ("Ready", "string", 0, _pod_ready),
    ("Status", "string", 0, _pod_status),
    ("Restarts", "string", 0, lambda o: str(_pod_restarts(o))),
    ("Age", "string", 0, age),
    ("IP", "string", 1, lambda o: _or_none(_get(o, "status", "podIP"))),
    ("Node", "string", 1, lambda o: _or_none(_get(o, "spec", "nodeName"))),
    ("Nominated Node", "string", 1, lambda o: _or_none(_get(o, "status", "nominatedNodeName"))),
    ("Readiness Gates", "string", 1, lambda o: _or_none(_get(o, "spec", "readinessGates"))),
]

# ---------------------------------------------------------------- other built-ins


def _node_status(obj: Obj) -> str:
    status = "Unknown"
    for cond in _get(obj, "status", "conditions") or []:
        if cond.get("type") == "Ready":
            status = "Ready" if cond.get("status") == "True" else "NotReady"
    if _get(obj, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _node_info(field: str) -> Callable[[Obj], str]:
    """``printNode``: an empty node info field shows as ``<unknown>``."""
    return lambda obj: str(_get(obj, "status", "nodeInfo", field) or "<unknown>")


def _node_roles(obj: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(
        k[len(prefix) :] for k in obj["metadata"].get("labels") or {} if k.startswith(prefix)
    )
    return ",".join(roles) or "<none>"


def _node_address(kind: str) -> Callable[[Obj], str]:
    def cell(obj: Obj) -> str:
        for addr in _get(obj, "status", "addresses") or []:
            if addr.get("type") == kind:
                return str(addr.get("address"))
        return "<none>"

    return cell


def _svc_ports(obj: Obj) -> str:
    parts = []
    for p in _get(obj, "spec", "ports") or []:
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        parts.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _svc_external(obj: Obj) -> str:
    ips = [
        i.get("ip") or i.get("hostname")
        for i in _get(obj, "status", "loadBalancer", "ingress") or []
    ]
    ips += _get(obj, "spec", "externalIPs") or []
    if ips:
        return ",".join(str(i) for i in ips)
    if _get(obj, "spec", "type") == "LoadBalancer":
        return "<pending>"
    return str(_get(obj, "spec", "externalName") or "<none>")


def _endpoints(obj: Obj) -> str:
    out = []
    for subset in obj.get("subsets") or []:
        ports = subset.get("ports") or [{}]
        for addr in subset.get("addresses") or []:
            out += [
                f"{addr.get('ip')}:{p.get('port')}" if p.get("port") else str(addr.get("ip"))
                for p in ports
            ]
    return ",".join(out) or "<none>"


def _slice_endpoints(obj: Obj) -> str:
    addrs = [a for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or []]
    return ",".join(addrs) or "<unset>"


def _slice_ports(obj: Obj) -> str:
    ports = [str(p.get("port")) for p in obj.get("ports") or [] if p.get("port")]
    return ",".join(ports) or "<unset>"


def _selector(obj: Obj) -> str:
    sel = _get(obj, "spec", "podSelector") or {}
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    return ",".join(parts) or "<none>"


def _event_object(obj: Obj) -> str:
    inv = obj.get("involvedObject") or {}
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


def _event_last_seen(obj: Obj) -> str:
    stamp = (
        obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    )
    return age({"metadata": {"creationTimestamp": str(stamp)[:19] + "Z"}}) if stamp else "<unknown>"


BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "/pods": _POD,
    "/namespaces": [
        ("Status", "string", 0, lambda o: _get(o, "status", "phase") or ""),
        ("Age", "string", 0, age),
    ],
    "/nodes": [
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        ("Age", "string", 0, age),
        ("Version", "string", 0, lambda o: _get(o, "status", "nodeInfo", "kubeletVersion") or ""),
        ("Internal-IP", "string", 1, _node_address("InternalIP")),
        ("External-IP", "string", 1, _node_address("ExternalIP")),
        ("OS-Image", "string", 1, _node_info("osImage")),
        ("Kernel-Version", "string", 1, _node_info("kernelVersion")),
        ("Container-Runtime", "string", 1, _node_info("containerRuntimeVersion")),
    ],
    "/services": [
        ("Type", "string", 0, lambda o: _get(o, "spec", "type") or ""),
        ("Cluster-IP", "string", 0, lambda o: _or_none(_get(o, "spec", "clusterIP"))),
        ("External-IP", "string", 0, _svc_external),
        ("Port(s)", "string", 0, _svc_ports),
        ("Age", "string", 0, age),
        (
            "Selector",
            "string",
            1,
            lambda o: (
                ",".join(f"{k}={v}" for k, v in (_get(o, "spec", "selector") or {}).items())
                or "<none>"
            ),
        ),
    ],
    "/endpoints": [("Endpoints", "string", 0, _endpoints), ("Age", "string", 0, age)],
    "/events": [
        ("Last Seen", "string", 0, _event_last_seen),
        ("Type", "string", 0, lambda o: o.get("type") or ""),
        ("Reason", "string", 0, lambda o: o.get("reason") or ""),
        ("Object", "string", 0, _event_object),
        ("Message", "string", 0, lambda o: o.get("message") or ""),
    ],
    "/serviceaccounts": [
        ("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])),
        ("Age", "string", 0, age),
    ],
    "discovery.k8s.io/endpointslices": [
        ("AddressType", "string", 0, lambda o: o.get("addressType") or ""),
        ("Ports", "string", 0, _slice_ports),
        ("Endpoints", "string", 0, _slice_endpoints),
        ("Age", "string", 0, age),
    ],
    "networking.k8s.io/networkpolicies": [
        ("Pod-Selector", "string", 0, _selector),
        ("Age", "string", 0, age),
    ],
    "coordination.k8s.io/leases": [
        ("Holder", "string", 0, lambda o: _get(o, "spec", "holderIdentity") or ""),
        ("Age", "string", 0, age),
    ],
    "apiextensions.k8s.io/customresourcedefinitions": [
        ("Created At", "date", 0, lambda o: o["metadata"].get("creationTimestamp")),
    ],
}
_DEFAULT: list[Column] = [("Age", "string", 0, age)]

# ---------------------------------------------------------------- custom resources

_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(\d+|\*)\]|\['([^']*)'\]")


def jsonpath_first(obj: Any, path: str) -> Any:
    """The first value of a simple JSONPath (``.a.b[0].c``, ``.a[*].b``, ``.a['x.y']``)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    nodes = [obj]
    for m in _SEGMENT.finditer(path):
        key, index, quoted = m.group(1), m.group(2), m.group(3)
        nodes = _step(nodes, key if key is not None else quoted, index)
    return nodes[0] if nodes else None


def _step(nodes: list[Any], key: str | None, index: str | None) -> list[Any]:
    out: list[Any] = []
    for node in nodes:
        if key is not None and key != "$":
            if isinstance(node, dict) and key in node:
                out.append(node[key])
        elif key == "$":
            out.append(node)
        elif isinstance(node, list):
            if index == "*":
                out.extend(node)
            elif index is not None and int(index) < len(node):
                out.append(node[int(index)])
    return out


def _date_cell(value: Any) -> str | None:
    """``ConvertToHumanReadableDateType``: RFC 3339 timestamps become ages."""
    try:
        when = datetime.strptime(str(value)[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return human_duration((datetime.now(UTC) - when).total_seconds())


def _custom_cell(kind: str, path: str) -> Callable[[Obj], Any]:
    def cell(obj: Obj) -> Any:
        value = jsonpath_first(obj, path)
        if value is None:
            return None
        if kind == "string":
            return value if isinstance(value, str) else json.dumps(value)
        if kind == "date":
            return _date_cell(value)
        return value

    return cell


def custom_columns(rt: ResourceType, version: str) -> list[Column]:
    entry = crd_version(rt, version)
    declared = entry.get("additionalPrinterColumns")
    if not declared:
        return [("Age", "date", 0, age)]
    return [
        (
            c["name"],
            c.get("type", "string"),
            int(c.get("priority", 0)),
            _custom_cell(c.get("type", "string"), c["jsonPath"]),
        )
        for c in declared
    ]


# ---------------------------------------------------------------- column descriptions
# As a real v1.36 server sends them (from the recordings in ../shared/k8s-real); other
# built-in columns keep their name as description.

NAME_DESCRIPTION = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"  # noqa: E501
AGE_DESCRIPTION = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"  # noqa: E501
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "/pods": {
        "Ready": "The aggregate readiness state of this pod for accepting traffic.",
        "Status": "The aggregate status of the containers in this pod.",
        "Restarts": "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",  # noqa: E501
        "IP": "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",  # noqa: E501
        "Node": "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",  # noqa: E501
        "Nominated Node": "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",  # noqa: E501
        "Readiness Gates": 'If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to "True" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates',  # noqa: E501
    },
    "/nodes": {
        "Status": "The status of the node",
        "Roles": "The roles of the node",
        "Version": "Kubelet Version reported by the node.",
        "Internal-IP": "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",  # noqa: E501
        "External-IP": "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",  # noqa: E501
        "OS-Image": "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",  # noqa: E501
        "Kernel-Version": "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",  # noqa: E501
        "Container-Runtime": "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",  # noqa: E501
    },
}


def _description(rt: ResourceType, version: str, name: str) -> str:
    if name == "Age" and rt.crd is None:
        return AGE_DESCRIPTION
    if rt.crd is not None:
        for c in crd_version(rt, version).get("additionalPrinterColumns") or []:
            if c.get("name") == name:
                return f"Custom resource definition column (in JSONPath format): {c['jsonPath']}"
        return AGE_DESCRIPTION if name == "Age" else name
    return DESCRIPTIONS.get(rt.key, {}).get(name, name)


# ---------------------------------------------------------------- the Table


def columns_for(rt: ResourceType, version: str) -> list[Column]:
    if rt.crd is not None:
        return custom_columns(rt, version)
    return BUILTIN_COLUMNS.get(rt.key, _DEFAULT)


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def _cell(fn: Callable[[Obj], Any], obj: Obj) -> Any:
    try:
        return fn(obj)
    except (TypeError, ValueError, AttributeError, KeyError):
        return "<error>"


def to_table(
    rt: ResourceType,
    version: str,
    objs: list[Obj],
    list_meta: Obj,
    include: str = "Metadata",
    headers: bool = True,
) -> Obj:
    cols = columns_for(rt, version)
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "priority": 0,
            "description": NAME_DESCRIPTION,
        }
    ]
    definitions += [
        {
            "name": name,
            "type": kind,
            "format": "",
            "priority": prio,
            "description": _description(rt, version, name),
        }
        for name, kind, prio, _ in cols
    ]
    rows = []
    for obj in objs:
        row: Obj = {"cells": [_name(obj)] + [_cell(fn, obj) for *_, fn in cols]}
        included = _row_object(obj, include)
        if included is not None:
            row["object"] = included
        rows.append(row)
    table: Obj = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    }
    table["columnDefinitions"] = definitions if headers else None
    return table
