"""The Kubernetes API adapter: client, informers, events, leader election.

Public surface (import from here)::

    KubeSettings, load_kubeconfig, load_incluster        where and how to connect
    KubeClient, PatchType, WatchEvent, ObjectList         the REST client
    Resource and PODS, NODES, ... KURYRPORTS              what to address
    Informer, Store                                       list+watch caches
    EventRecorder                                         core/v1 Events
    LeaderElector, LeaderElectionConfig                   Lease-based leader election
    errors: ApiError, NotFound, Conflict, ...             see ``kuryr_k8s.k8s.errors``
"""

from kuryr_k8s.k8s.client import KubeClient, ObjectList, PatchType, WatchEvent
from kuryr_k8s.k8s.config import KubeSettings, load_incluster, load_kubeconfig
from kuryr_k8s.k8s.errors import (
    AlreadyExists,
    ApiError,
    ApiUnreachable,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServerError,
)
from kuryr_k8s.k8s.events import EventRecorder
from kuryr_k8s.k8s.informer import Informer, Store
from kuryr_k8s.k8s.leader import LeaderElectionConfig, LeaderElector, LeadershipLost
from kuryr_k8s.k8s.resources import (
    CRDS,
    ENDPOINTSLICES,
    EVENTS,
    KURYRNETWORKS,
    KURYRPORTS,
    LEASES,
    NAMESPACES,
    NETWORKPOLICIES,
    NODES,
    PODS,
    SERVICES,
    Resource,
)
from kuryr_k8s.k8s.timing import Backoff, Clock, SystemClock

__all__ = [
    "CRDS",
    "ENDPOINTSLICES",
    "EVENTS",
    "KURYRNETWORKS",
    "KURYRPORTS",
    "LEASES",
    "NAMESPACES",
    "NETWORKPOLICIES",
    "NODES",
    "PODS",
    "SERVICES",
    "AlreadyExists",
    "ApiError",
    "ApiUnreachable",
    "Backoff",
    "Clock",
    "Conflict",
    "EventRecorder",
    "Forbidden",
    "Gone",
    "Informer",
    "Invalid",
    "KubeClient",
    "KubeSettings",
    "LeaderElectionConfig",
    "LeaderElector",
    "LeadershipLost",
    "NotFound",
    "ObjectList",
    "PatchType",
    "Resource",
    "ServerError",
    "Store",
    "SystemClock",
    "WatchEvent",
    "load_incluster",
    "load_kubeconfig",
]
