"""Resource descriptors: what the client needs to build a URL, and the kinds we use."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    """One API resource, e.g. ``Resource("", "v1", "pods", "Pod", namespaced=True)``."""

    group: str
    """API group; ``""`` for the core group."""
    version: str
    plural: str
    """The lower-case plural used in URLs."""
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field of objects of this resource."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """URL path of the collection, an object, or an object's subresource.

        ``namespace=None`` on a namespaced resource addresses all namespaces (list/watch).
        """
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        elif not self.namespaced and namespace is not None:
            raise ValueError(f"{self.plural} is cluster-scoped: no namespace")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
SERVICES = Resource("", "v1", "services", "Service", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
ENDPOINTSLICES = Resource(
    "discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", namespaced=True
)
NETWORKPOLICIES = Resource(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True
)
CRDS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)
KURYRPORTS = Resource("openstack.org", "v1", "kuryrports", "KuryrPort", namespaced=True)
KURYRNETWORKS = Resource("openstack.org", "v1", "kuryrnetworks", "KuryrNetwork", namespaced=True)
KURYRNETWORKPOLICIES = Resource(
    "openstack.org", "v1", "kuryrnetworkpolicies", "KuryrNetworkPolicy", namespaced=True
)
KURYRLOADBALANCERS = Resource(
    "openstack.org", "v1", "kuryrloadbalancers", "KuryrLoadBalancer", namespaced=True
)
