"""Namespace networks: Namespace → ``KuryrNetwork`` → Neutron network + subnet + router port.

``[kubernetes] pod_subnets_driver = namespace`` puts each namespace's pods on a network of
their own (upstream Kuryr's namespace subnet driver): one Neutron network, one subnet
allocated from ``[namespace_subnet] pod_subnet_pool`` and an interface on
``[namespace_subnet] pod_router``. The ``KuryrNetwork`` (``openstack.org/v1``, name =
namespace, in that namespace; upstream's fields) records them.

One reconciler, keyed by the namespace name:

* live namespace: the KuryrNetwork exists (finalizer set); network and subnet are found by
  tag (cluster + ``kuryr.owner:<namespace uid>``) or created; the router interface is
  added if the router has none on the subnet; ``status`` names them. A restart adopts
  what exists; a crash between create and status write leaves a tagged network that the
  next reconcile finds (never a second one).
* namespace gone or terminating (its KuryrNetwork deleted with it): once no port but the
  router's is left on the network, the router interface, the subnet and the network are
  removed, then the finalizer is dropped (the namespace's deletion waits for it).

:class:`NamespacePlacement` answers ``network_for(pod)`` from the KuryrNetwork status
(ResourceNotReady until it is complete), so a pod is never wired before its network exists.
Pools are keyed by network and filled on demand: nothing is pre-created per namespace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kuryr_k8s.controller.engine import Engine, EngineSettings, Result
from kuryr_k8s.controller.finalizers import add_finalizer, remove_finalizer
from kuryr_k8s.controller.kuryrports import PodNetwork, PodSubnet
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import AlreadyExists, NotFound
from kuryr_k8s.k8s.informer import Informer, Store
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import KURYRNETWORKS, NAMESPACES
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError, ResourceNotReady
from kuryr_k8s.model.kuryrnetwork import KURYRNETWORK_FINALIZER
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX, OWNER_TAG_PREFIX
from kuryr_k8s.openstack.security import SecurityApi

LOG = logging.getLogger(__name__)

NAMESPACE_TAG = "kuryr.namespace:"
SUBNETS_DRIVERS = ("default", "namespace")
SG_DRIVERS = ("default", "policy")
SG_MODES = ("policy", "identity")
"""``[network_policy] security_group_mode``: an SG per policy (ports move when a policy
selects them) or an SG per pod identity (policies change rules only):
``docs/design/network-policy-identities.md``."""


@dataclass(frozen=True)
class PlacementSettings:
    """``[kubernetes] pod_subnets_driver``/``pod_security_groups_driver`` and
    ``[namespace_subnet]``."""

    subnets_driver: str = "default"
    security_groups_driver: str = "default"
    pod_router: str = ""
    pod_subnet_pool: str = ""
    security_group_mode: str = "policy"


def load_placement(cfg: ConfigFile) -> PlacementSettings:
    """Read the options (call before ``cfg.reject_unknown()``); ConfigError names them."""
    k, ns = "kubernetes", "namespace_subnet"
    settings = PlacementSettings(
        subnets_driver=cfg.get_choice(k, "pod_subnets_driver", "default", SUBNETS_DRIVERS),
        security_groups_driver=cfg.get_choice(
            k, "pod_security_groups_driver", "default", SG_DRIVERS
        ),
        pod_router=cfg.get_str(ns, "pod_router"),
        pod_subnet_pool=cfg.get_str(ns, "pod_subnet_pool"),
        security_group_mode=cfg.get_choice(
            "network_policy", "security_group_mode", "policy", SG_MODES
        ),
    )
    if settings.subnets_driver == "namespace":
        for option in ("pod_router", "pod_subnet_pool"):
            if not getattr(settings, option):
                raise ConfigError(
                    f"{cfg.source}: [namespace_subnet] {option} is required with "
                    "[kubernetes] pod_subnets_driver = namespace (the Neutron "
                    f"{'router' if option == 'pod_router' else 'subnet pool'} id)"
                )
    return settings


def kuryrnetwork_key(namespace: str) -> str:
    return f"{namespace}/{namespace}"


class NamespaceNetworkReconciler:
    """Converges one namespace's KuryrNetwork and its Neutron network, subnet, router port."""

    kind = "kuryrnetwork"

    def __init__(
        self,
        client: KubeClient,
        namespaces: Store,
        kuryrnetworks: Store,
        api: SecurityApi,
        *,
        cluster_id: str,
        project_id: str,
        router_id: str,
        subnet_pool_id: str,
        drain_network: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.drain_network = drain_network
        """Called with the network id on each attempt to remove a namespace network: the
        port pools must delete their free ports on it (else they keep it busy forever)."""
        self.namespaces = namespaces
        self.kns = kuryrnetworks
        self.api = api
        self.cluster_tag = CLUSTER_TAG_PREFIX + cluster_id
        self.project_id = project_id
        self.router_id = router_id
        self.pool_id = subnet_pool_id

    async def reconcile(self, key: str) -> Result:
        name = key.split("/", 1)[-1]
        ns = self.namespaces.get(name)
        kn = self.kns.get(kuryrnetwork_key(name))
        if ns is None or objects.is_deleting(ns) or (kn is not None and objects.is_deleting(kn)):
            if kn is not None:
                await self._remove(kn)
            return Result()
        kn = await self._ensure_kn(ns, kn)
        owner = str((kn.get("spec") or {}).get("nsUid") or objects.uid(ns))
        tags = [self.cluster_tag, OWNER_TAG_PREFIX + owner, NAMESPACE_TAG + name]
        nets = await self.api.list_networks(tags)
        net = (
            nets[0] if nets else await self.api.create_network(f"ns/{name}", self.project_id, tags)
        )
        subnets = [s for s in await self.api.list_subnets(tags) if s.network_id == net.id]
        sub = subnets[0] if subnets else None
        if sub is None:
            sub = await self.api.create_subnet_from_pool(
                f"ns/{name}", net.id, self.project_id, self.pool_id, tags
            )
        if sub.id not in await self.api.router_subnets(self.router_id):
            await self.api.add_router_interface(self.router_id, sub.id)
        status = {
            "netId": net.id,
            "subnetId": sub.id,
            "subnetCIDR": sub.cidr,
            "gatewayIp": sub.gateway_ip or "",
            "routerId": self.router_id,
            "mtu": net.mtu,
            "populated": True,
            "nsLabels": dict(objects.labels(ns)),
        }
        old = kn.get("status") or {}
        if {k: old.get(k) for k in status} != status:
            await self.client.patch(
                KURYRNETWORKS, name, {"status": status}, name, subresource="status"
            )
        return Result()

    async def _ensure_kn(self, ns: Obj, kn: Obj | None) -> Obj:
        name = objects.name(ns)
        spec = {
            "nsName": name,
            "projectId": self.project_id,
            "nsLabels": dict(objects.labels(ns)),
            "nsUid": objects.uid(ns),
        }
        if kn is None:
            body = {
                "metadata": {
                    "name": name,
                    "namespace": name,
                    "finalizers": [KURYRNETWORK_FINALIZER],
                },
                "spec": spec,
            }
            try:
                return await self.client.create(KURYRNETWORKS, body, name)
            except AlreadyExists:
                kn = await self.client.get(KURYRNETWORKS, name, name)
        kn = await add_finalizer(self.client, KURYRNETWORKS, kn, KURYRNETWORK_FINALIZER)
        if (kn.get("spec") or {}) != spec:
            kn = await self.client.patch(KURYRNETWORKS, name, {"spec": spec}, name)
        return kn

    async def _remove(self, kn: Obj) -> None:
        """Network, subnet and router port go once no other port is left on the network."""
        spec = kn.get("spec") or {}
        name = str(spec.get("nsName") or objects.name(kn))
        owner = str(spec.get("nsUid") or "")
        tags = [self.cluster_tag, NAMESPACE_TAG + name]
        if owner:
            tags.append(OWNER_TAG_PREFIX + owner)
        for net in await self.api.list_networks(tags):
            if self.drain_network is not None:
                await self.drain_network(net.id)
            busy = await self.api.ports_on(net.id)
            if busy:
                raise ResourceNotReady(
                    f"namespace {name}: {len(busy)} port(s) still on network {net.id}",
                    delay=2.0,
                )
            for sub in await self.api.list_subnets(tags):
                if sub.network_id == net.id:
                    await self.api.remove_router_interface(self.router_id, sub.id)
                    await self.api.delete_subnet(sub.id)
            await self.api.delete_network(net.id)
        kn = await remove_finalizer(self.client, KURYRNETWORKS, kn, KURYRNETWORK_FINALIZER)
        if not objects.is_deleting(kn):
            with contextlib.suppress(NotFound):
                await self.client.delete(KURYRNETWORKS, objects.name(kn), objects.namespace(kn))


class NamespacePlacement:
    """``network_for(pod)``: the pod's namespace network, from its KuryrNetwork status."""

    def __init__(self, kuryrnetworks: Store, defaults: PodNetwork) -> None:
        self.kns = kuryrnetworks
        self.defaults = defaults

    async def network_for(self, pod: Obj) -> PodNetwork:
        ns = objects.namespace(pod) or ""
        kn = self.kns.get(kuryrnetwork_key(ns))
        status = (kn or {}).get("status") or {}
        if (
            kn is None
            or objects.is_deleting(kn)
            or not all(status.get(f) for f in ("netId", "subnetId", "subnetCIDR", "routerId"))
        ):
            raise ResourceNotReady(f"the network of namespace {ns} is not ready yet")
        gateway = str(status.get("gatewayIp") or "") or None
        return PodNetwork(
            project_id=self.defaults.project_id,
            network_id=str(status["netId"]),
            subnet_id=str(status["subnetId"]),
            security_groups=self.defaults.security_groups,
            subnets=(PodSubnet(str(status["subnetId"]), str(status["subnetCIDR"]), gateway),),
            mtu=self.defaults.mtu or int(status.get("mtu") or 0),
            bridge=self.defaults.bridge,
        )

    async def security_groups_for(self, pod: Obj, network: PodNetwork) -> tuple[str, ...]:
        return tuple(sorted(network.security_groups))


@dataclass
class NamespaceParts:
    """Informers (for the Controller's ``caches``), engine and placement."""

    caches: list[Informer]
    engine: Engine
    kuryrnetworks: Informer
    namespaces: Informer

    def placement(self, defaults: PodNetwork) -> NamespacePlacement:
        return NamespacePlacement(self.kuryrnetworks.store, defaults)


def build_namespace_parts(
    client: KubeClient,
    api: SecurityApi,
    settings: PlacementSettings,
    *,
    cluster_id: str,
    project_id: str,
    namespaces: Informer | None = None,
    engine_settings: EngineSettings | None = None,
    drain_network: Callable[[str], Awaitable[None]] | None = None,
) -> NamespaceParts:
    nss = namespaces or Informer(client, NAMESPACES)
    kns = Informer(client, KURYRNETWORKS)
    reconciler = NamespaceNetworkReconciler(
        client,
        nss.store,
        kns.store,
        api,
        cluster_id=cluster_id,
        project_id=project_id,
        router_id=settings.pod_router,
        subnet_pool_id=settings.pod_subnet_pool,
        drain_network=drain_network,
    )
    engine = Engine(reconciler, engine_settings)
    nss.add_handler(engine.enqueue)
    kns.add_handler(lambda key: engine.enqueue(key.split("/", 1)[-1]))
    caches = [kns] + ([nss] if namespaces is None else [])
    return NamespaceParts(caches, engine, kns, nss)
