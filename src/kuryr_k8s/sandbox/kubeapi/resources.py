"""The registry of kinds the emulator serves: built-in ones and those CRDs define."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CR_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")
"""The verb order a real server lists for custom resources."""


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (``pods``, ``kuryrports.openstack.org``, ...)."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    """``status``, ``binding``, ``finalize``, ``scale`` as served under the object path."""
    versions: tuple[str, ...] = ()
    """All served versions (CRDs); the objects are the same in each (no conversion)."""
    crd: Obj | None = field(default=None, compare=False, hash=False)
    """The defining CRD (None for built-in kinds)."""
    label_names: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    """Field paths supported by ``fieldSelector``."""
    verbs: tuple[str, ...] = ALL_VERBS
    storage: str = ""
    """Storage key when another resource's objects are served (events.k8s.io events)."""
    generation: bool = False
    """Whether objects carry ``metadata.generation`` (as the real kind does)."""

    @property
    def key(self) -> str:
        """Storage key: ``group/plural`` (``/pods`` for the core group)."""
        return self.storage or self.route

    @property
    def route(self) -> str:
        """``group/plural`` as in the URL: what the registry is indexed by."""
        return f"{self.group}/{self.plural}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def qualified(self) -> str:
        """``plural.group``, the name Status messages use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def serves(self, version: str) -> bool:
        return version == self.version or version in self.versions

    def base_path(self, version: str, namespace: str | None) -> str:
        root = f"/apis/{self.group}/{version}" if self.group else f"/api/{version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_BASE = ("metadata.name", "metadata.namespace")


def _core(kind: str, plural: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", kind, plural, namespaced, **kw)


BUILTINS: tuple[ResourceType, ...] = (
    _core(
        "Namespace",
        "namespaces",
        False,
        short_names=("ns",),
        subresources=("status", "finalize"),
        verbs=tuple(v for v in ALL_VERBS if v != "deletecollection"),
        label_names=(*_BASE, "status.phase"),
    ),
    _core(
        "Node",
        "nodes",
        False,
        short_names=("no",),
        subresources=("status",),
        label_names=(*_BASE, "spec.unschedulable"),
    ),
    _core(
        "Pod",
        "pods",
        True,
        short_names=("po",),
        categories=("all",),
        subresources=("status", "binding"),
        label_names=(*_BASE, *_POD_FIELDS),
        generation=True,
    ),
    _core("Binding", "bindings", True, verbs=("create",)),
    _core(
        "Service",
        "services",
        True,
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
        label_names=(*_BASE, "spec.clusterIP", "spec.type"),
    ),
    _core("Endpoints", "endpoints", True, short_names=("ep",)),
    _core("Event", "events", True, short_names=("ev",), label_names=(*_BASE, *_EVENT_FIELDS)),
    _core("ServiceAccount", "serviceaccounts", True, short_names=("sa",), subresources=("token",)),
    _core("ConfigMap", "configmaps", True, short_names=("cm",)),
    _core("Secret", "secrets", True, label_names=(*_BASE, "type")),
    ResourceType(
        "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, generation=True
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        True,
        short_names=("netpol",),
        generation=True,
    ),
    ResourceType(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        True,
        short_names=("ev",),
        storage="/events",
    ),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
    # Stored and served only (no controller makes their pods): deploy/ is applied here.
    ResourceType(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        True,
        short_names=("deploy",),
        categories=("all",),
        subresources=("status",),
        generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        True,
        short_names=("ds",),
        categories=("all",),
        subresources=("status",),
        generation=True,
    ),
    *(
        ResourceType("rbac.authorization.k8s.io", "v1", kind, plural, namespaced)
        for kind, plural, namespaced in (
            ("ClusterRoleBinding", "clusterrolebindings", False),
            ("ClusterRole", "clusterroles", False),
            ("RoleBinding", "rolebindings", True),
            ("Role", "roles", True),
        )
    ),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        False,
        verbs=("create",),
    ),
    ResourceType(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        False,
        verbs=("create",),
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=("status",),
        generation=True,
    ),
)


REVIEWS = (
    "authorization.k8s.io/selfsubjectaccessreviews",
    "authentication.k8s.io/selfsubjectreviews",
)
"""Create-only kinds answered from the request, never stored."""


class Registry:
    """Lookup of resource types by group/version/plural, kind, and short name."""

    def __init__(self) -> None:
        self._by_key: dict[str, ResourceType] = {}
        for rt in BUILTINS:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_key[rt.route] = rt

    def remove(self, key: str) -> None:
        self._by_key.pop(key, None)

    def get(self, key: str) -> ResourceType | None:
        return self._by_key.get(key)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._by_key.get(f"{group}/{plural}")
        if rt is None or not rt.serves(version):
            return None
        return rt

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for rt in self._by_key.values():
            if rt.group == group and rt.kind == kind:
                return rt
        return None

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._by_key.values()))

    def group_versions(self) -> dict[str, list[str]]:
        """Group name -> served versions (preferred first); core group is ``""``."""
        out: dict[str, list[str]] = {}
        for rt in self:
            versions = out.setdefault(rt.group, [])
            for v in (rt.version, *rt.versions):
                if v not in versions:
                    versions.append(v)
        return out


def crd_resource_type(crd: Obj) -> ResourceType:
    """Build the resource type a CRD defines (its storage version is the canonical one)."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions", []) if v.get("served", True)]
    storage = next((v for v in served if v.get("storage")), served[0])
    subs = tuple(k for k in (storage.get("subresources") or {}) if k in ("status", "scale"))
    return ResourceType(
        group=spec["group"],
        version=storage["name"],
        kind=names["kind"],
        plural=names["plural"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        subresources=subs,
        versions=tuple(v["name"] for v in served),
        crd=crd,
        verbs=CR_VERBS,
        generation=True,
    )


def crd_version(rt: ResourceType, version: str) -> Obj:
    """The ``spec.versions[]`` entry of a CRD for one served version."""
    assert rt.crd is not None
    for v in rt.crd["spec"].get("versions", []):
        if v.get("name") == version:
            return dict(v)
    return {}
