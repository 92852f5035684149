"""Defaulting and admission the real server applies when objects are created.

Only what a client can observe and what our components rely on: pod spec defaults and
``status.phase: Pending``, service cluster IPs, namespace finalizers/labels, network policy
``policyTypes``, CRD conditions.
"""

from __future__ import annotations

import copy
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
DEFAULT_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]


class IpAllocator:
    """Hands out service cluster IPs from ``10.96.0.0/12`` (``.1`` is ``kubernetes``)."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._next = 1

    def reserve(self, ips: Iterable[str]) -> None:
        self._used.update(ip for ip in ips if ip and ip != "None")

    def used(self, ip: str) -> bool:
        return ip in self._used

    def release(self, ip: str | None) -> None:
        if ip:
            self._used.discard(ip)

    def allocate(self) -> str:
        size = SERVICE_CIDR.num_addresses - 2
        for _ in range(size):
            candidate = str(SERVICE_CIDR.network_address + self._next)
            self._next = self._next % size + 1
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate
        raise RuntimeError("service IP range is full")


def _image_pull_policy(image: str) -> str:
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail:
        return "IfNotPresent"
    if ":" not in tail or tail.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _default_container(c: Obj) -> None:
    c.setdefault("imagePullPolicy", _image_pull_policy(str(c.get("image", ""))))
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")


def _qos_class(spec: Obj) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for res in ("cpu", "memory"):
            if res not in limits or requests.get(res, limits[res]) != limits[res]:
                return "Burstable"
    return "Guaranteed"


def default_pod(obj: Obj, _: IpAllocator, old: Obj | None) -> None:
    """Scheme defaults on every write; admission defaults and status on create only."""
    spec = obj.setdefault("spec", {})
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    if old is not None:
        return
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for tol in DEFAULT_TOLERATIONS:
        if not any(t.get("key") == tol["key"] for t in tolerations):
            tolerations.append(dict(tol))
    _mount_service_account_token(obj)
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", _qos_class(spec))


SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _mount_service_account_token(pod: Obj) -> None:
    """ServiceAccount admission: a projected ``kube-api-access-xxxxx`` volume (token,
    ``kube-root-ca.crt``, namespace) mounted read-only in every container."""
    spec = pod["spec"]
    if spec.get("automountServiceAccountToken") is False:
        return
    containers = [c for f in ("initContainers", "containers") for c in spec.get(f) or []]
    if any(
        m.get("mountPath") == SA_MOUNT_PATH for c in containers for m in c.get("volumeMounts") or []
    ):
        return
    name = "kube-api-access-" + "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(5))
    volume = {
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
            "defaultMode": 420,
        },
    }
    spec.setdefault("volumes", []).append(volume)
    for c in containers:
        c.setdefault("volumeMounts", []).append(
            {"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH}
        )


_SERVICE_IP_FIELDS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def default_service(obj: Obj, ips: IpAllocator, old: Obj | None) -> None:
    """Scheme defaults; cluster IPs allocated on create and kept from ``old`` on update."""
    spec = obj.setdefault("spec", {})
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if kind == "ExternalName":
        return
    old_spec = (old or {}).get("spec") or {}
    if old is not None and not spec.get("clusterIP"):
        spec.update({k: old_spec[k] for k in _SERVICE_IP_FIELDS if k in old_spec})
    if not spec.get("clusterIP"):
        spec["clusterIP"] = ips.allocate()
    elif old is None:
        ips.reserve([spec["clusterIP"]])
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if old is None:
        obj.setdefault("status", {}).setdefault("loadBalancer", {})


def default_namespace(obj: Obj, _: IpAllocator, old: Obj | None) -> None:
    """The name label always; ``spec`` only changes through ``/finalize``."""
    name = obj["metadata"]["name"]
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    if old is not None:
        obj["spec"] = dict(old.get("spec") or {})
        return
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def default_netpol(obj: Obj, _: IpAllocator, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("podSelector", {})
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def default_crd(obj: Obj, _: IpAllocator, old: Obj | None) -> None:
    """Scheme defaults. A new CRD's status is empty (``conditions: null``) until the
    establishing controller accepts its names (see ``controllers.establish_crd``)."""
    spec = obj.setdefault("spec", {})
    names = spec.get("names") or {}
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    spec.setdefault("conversion", {"strategy": "None"})
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    if old is None:
        obj["status"] = {
            "conditions": None,
            "acceptedNames": {"plural": "", "kind": ""},
            "storedVersions": stored,
        }
        return
    status = copy.deepcopy(old.get("status") or {})
    if status.get("conditions"):
        status["acceptedNames"] = accepted_names(spec)
    versions = list(status.get("storedVersions") or [])
    status["storedVersions"] = versions + [v for v in stored if v not in versions]
    obj["status"] = status


def accepted_names(spec: Obj) -> Obj:
    names = spec.get("names") or {}
    keys = ("plural", "singular", "shortNames", "kind", "listKind", "categories")
    return {k: names[k] for k in keys if names.get(k)}


def crd_established_status(crd: Obj, when: str) -> Obj:
    """What the naming and establishing controllers write once the names are accepted."""
    status = copy.deepcopy(crd.get("status") or {})
    status["acceptedNames"] = accepted_names(crd.get("spec") or {})
    status["conditions"] = [
        {
            "type": "NamesAccepted",
            "status": "True",
            "lastTransitionTime": when,
            "reason": "NoConflicts",
            "message": "no conflicts found",
        },
        {
            "type": "Established",
            "status": "True",
            "lastTransitionTime": when,
            "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted",
        },
    ]
    return status


def crd_terminating_condition(when: str) -> Obj:
    return {
        "type": "Terminating",
        "status": "True",
        "lastTransitionTime": when,
        "reason": "InstanceDeletionPending",
        "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will "
        "begin soon",
    }


NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
_NODE_INFO = (
    "machineID",
    "systemUUID",
    "bootID",
    "kernelVersion",
    "osImage",
    "containerRuntimeVersion",
    "kubeletVersion",
    "kubeProxyVersion",
    "operatingSystem",
    "architecture",
)


def default_node(obj: Obj, _: IpAllocator, old: Obj | None) -> None:
    """The Go zero values a Node status always serialises; on create the
    ``TaintNodesByCondition`` admission's not-ready taint (the node lifecycle controller,
    ``controllers.Controllers.node_ready``, removes it once the node is Ready)."""
    status = obj.setdefault("status", {})
    status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 0}})
    info = status.setdefault("nodeInfo", {})
    for key in _NODE_INFO:
        info.setdefault(key, "")
    if old is None and not node_ready(obj):
        taints = obj.setdefault("spec", {}).setdefault("taints", [])
        if not any(t.get("key") == NOT_READY_TAINT["key"] for t in taints):
            taints.append(dict(NOT_READY_TAINT))


def node_ready(node: Obj) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


DEFAULTERS: dict[str, Callable[[Obj, IpAllocator, Obj | None], None]] = {
    "/pods": default_pod,
    "/services": default_service,
    "/namespaces": default_namespace,
    "/nodes": default_node,
    "networking.k8s.io/networkpolicies": default_netpol,
    "apiextensions.k8s.io/customresourcedefinitions": default_crd,
}
