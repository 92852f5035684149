"""Assemble a controller from settings: the one place where the parts meet.

``kuryr controller`` (``cli/controller_cmd.py``) reads the files and calls
:func:`load_config` and :func:`build`; functional tests call :func:`build` with settings of
their own. Every client, provider and reconciler is made here once and passed down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from kuryr_k8s.controller import settings as s
from kuryr_k8s.controller.crds import ensure_crds, upgrade_crds
from kuryr_k8s.controller.engine import Engine, EngineSettings
from kuryr_k8s.controller.gc import GarbageCollector
from kuryr_k8s.controller.health import HealthServer, HealthState
from kuryr_k8s.controller.kuryrports import (
    FirstSeen,
    KuryrPortReconciler,
    PodNetwork,
    PodSubnet,
    port_ids_in,
)
from kuryr_k8s.controller.lbwiring import ServicesConfig, build_services, load_services
from kuryr_k8s.controller.metrics import Metrics
from kuryr_k8s.controller.namespaces import (
    PlacementSettings,
    build_namespace_parts,
    load_placement,
)
from kuryr_k8s.controller.nodes import NodeNotNested, NodeResolver, TrunkTarget
from kuryr_k8s.controller.placement import PodPlacement, StaticPlacement
from kuryr_k8s.controller.pods import PodReconciler, sighting, workload_of
from kuryr_k8s.controller.policies import PolicyParts, build_policy_parts
from kuryr_k8s.controller.policy_identities import IdentityParts, build_identity_parts
from kuryr_k8s.controller.pool import PoolCollector, PooledPortProvider, make_provider
from kuryr_k8s.controller.portstatus import PortStatusWatcher
from kuryr_k8s.controller.service import Controller
from kuryr_k8s.controller.subports import SubportProvider
from kuryr_k8s.controller.takeover import Scope, adopt_upstream
from kuryr_k8s.controller.takeover_networks import NetworkScope, adopt_upstream_networks
from kuryr_k8s.controller.takeover_policies import (
    PolicyScope,
    adopt_upstream_policies,
    retire_upstream_sgs,
)
from kuryr_k8s.controller.takeover_services import adopt_upstream_services
from kuryr_k8s.controller.targets import TargetedPorts
from kuryr_k8s.k8s import (
    KURYRPORTS,
    NAMESPACES,
    NODES,
    PODS,
    Backoff,
    EventRecorder,
    Informer,
    KubeClient,
    KubeSettings,
    LeaderElectionConfig,
    LeaderElector,
    objects,
)
from kuryr_k8s.k8s.events import QueuedEvents
from kuryr_k8s.model import kuryrnetwork
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError, KuryrError, ResourceNotReady, TemporaryError
from kuryr_k8s.model.kuryrloadbalancer import crd_manifest as klb_crd_manifest
from kuryr_k8s.model.kuryrport import crd_manifests
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.metrics import NeutronCollector
from kuryr_k8s.openstack.neutron import Neutron, NeutronSubnet
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX, NeutronPort
from kuryr_k8s.openstack.provider import PlainPortProvider, PortTagging
from kuryr_k8s.openstack.security import SecurityApi

LOG = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ControllerConfig:
    """Every setting of the controller process, read once from ``kuryr.conf``."""

    neutron: NeutronSettings
    defaults: s.NeutronDefaults
    pool: s.VifPoolSettings
    gc: s.GcSettings
    kubernetes: s.KubernetesSettings
    nested: s.NestedSettings = field(default_factory=s.NestedSettings)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    source: str = "kuryr.conf"


def load_config(path: Path) -> ControllerConfig:
    """Parse and check ``kuryr.conf``; ConfigError names the section, option and value."""
    cfg = ConfigFile.load(path)
    kubernetes = s.load_kubernetes(cfg)
    config = ControllerConfig(
        neutron=s.load_neutron(cfg),
        defaults=s.load_neutron_defaults(cfg),
        pool=s.load_vif_pool(cfg),
        gc=s.load_gc(cfg),
        kubernetes=kubernetes,
        nested=s.load_nested(cfg, kubernetes.pod_vif_driver),
        services=load_services(cfg),
        placement=load_placement(cfg),
        source=cfg.source,
    )
    cfg.reject_unknown()
    return config


async def _waiting_out_outages(
    section: str, check: Callable[[], Awaitable[T]], sleep: Callable[[float], Awaitable[None]]
) -> T:
    """``check()``, retried with backoff while Neutron is unreachable (TemporaryError), so
    a Neutron outage at start is not a crash loop. A ConfigError is final."""
    backoff = Backoff(base=1.0, cap=30.0)
    while True:
        try:
            return await check()
        except TemporaryError as exc:
            delay = backoff.next()
            LOG.warning("cannot check [%s] yet (%s); retrying in %.0fs", section, exc, delay)
            await sleep(delay)


async def validated_defaults(
    neutron: Neutron,
    config: ControllerConfig,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> s.ValidatedNeutron:
    """``[neutron_defaults]`` checked against Neutron; waits (backing off) while Neutron is
    unreachable. A ConfigError (the subnet does not exist...) is final."""
    return await _waiting_out_outages(
        "neutron_defaults",
        lambda: s.validate_against_neutron(neutron, config.defaults, config.source),
        sleep,
    )


async def validated_nested(
    neutron: Neutron,
    config: ControllerConfig,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[NeutronSubnet, ...]:
    """``[pod_vif_nested]`` checked against Neutron (trunk extension, worker subnets);
    waits out an unreachable Neutron like :func:`validated_defaults`."""
    return await _waiting_out_outages(
        "pod_vif_nested", lambda: s.validate_nested(neutron, config.nested, config.source), sleep
    )


@dataclass
class App:
    """A built controller: ``await run()`` until cancelled, then ``await close()``."""

    controller: Controller
    client: KubeClient
    neutron: Neutron
    provider: PooledPortProvider | PlainPortProvider | TargetedPorts
    metrics: Metrics
    health: HealthState
    server: HealthServer | None
    engines: list[Engine] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    extra_crds: list[dict[str, Any]] = field(default_factory=list)
    """CRDs of optional parts (KuryrLoadBalancer when Services are on)."""

    async def run(self) -> None:
        await ensure_crds(self.client, [*crd_manifests(), *self.extra_crds])
        if self.server is not None:
            await self.server.start()
        await self.controller.run()

    async def close(self) -> None:
        await self.provider.stop()
        if self.server is not None:
            await self.server.stop()
        await self.client.aclose()
        for close in self.closers:
            close()
        self.neutron.close()


CLUSTER_ID_NAMESPACE = "kube-system"
"""Its uid names the cluster when ``kuryr.conf`` has no ``[neutron_defaults] cluster_id``:
every cluster has it, it never changes during the cluster's life, and two clusters never
share it (the convention other network plugins use for a cluster's identity)."""


async def resolve_cluster_id(client: KubeClient, configured: str) -> str:
    """``configured`` if set, else ``k8s-<uid of the kube-system namespace>``."""
    if configured:
        return configured
    try:
        ns = await client.get(NAMESPACES, CLUSTER_ID_NAMESPACE)
    except KuryrError as exc:
        raise ConfigError(
            "[neutron_defaults] cluster_id is not set and the controller could not read "
            f"namespace {CLUSTER_ID_NAMESPACE} to derive it from its uid ({exc}): set "
            "cluster_id = <a name unique among the clusters sharing the Neutron project>, "
            "or allow get on that namespace"
        ) from exc
    uid = str(objects.meta(ns).get("uid") or "")
    if not uid:
        raise ConfigError(
            f"[neutron_defaults] cluster_id is not set and namespace {CLUSTER_ID_NAMESPACE} "
            "has no uid to derive it from: set cluster_id"
        )
    cluster_id = f"k8s-{uid}"
    LOG.warning(
        "no [neutron_defaults] cluster_id: using %s (the uid of namespace %s); every port "
        "is tagged kuryr.cluster:%s. Set it in kuryr.conf to keep the id if the cluster "
        "is ever rebuilt from scratch",
        cluster_id,
        CLUSTER_ID_NAMESPACE,
        cluster_id,
    )
    return cluster_id


async def build(
    config: ControllerConfig,
    kube: KubeSettings,
    identity: str,
    *,
    neutron: Neutron | None = None,
) -> App:
    """Connect, validate ``[neutron_defaults]`` against Neutron, and wire everything."""
    k = config.kubernetes
    neutron = neutron or Neutron.connect(config.neutron)
    validated = await validated_defaults(neutron, config)
    network = PodNetwork(
        project_id=validated.project_id,
        network_id=validated.network.id,
        subnet_id=validated.subnet.id,
        security_groups=validated.security_groups,
        subnets=(
            PodSubnet(validated.subnet.id, validated.subnet.cidr, validated.subnet.gateway_ip),
        ),
        mtu=validated.mtu,
        bridge=config.defaults.ovs_bridge,
    )
    client = KubeClient.from_settings(kube)
    try:
        cluster_id = await resolve_cluster_id(client, config.defaults.cluster_id)
    except ConfigError:
        await client.aclose()
        raise
    config = replace(config, defaults=replace(config.defaults, cluster_id=cluster_id))
    pods = Informer(client, PODS)
    kps = Informer(client, KURYRPORTS)

    async def live_owners() -> Collection[str]:
        if not kps.synced:
            raise ResourceNotReady("the KuryrPort cache has not synced yet")
        return {str((kp.get("spec") or {}).get("podUid") or "") for kp in kps.store.items()} - {""}

    async def live_refs() -> Mapping[str, str]:
        """Port id -> pod uid for every port a KuryrPort status names (the ownership
        authority, ``pool-ownership.md``); deleting KuryrPorts still own theirs."""
        if not kps.synced:
            raise ResourceNotReady("the KuryrPort cache has not synced yet")
        refs: dict[str, str] = {}
        # A port named twice (hand-edited status) goes to the older KuryrPort.
        by_age = sorted(
            kps.store.items(), key=lambda kp: objects.meta(kp).get("creationTimestamp") or ""
        )
        for kp in by_age:
            uid = str((kp.get("spec") or {}).get("podUid") or "")
            for pid in port_ids_in(kp):
                refs.setdefault(pid, uid)
        return refs

    tagging = PortTagging(config.defaults.cluster_id, config.defaults.resource_tags)
    driver = k.pod_vif_driver
    metrics = Metrics()
    metrics.registry.register(NeutronCollector(neutron.stats))
    caches: list[Informer] = []
    resolver: NodeResolver | None = None
    subports: SubportProvider | None = None
    provider: PooledPortProvider | PlainPortProvider | TargetedPorts
    bare = (
        make_provider(neutron, tagging, config.pool, live_owners, live_refs)
        if driver != "nested-vlan"
        else None
    )
    if driver in s.NESTED_DRIVERS:
        worker_subnets = await validated_nested(neutron, config)
        nodes = Informer(client, NODES)
        caches.append(nodes)
        resolver = NodeResolver(
            neutron, worker_subnets, nodes.store.get, require_trunk=driver == "nested-vlan"
        )
        subports = SubportProvider(
            neutron, tagging, config.pool, live_owners, on_trunk_gone=resolver.forget_trunk
        )
        provider = TargetedPorts(neutron, bare, subports)
    else:
        assert bare is not None
        provider = bare
    gc_forget = None
    gc_node_gone = None
    if isinstance(bare, PooledPortProvider):
        gc_forget = bare.forget
        gc_node_gone = bare.forget_node
    if config.pool.enabled and isinstance(provider, PooledPortProvider | TargetedPorts):
        metrics.registry.register(PoolCollector(provider))

    async def live_nodes() -> Collection[str]:
        return {objects.name(node) for node in (await client.list_all(NODES)).items}

    async def live_trunks() -> Collection[str]:
        """Trunks of the live nodes that are VMs (raises if one cannot be resolved now)."""
        assert resolver is not None
        names = await live_nodes()
        if not names:  # as for bare-metal pools: an empty node list never wipes the pools
            raise ResourceNotReady("no nodes known")
        trunks = set()
        for name in names:
            try:
                target = await resolver.resolve(name)
            except NodeNotNested:
                continue
            if isinstance(target, TrunkTarget):
                trunks.add(target.trunk_id)
        return trunks

    def forget_port(port_id: str) -> None:
        if gc_forget is not None:
            gc_forget(port_id)
        if subports is not None:
            subports.forget(port_id)

    gc = GarbageCollector(
        neutron,
        tagging,
        config.gc,
        live_owners,
        live_nodes=live_nodes,
        on_deleted=forget_port,
        on_node_gone=gc_node_gone,
        live_trunks=live_trunks if subports is not None else None,
        on_trunk_gone=subports.forget_trunk if subports is not None else None,
        busy_trunks=subports.busy_trunks if subports is not None else None,
        known=provider.owns if isinstance(provider, PooledPortProvider | TargetedPorts) else None,
    )
    events = EventRecorder(client, "kuryr-controller", host=identity)
    engine_settings = EngineSettings(workers=k.workers)
    elector = None
    if k.controller_ha:
        elector = LeaderElector(
            client,
            LeaderElectionConfig(
                namespace=k.leader_lease_namespace,
                name=k.leader_lease_name,
                identity=identity,
                lease_duration=k.leader_lease_duration,
                renew_deadline=k.leader_renew_deadline,
                retry_period=k.leader_retry_period,
            ),
        )
    first_seen = FirstSeen()
    pods.add_handler(sighting(pods.store, first_seen.saw))
    kp_engine_ref: list[Engine] = []

    def port_status_changed(key: str) -> None:
        for e in kp_engine_ref:
            e.enqueue(key)

    statuses = PortStatusWatcher(neutron, port_status_changed)
    placement, placement_parts = _placement(
        config,
        client,
        neutron,
        network,
        validated.project_id,
        pods,
        kps,
        events,
        bare,
        requeue_port=port_status_changed,
    )
    kp_reconciler = KuryrPortReconciler(
        client,
        pods.store,
        kps.store,
        provider,
        network,
        QueuedEvents(events),  # off the pods' path: one Event per pod in a burst
        metrics=metrics,
        poll_max=k.port_status_poll_max,
        nodes=resolver,
        statuses=statuses,
        may_claim=elector.holds_lease if elector is not None else None,
        first_seen=first_seen,
        placement=placement,
    )
    workload = workload_of(pods.store)  # fair share per workload (engine.py)
    kp_engine = Engine(kp_reconciler, engine_settings, metrics=metrics, group_of=workload)
    kp_engine_ref.append(kp_engine)
    engines = [
        Engine(
            PodReconciler(client, pods.store, kps.store, on_seen=first_seen.saw),
            engine_settings,
            metrics=metrics,
            group_of=workload,
        ),
        kp_engine,
    ]

    async def our_ports() -> list[NeutronPort]:
        return await neutron.list_ports(tags=[tagging.cluster_tag])

    async def sweep() -> None:
        await kp_reconciler.sweep_forever(our_ports, k.port_sweep_interval)

    if not config.services.pods_enabled:  # [kubernetes] enabled_handlers without pods
        engines = []
    background: list[Callable[[], Awaitable[None]]] = (
        [gc.run_forever, sweep] if config.services.pods_enabled else []
    )
    closers: list[Callable[[], None]] = []
    services_part = None
    if config.services.enabled:
        part = services_part = await build_services(
            config.services,
            source=config.source,
            neutron_settings=config.neutron,
            neutron=neutron,
            client=client,
            events=events,
            cluster_id=config.defaults.cluster_id,
            project_id=validated.project_id,
            resource_tags=config.defaults.resource_tags,
            member_subnets=(
                *((sn.id, sn.cidr) for sn in network.subnets),
                *((sn.id, sn.cidr) for sn in (worker_subnets if subports is not None else ())),
            ),
            security_groups=validated.security_groups,
            engine_settings=engine_settings,
            metrics=metrics,
        )
        engines += part.engines
        caches += part.informers
        background += part.background
        closers += part.stop

    health = HealthState()

    async def lead_gauge_on() -> None:
        metrics.leader.set(1)

    async def lead_gauge_off() -> None:
        metrics.leader.set(0)

    async def statuses_on() -> None:
        statuses.start()

    scope = Scope(
        tagging,
        validated.project_id,
        validated.network.id,
        config.pool.enabled,
        worker_subnets=tuple(worker_subnets) if subports is not None else (),
    )

    async def take_over() -> None:
        """Leader only, before the pools' rebuild: upstream's CRD and state (takeover.py)."""
        await upgrade_crds(client, [*crd_manifests(), *placement_parts.crds])
        await adopt_upstream(client, neutron, scope)
        if config.placement.subnets_driver == "namespace":
            await adopt_upstream_networks(
                client,
                neutron,
                NetworkScope(CLUSTER_TAG_PREFIX + config.defaults.cluster_id, scope.project_id),
            )
        # upstream's Services and NetworkPolicies (takeover_services.py, takeover_policies.py)
        if services_part is not None:
            await upgrade_crds(client, [klb_crd_manifest()])  # upstream's: no /status
            await adopt_upstream_services(
                client, services_part.octavia, neutron, services_part.settings
            )
        if config.placement.security_groups_driver == "policy":
            await adopt_upstream_policies(
                client,
                SecurityApi(neutron),
                PolicyScope(CLUSTER_TAG_PREFIX + config.defaults.cluster_id, scope.project_id),
            )

    async def retire_upstream() -> None:
        """Leader only: adopted upstream policy SGs go once no port uses them."""
        if config.placement.security_groups_driver == "policy":
            tag = CLUSTER_TAG_PREFIX + config.defaults.cluster_id
            await retire_upstream_sgs(SecurityApi(neutron), tag)

    background.append(retire_upstream)

    engines += placement_parts.engines
    caches += placement_parts.caches
    controller = Controller(
        informers=[pods, kps],
        engines=engines,
        elector=elector,
        health=health,
        resync_period=k.watch_reconcile_period,
        startup=[
            lead_gauge_on,
            take_over,
            *placement_parts.startup,
            provider.start,
            statuses_on,
        ],
        background=background,
        shutdown=[statuses.stop, provider.stop, lead_gauge_off],
        caches=caches,
    )
    server = None
    if k.health_server_port:
        server = HealthServer(health, metrics.registry, k.health_server_host, k.health_server_port)
    LOG.info(
        "built: cluster %s, %s, pod subnet %s (%s), pools %s, HA %s as %s",
        config.defaults.cluster_id,
        driver,
        network.subnet_id,
        validated.subnet.cidr,
        "on" if config.pool.enabled else "off",
        "on" if elector else "off",
        identity,
    )
    app = App(controller, client, neutron, provider, metrics, health, server, engines)
    app.closers = closers
    if config.services.enabled:
        app.extra_crds = [klb_crd_manifest()]
    app.extra_crds += placement_parts.crds
    return app


@dataclass
class PlacementParts:
    """What namespace networks and NetworkPolicy SGs add to a controller."""

    engines: list[Engine] = field(default_factory=list)
    caches: list[Informer] = field(default_factory=list)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    crds: list[dict[str, Any]] = field(default_factory=list)


def _placement(
    config: ControllerConfig,
    client: KubeClient,
    neutron: Neutron,
    network: PodNetwork,
    project_id: str,
    pods: Informer,
    kps: Informer,
    events: EventRecorder,
    bare: PooledPortProvider | PlainPortProvider | None,
    requeue_port: Callable[[str], None] = lambda key: None,
) -> tuple[PodPlacement, PlacementParts]:
    """Where pods go: ``[kubernetes] pod_subnets_driver`` (``default`` | ``namespace``) and
    ``pod_security_groups_driver`` (``default`` | ``policy``), see ``placement.py``.
    ``requeue_port(key)``: look at a KuryrPort again (a placement that made it wait is
    ready)."""
    p = config.placement
    parts = PlacementParts()
    placement: PodPlacement = StaticPlacement(network)
    if p.subnets_driver == "default" and p.security_groups_driver == "default":
        return placement, parts
    sec = SecurityApi(neutron)
    namespaces = Informer(client, NAMESPACES)
    parts.crds = list(kuryrnetwork.crd_manifests())
    if p.subnets_driver == "namespace":

        async def drain(network_id: str) -> None:
            if isinstance(bare, PooledPortProvider):
                await bare.drain_network(network_id)

        ns = build_namespace_parts(
            client,
            sec,
            p,
            cluster_id=config.defaults.cluster_id,
            project_id=project_id,
            namespaces=namespaces,
            drain_network=drain,
        )
        placement = ns.placement(network)
        parts.engines.append(ns.engine)
        parts.caches += ns.caches
    if p.security_groups_driver == "policy":
        common: dict[str, Any] = {
            "cluster_id": config.defaults.cluster_id,
            "project_id": project_id,
            "pods": pods,
            "kuryrports": kps,
            "namespaces": namespaces,
            "events": events,
        }
        pol: PolicyParts | IdentityParts
        if p.security_group_mode == "identity":
            pol = build_identity_parts(client, sec, on_ready=requeue_port, **common)
        else:
            pol = build_policy_parts(client, sec, **common)
        placement = pol.placement(placement)
        parts.engines.append(pol.engine)
        parts.caches += pol.caches
        parts.startup.append(pol.startup)
    if namespaces not in parts.caches:
        parts.caches.append(namespaces)
    return placement, parts
