"""kube-controller-manager's EndpointSlice controller (``endpointslice-controller.k8s.io``).

For every Service with a selector (not ExternalName), EndpointSlices named
``<service>-<random>`` (``generateName``) hold one endpoint per selected pod that has an
IPv4 address, is not terminal (Succeeded/Failed) and runs on an existing Node (a missing
Node is tolerated with ``publishNotReadyAddresses``), following
``pkg/controller/endpointslice`` and ``staging/src/k8s.io/endpointslice`` of Kubernetes:

* labels: the Service's (minus the two reserved keys), ``kubernetes.io/service-name``,
  ``endpointslice.kubernetes.io/managed-by``, ``service.kubernetes.io/headless`` for a
  Service without a cluster IP;
* ownerReferences: the Service (``controller`` and ``blockOwnerDeletion`` true), so the
  garbage collector deletes the slices with the Service;
* endpoint: ``addresses`` [podIP], ``conditions`` ``ready`` (= Ready and not terminating,
  or ``publishNotReadyAddresses``), ``serving`` (= the pod's Ready condition),
  ``terminating`` (= deletionTimestamp set), ``nodeName``, ``zone`` (Node label
  ``topology.kubernetes.io/zone``), ``hostname`` (pod ``hostname`` with ``subdomain`` = the
  Service name), ``targetRef`` Pod (kind, namespace, name, uid);
* ports: the Service's, ``name`` always present (``""`` when unnamed), a named
  ``targetPort`` resolved per pod (container ports, then restartable init containers, of
  the same name and protocol; a port a pod cannot resolve is left out for that pod), so
  pods resolving to different numbers land in different slices; at most 100 endpoints a
  slice;
* no pods: one placeholder slice with ``endpoints`` and ``ports`` null;
* annotation ``endpoints.kubernetes.io/last-change-trigger-time``: the latest of the
  Service's creation and the pods' Ready transitions (the real controller tracks the
  earliest *unprocessed* change instead; the value is only informative).

Slices of a Service are reused when their ports match, so a change of one pod updates a
slice in place (generation + 1) instead of replacing it. Endpoint order inside a slice is
by pod name (the real controller's order is that of its sets; not recorded).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]

SLICES_KEY = "discovery.k8s.io/endpointslices"
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
ZONE = "topology.kubernetes.io/zone"
MAX_ENDPOINTS = 100
"""``--max-endpoints-per-slice`` default."""


def selector_of(service: Obj) -> dict[str, str] | None:
    """The selector this controller serves, or None (no selector, ExternalName)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return None
    return {str(k): str(v) for k, v in selector.items()}


def selects(service: Obj, labels: dict[str, str] | None) -> bool:
    selector = selector_of(service)
    if selector is None:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def is_managed(slice_: Obj, service: Obj) -> bool:
    labels = slice_["metadata"].get("labels") or {}
    return (
        labels.get(SERVICE_NAME) == service["metadata"]["name"]
        and labels.get(MANAGED_BY) == CONTROLLER_NAME
    )


def owned_by(slice_: Obj, service: Obj) -> bool:
    uid = service["metadata"].get("uid")
    return any(
        ref.get("uid") == uid and ref.get("kind") == "Service"
        for ref in slice_["metadata"].get("ownerReferences") or []
    )


def _pod_ready(pod: Obj) -> tuple[bool, str]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", str(cond.get("lastTransitionTime") or "")
    return False, ""


def _pod_ipv4(pod: Obj) -> str:
    status = pod.get("status") or {}
    ips = [str(i.get("ip")) for i in status.get("podIPs") or [] if isinstance(i, dict)]
    ips = ips or ([str(status["podIP"])] if status.get("podIP") else [])
    return next((ip for ip in ips if ip and ":" not in ip), "")


def find_port(pod: Obj, port: Obj) -> int | None:
    """``podutil.FindPort``: the target port's number for this pod, None if it has none."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + [
        c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]
    for container in containers:
        for cport in container.get("ports") or []:
            if cport.get("name") == target and (cport.get("protocol") or "TCP") == protocol:
                number = cport.get("containerPort")
                return int(number) if number is not None else None
    return None


def endpoint_ports(service: Obj, pod: Obj) -> list[Obj]:
    out: list[Obj] = []
    for port in (service.get("spec") or {}).get("ports") or []:
        number = find_port(pod, port)
        if number is None:
            continue
        entry: Obj = {"name": port.get("name") or "", "protocol": port.get("protocol") or "TCP"}
        entry["port"] = number
        if port.get("appProtocol"):
            entry["appProtocol"] = port["appProtocol"]
        out.append(entry)
    return out


def to_endpoint(pod: Obj, node: Obj | None, service: Obj, address: str) -> Obj:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    serving, _ = _pod_ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    ep: Obj = {
        "addresses": [address],
        "conditions": {
            "ready": publish or (serving and not terminating),
            "serving": serving,
            "terminating": terminating,
        },
    }
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        ep["hostname"] = spec["hostname"]
    ep["targetRef"] = {
        "kind": "Pod",
        "namespace": meta.get("namespace", ""),
        "name": meta["name"],
        "uid": meta.get("uid", ""),
    }
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
    zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE)
    if zone:
        ep["zone"] = zone
    return ep


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {
        k: v
        for k, v in (service["metadata"].get("labels") or {}).items()
        if k not in (SERVICE_NAME, MANAGED_BY)
    }
    ip = (service.get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        labels[HEADLESS] = ""
    else:
        labels.pop(HEADLESS, None)
    labels[SERVICE_NAME] = service["metadata"]["name"]
    labels[MANAGED_BY] = CONTROLLER_NAME
    return labels


def owner_reference(service: Obj) -> Obj:
    meta = service["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def desired_groups(
    service: Obj, pods: Iterable[Obj], nodes: dict[str, Obj]
) -> tuple[list[tuple[list[Obj] | None, list[Obj]]], str]:
    """``[(ports, endpoints)]`` (one per port mapping, at most MAX_ENDPOINTS endpoints
    each; a single ``(None, [])`` placeholder when there is none) and the trigger time."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    trigger = str(service["metadata"].get("creationTimestamp") or "")
    by_ports: dict[str, tuple[list[Obj], list[Obj]]] = {}
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        address = _pod_ipv4(pod)
        if not address:
            continue
        node = nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        if node is None and not publish:
            continue
        ports = endpoint_ports(service, pod)
        key = repr(sorted((p["name"], p["protocol"], p["port"]) for p in ports))
        by_ports.setdefault(key, (ports, []))[1].append(to_endpoint(pod, node, service, address))
        _, changed = _pod_ready(pod)
        trigger = max(trigger, changed or str(pod["metadata"].get("creationTimestamp") or ""))
    groups: list[tuple[list[Obj] | None, list[Obj]]] = []
    for _, (ports, endpoints) in sorted(by_ports.items()):
        for start in range(0, len(endpoints), MAX_ENDPOINTS):
            groups.append((ports, endpoints[start : start + MAX_ENDPOINTS]))
    return (groups or [(None, [])]), trigger


def build_slice(
    service: Obj, ports: list[Obj] | None, endpoints: list[Obj], trigger: str, base: Obj | None
) -> Obj:
    """A new slice body, or ``base`` (a stored slice) with the wanted content."""
    out = copy.deepcopy(base) if base is not None else {"metadata": {}}
    meta = out["metadata"]
    if base is None:
        meta["generateName"] = f"{service['metadata']['name']}-"
        meta["namespace"] = service["metadata"]["namespace"]
        meta["ownerReferences"] = [owner_reference(service)]
    meta["labels"] = slice_labels(service)
    annotations = dict(meta.get("annotations") or {})
    if trigger:
        annotations[TRIGGER_TIME] = trigger
    meta["annotations"] = annotations
    out["apiVersion"] = "discovery.k8s.io/v1"
    out["kind"] = "EndpointSlice"
    out["addressType"] = "IPv4"
    out["endpoints"] = endpoints or None
    out["ports"] = ports
    return out


def same_content(stored: Obj, wanted: Obj) -> bool:
    """Whether ``stored`` already says what ``wanted`` says (the trigger time aside)."""

    def view(obj: Obj) -> Obj:
        return {
            "labels": obj["metadata"].get("labels") or {},
            "endpoints": obj.get("endpoints") or None,
            "ports": obj.get("ports"),
        }

    return view(stored) == view(wanted)


def ports_key(ports: list[Obj] | None) -> str:
    if ports is None:
        return "placeholder"
    return repr(sorted((p.get("name"), p.get("protocol"), p.get("port")) for p in ports))
