"""Services as Octavia load balancers: settings, garbage collection and wiring.

``kuryr.conf`` (upstream names): ``[neutron_defaults] service_subnet`` (the VIP subnet,
whose CIDR is the cluster's Service range), ``[neutron_defaults] external_svc_net`` (floating
IPs of ``type: LoadBalancer``), ``[neutron_defaults] lbaas_activation_timeout``,
``[kubernetes] endpoints_driver_octavia_provider`` (``ovn`` default; ``amphora``),
``[kubernetes] enabled_handlers`` (``service``/``endpoints``/``kuryrloadbalancer`` turn
this part on, ``vif``/``kuryrport`` the pod part; unset: both, Services only with a
``service_subnet``), ``[octavia_defaults] lb_algorithm``, ``enforce_sg_rules`` (upstream's
default true; amphora only: the members' groups narrow the listeners' ``allowed_cidrs``;
the ovn provider keeps the client's address, nothing to do) and ours:
``[octavia_defaults] endpoint_override`` (Octavia URL for a keystone-less cloud),
``health_monitors``.

:func:`build_services` makes the informers (Services, EndpointSlices,
KuryrLoadBalancers), the two reconcilers on engines that only take their own keys, the
routing of EndpointSlice events to their Service's key, a resync and the LB garbage
collector; the composition root (:mod:`kuryr_k8s.controller.build`) adds them to the
:class:`~kuryr_k8s.controller.service.Controller`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kuryr_k8s.controller.crds import ensure_crds
from kuryr_k8s.controller.engine import Engine, EngineSettings
from kuryr_k8s.controller.kuryrports import EventSink
from kuryr_k8s.controller.loadbalancers import KuryrLoadBalancerReconciler, LbSettings, owner_of
from kuryr_k8s.controller.metrics import Metrics
from kuryr_k8s.controller.services import (
    SLICES_BY_SERVICE,
    ServiceReconciler,
    owner_uid,
    slice_service_key,
)
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.informer import Informer
from kuryr_k8s.k8s.resources import ENDPOINTSLICES, KURYRLOADBALANCERS, SERVICES
from kuryr_k8s.model import kuryrloadbalancer as klb_model
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError, KuryrError, TemporaryError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.metrics import OctaviaCollector
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.octavia import Octavia, connect

LOG = logging.getLogger(__name__)

SERVICE_HANDLERS = frozenset({"service", "endpoints", "kuryrloadbalancer", "lb", "lbaasspec"})
POD_HANDLERS = frozenset({"vif", "kuryrport", "pod"})
PROVIDERS = ("ovn", "amphora")
DEFAULT_ALGORITHM = {"ovn": "SOURCE_IP_PORT", "amphora": "ROUND_ROBIN"}


@dataclass(frozen=True)
class ServicesConfig:
    """The Services part of ``kuryr.conf``."""

    enabled: bool = False
    pods_enabled: bool = True
    """``[kubernetes] enabled_handlers`` names a pod handler (or is unset)."""
    service_subnet: str = ""
    external_svc_net: str = ""
    provider: str = "ovn"
    lb_algorithm: str = "SOURCE_IP_PORT"
    octavia_endpoint: str = ""
    health_monitors: bool = False
    enforce_sg_rules: bool = True
    activation_timeout: float = 300.0
    gc_interval: float = 90.0
    gc_grace_period: float = 600.0


def load_services(cfg: ConfigFile) -> ServicesConfig:
    """Read the options above; ConfigError names the option and value."""
    handlers = {h.lower() for h in cfg.get_list("kubernetes", "enabled_handlers")}
    subnet = cfg.get_str("neutron_defaults", "service_subnet")
    provider = cfg.get_choice(
        "kubernetes", "endpoints_driver_octavia_provider", "default", ("default", *PROVIDERS)
    )
    provider = "ovn" if provider == "default" else provider
    wanted = bool(handlers & SERVICE_HANDLERS) if handlers else bool(subnet)
    if wanted and not subnet:
        raise ConfigError(
            f"{cfg.source}: [kubernetes] enabled_handlers = {','.join(sorted(handlers))} "
            "turns Services on, which needs [neutron_defaults] service_subnet = <subnet id "
            "whose CIDR is the cluster's Service range>"
        )
    timeout = cfg.get_float("neutron_defaults", "lbaas_activation_timeout", 300.0)
    if timeout <= 0:
        raise ConfigError(
            f"{cfg.source}: [neutron_defaults] lbaas_activation_timeout = {timeout}: must be > 0"
        )
    cfg.tolerate("octavia_defaults", "member_mode", "sg_mode")
    return ServicesConfig(
        enabled=wanted,
        pods_enabled=not handlers or bool(handlers & POD_HANDLERS),
        service_subnet=subnet,
        external_svc_net=cfg.get_str("neutron_defaults", "external_svc_net"),
        provider=provider,
        lb_algorithm=cfg.get_str("octavia_defaults", "lb_algorithm", DEFAULT_ALGORITHM[provider]),
        octavia_endpoint=cfg.get_str("octavia_defaults", "endpoint_override"),
        health_monitors=cfg.get_bool("octavia_defaults", "health_monitors", False),
        enforce_sg_rules=cfg.get_bool("octavia_defaults", "enforce_sg_rules", True),
        activation_timeout=timeout,
        gc_interval=cfg.get_float("garbage_collection", "interval", 90.0),
        gc_grace_period=cfg.get_float("garbage_collection", "grace_period", 600.0),
    )


class KeyedEngine(Engine):
    """An engine that ignores the keys the Controller broadcasts (pods, KuryrPorts) and
    takes only what its own routing hands it (:meth:`route`)."""

    def enqueue(self, key: str) -> None:
        return

    def enqueue_all(self, keys: object) -> None:
        return

    def route(self, key: str) -> None:
        super().enqueue(key)


@dataclass
class ServicesPart:
    informers: list[Informer]
    engines: list[Engine]
    background: list[Callable[[], Awaitable[None]]]
    octavia: Octavia
    lb: KuryrLoadBalancerReconciler
    settings: LbSettings
    stop: list[Callable[[], None]] = field(default_factory=list)


async def validated_service_subnet(
    neutron: Neutron, octavia: Octavia, cfg: ServicesConfig, source: str
) -> str:
    """The service subnet's CIDR once Neutron confirms the settings. The provider is
    checked too if Octavia answers; an Octavia outage at start does not hold the
    controller (pods need none of it): load balancers then fail with a condition and are
    retried."""
    subnet = await neutron.get_subnet(cfg.service_subnet)
    if subnet is None:
        raise ConfigError(
            f"{source}: [neutron_defaults] service_subnet = {cfg.service_subnet}: no such "
            "subnet in Neutron"
        )
    if cfg.external_svc_net and await neutron.get_network(cfg.external_svc_net) is None:
        raise ConfigError(
            f"{source}: [neutron_defaults] external_svc_net = {cfg.external_svc_net}: no such "
            "network in Neutron"
        )
    try:
        providers = await octavia.providers()
    except TemporaryError as exc:
        LOG.warning("Octavia does not answer (%s): Services wait for it", exc)
        return subnet.cidr
    if cfg.provider not in providers:
        raise ConfigError(
            f"{source}: [kubernetes] endpoints_driver_octavia_provider = {cfg.provider}: "
            f"Octavia offers {', '.join(providers) or 'no provider'}"
        )
    return subnet.cidr


async def build_services(
    cfg: ServicesConfig,
    *,
    source: str,
    neutron_settings: NeutronSettings,
    neutron: Neutron,
    client: KubeClient,
    events: EventSink,
    cluster_id: str,
    project_id: str,
    resource_tags: tuple[str, ...],
    member_subnets: tuple[tuple[str, str], ...],
    security_groups: tuple[str, ...],
    engine_settings: EngineSettings,
    metrics: Metrics | None = None,
    octavia: Octavia | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    resync_period: float = 300.0,
) -> ServicesPart:
    octavia = octavia or connect(neutron_settings, cfg.octavia_endpoint)
    if metrics is not None:
        metrics.registry.register(OctaviaCollector(octavia.stats))
    while True:  # wait out a Neutron outage at start; a ConfigError is final
        try:
            cidr = await validated_service_subnet(neutron, octavia, cfg, source)
            break
        except TemporaryError as exc:
            LOG.warning("cannot check the Services settings yet (%s); retrying in 5s", exc)
            await sleep(5.0)
    services = Informer(client, SERVICES)
    slices = Informer(client, ENDPOINTSLICES, indexers={SLICES_BY_SERVICE: slice_service_key})
    klbs = Informer(client, KURYRLOADBALANCERS)
    svc_settings = klb_model.ServiceLbSettings(
        provider=cfg.provider,
        project_id=project_id,
        subnet_id=cfg.service_subnet,
        subnet_cidr=cidr,
        security_groups=security_groups,
    )
    lb_settings = LbSettings(
        cluster_id=cluster_id,
        project_id=project_id,
        vip_subnet_id=cfg.service_subnet,
        provider=cfg.provider,
        algorithm=cfg.lb_algorithm,
        member_subnets=member_subnets,
        external_network_id=cfg.external_svc_net,
        resource_tags=resource_tags,
        vip_subnet_cidr=cidr,
        health_monitors=cfg.health_monitors,
        enforce_sg_rules=cfg.enforce_sg_rules,
        step_wait=min(30.0, cfg.activation_timeout),
    )
    svc_engine = KeyedEngine(
        ServiceReconciler(client, services.store, slices.store, klbs.store, svc_settings, events),
        engine_settings,
        metrics=metrics,
    )
    lb = KuryrLoadBalancerReconciler(
        client, klbs.store, services.store, octavia, neutron, lb_settings, events
    )
    klb_engine = KeyedEngine(lb, engine_settings, metrics=metrics)
    slice_owner: dict[str, str] = {}

    def on_slice(key: str) -> None:
        eps = slices.store.get(key)
        owners = slice_service_key(eps) if eps is not None else []
        previous = slice_owner.pop(key, None)
        if owners:
            slice_owner[key] = owners[0]
        for svc_key in {*owners, *([previous] if previous else [])}:
            svc_engine.route(svc_key)

    services.add_handler(svc_engine.route)
    # loadBalancerSourceRanges are read from the Service (the KuryrLoadBalancer spec keeps
    # upstream's fields): a change of them alone must reach the LB's listeners.
    services.add_handler(klb_engine.route)
    klbs.add_handler(svc_engine.route)
    klbs.add_handler(klb_engine.route)
    slices.add_handler(on_slice)

    async def resync() -> None:
        while True:
            for key in services.store.keys():  # noqa: SIM118 - a list, not a dict
                svc_engine.route(key)
            for key in klbs.store.keys():  # noqa: SIM118
                svc_engine.route(key)
                klb_engine.route(key)
            await sleep(resync_period)

    async def collect() -> None:
        """Delete load balancers (and floating IPs) of our cluster whose Service is gone."""
        first_seen: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await sleep(cfg.gc_interval)
            try:
                # The CRD again: somebody may have removed it while we ran (then nothing
                # of ours could be written until a restart).
                await ensure_crds(client, [klb_model.crd_manifest()])
                await _collect_once(first_seen, loop.time())
            except KuryrError as exc:
                LOG.warning("load balancer GC pass failed: %s", exc)

    async def _collect_once(first_seen: dict[str, float], now: float) -> None:
        if not (services.synced and klbs.synced):
            return
        live = {objects.uid(s) for s in services.store.items()}
        live |= {owner_uid(k) for k in klbs.store.items()}
        owners = set()
        for found in await octavia.find_loadbalancers([lb_settings.cluster_tag]):
            owners.add(owner_of(found.tags))
        for fip in await neutron.list_floating_ips(tags=lb_settings.cluster_tag):
            owners.add(owner_of(fip.tags))
        for owner in owners - live - {""}:
            since = first_seen.setdefault(owner, now)
            if now - since < cfg.gc_grace_period:
                continue
            LOG.info("GC: the Service with uid %s is gone: deleting its load balancer", owner)
            await lb.release(owner)
            first_seen.pop(owner, None)
        for owner in list(first_seen):
            if owner in live or owner not in owners:
                first_seen.pop(owner)

    return ServicesPart(
        informers=[services, slices, klbs],
        engines=[svc_engine, klb_engine],
        background=[resync, collect],
        octavia=octavia,
        lb=lb,
        settings=lb_settings,
        stop=[octavia.close],
    )


def member_subnets_of(*subnets: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """Valid (id, CIDR) pairs, dropping duplicates."""
    out = []
    for subnet_id, cidr in subnets:
        ipaddress.ip_network(cidr)
        if (subnet_id, cidr) not in out:
            out.append((subnet_id, cidr))
    return tuple(out)
