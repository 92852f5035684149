"""Controller settings: typed, one frozen dataclass per ``kuryr.conf`` section.

Built once by the composition root (``kuryr controller`` main) from a
:class:`~kuryr_k8s.model.config.ConfigFile`; nothing here is global. Each ``load_*``
function reads one section with the upstream option names and raises
:class:`~kuryr_k8s.model.errors.ConfigError` naming the section, option and value.

Sections and owners:

* ``[neutron]`` (:func:`load_neutron`), ``[neutron_defaults]`` (:func:`load_neutron_defaults`),
  ``[vif_pool]`` (:func:`load_vif_pool`, which also reads ``[kubernetes] vif_pool_driver``),
  ``[garbage_collection]`` (:func:`load_gc`): ports, pools and GC.
* ``[kubernetes]`` (the rest): the reconcile side; ``pod_vif_driver`` and
  ``[pod_vif_nested]`` (:func:`load_nested`): nested pods on trunk subports.

Values that only Neutron can check (project, subnet, security groups exist) are checked by
:func:`validate_against_neutron` (below) at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import Neutron, NeutronNetwork, NeutronSubnet

POD_VIF_DRIVERS = ("neutron-vif", "nested-vlan", "mixed")
NESTED_DRIVERS = ("nested-vlan", "mixed")
REFUSED_DRIVERS = {
    "nested-macvlan": (
        "ML2/OVN drops the replies to a macvlan pod behind allowed_address_pairs (Neutron "
        "Zed) or refuses non-VRRP MAC addresses there (Neutron 29)"
    ),
    "nested-dpdk": "it needs DPDK in the VM and Nova's interface attach; not supported",
}

# --------------------------------------------------------------------------------------
# Ports, pools, garbage collection (Neutron side)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeutronDefaults:
    """``[neutron_defaults]``: where pod ports go and what they carry."""

    project: str
    """Project (tenant) id that owns pod ports; put in every create body (noauth needs it)."""
    pod_subnet: str
    """Subnet id pods get their address from; its network is the pods' network."""
    pod_security_groups: tuple[str, ...]
    """Security group ids applied to every pod port (sorted, so equal sets compare equal)."""
    cluster_id: str
    """Our extension: tags every port ``kuryr.cluster:<cluster_id>``. Garbage collection
    deletes ports with this tag whose owner is gone, so it must be unique per cluster
    sharing a Neutron project. Empty in the file (upstream has no such option): the
    controller derives ``k8s-<uid of the kube-system namespace>`` at start
    (:func:`kuryr_k8s.controller.build.resolve_cluster_id`)."""
    ovs_bridge: str = "br-int"
    """The integration bridge the node plugs pod ports into (published in the VIF)."""
    network_device_mtu: int = 0
    """MTU for pod interfaces; 0 means "the network's MTU"."""
    resource_tags: tuple[str, ...] = ()
    """Extra tags put on every port we create (upstream semantics)."""


@dataclass(frozen=True)
class VifPoolSettings:
    """``[vif_pool]`` (upstream names and semantics) plus ``[kubernetes] vif_pool_driver``."""

    enabled: bool = False
    """``[kubernetes] vif_pool_driver``: ``neutron`` pools pre-bound ports per
    (node, project, network, security groups); ``noop`` (upstream default) creates a port
    per pod and deletes it on release."""
    ports_pool_min: int = 5
    """Below this many free ports in a pool, a batch is created in the background."""
    ports_pool_batch: int = 10
    """How many ports one bulk create makes."""
    ports_pool_max: int = 0
    """A released port is deleted instead of recycled when the pool already holds this
    many free ports; 0 means no limit."""
    ports_pool_update_frequency: float = 20.0
    """Seconds between pool maintenance passes (refill to min, trim to max)."""


@dataclass(frozen=True)
class GcSettings:
    """``[garbage_collection]``: our extension; upstream had no equivalent knobs."""

    interval: float = 90.0
    """Seconds between passes over the ports tagged with our cluster id."""
    grace_period: float = 600.0
    """A port whose owner pod is gone is deleted only once it has been unowned this long
    (by Neutron's ``updated_at``), so a pod being created right now is never hit."""


def load_neutron(cfg: ConfigFile) -> NeutronSettings:
    """``[neutron] cloud`` (clouds.yaml) or ``[neutron] endpoint_override`` (noauth)."""
    section = "neutron"
    cloud = cfg.get_str(section, "cloud")
    auth_type = cfg.get_choice(section, "auth_type", "", ["", "none", "password", "v3password"])
    endpoint = cfg.get_str(section, "endpoint_override")
    if not cloud and not endpoint:
        raise ConfigError(
            f"{cfg.source}: [neutron] needs either cloud = <name in clouds.yaml> or "
            "endpoint_override = <Neutron URL> (with auth_type = none)"
        )
    if endpoint and not cloud and auth_type not in ("", "none"):
        raise ConfigError(
            f"{cfg.source}: [neutron] auth_type = {auth_type!r} with endpoint_override and no "
            "cloud: keystone auth is configured through clouds.yaml (set cloud)"
        )
    return NeutronSettings(
        cloud=cloud,
        endpoint=endpoint,
        region_name=cfg.get_str(section, "region_name"),
        timeout=cfg.get_float(section, "timeout", 60.0),
        max_concurrency=cfg.get_int(section, "max_concurrency", 8, minimum=1),
    )


def load_neutron_defaults(cfg: ConfigFile) -> NeutronDefaults:
    section = "neutron_defaults"
    sgs = cfg.get_list(section, "pod_security_groups")
    if not sgs:
        raise ConfigError(
            f"{cfg.source}: [neutron_defaults] pod_security_groups is required: "
            "comma-separated security group ids for pod ports"
        )
    return NeutronDefaults(
        project=cfg.get_required(section, "project", "the project id owning pod ports"),
        pod_subnet=cfg.get_required(section, "pod_subnet", "the subnet id for pod addresses"),
        pod_security_groups=tuple(sorted(set(sgs))),
        cluster_id=cfg.get_str(section, "cluster_id", ""),
        ovs_bridge=cfg.get_str(section, "ovs_bridge", "br-int"),
        network_device_mtu=cfg.get_int(section, "network_device_mtu", 0, minimum=0),
        resource_tags=tuple(cfg.get_list(section, "resource_tags")),
    )


def load_vif_pool(cfg: ConfigFile) -> VifPoolSettings:
    driver = cfg.get_choice("kubernetes", "vif_pool_driver", "noop", ["noop", "neutron"])
    section = "vif_pool"
    settings = VifPoolSettings(
        enabled=driver == "neutron",
        ports_pool_min=cfg.get_int(section, "ports_pool_min", 5, minimum=0),
        ports_pool_batch=cfg.get_int(section, "ports_pool_batch", 10, minimum=1),
        ports_pool_max=cfg.get_int(section, "ports_pool_max", 0, minimum=0),
        ports_pool_update_frequency=cfg.get_float(section, "ports_pool_update_frequency", 20.0),
    )
    if settings.ports_pool_update_frequency <= 0:
        raise ConfigError(
            f"{cfg.source}: [vif_pool] ports_pool_update_frequency = "
            f"{settings.ports_pool_update_frequency}: must be > 0"
        )
    if settings.ports_pool_max and settings.ports_pool_max < settings.ports_pool_min:
        raise ConfigError(
            f"{cfg.source}: [vif_pool] ports_pool_max = {settings.ports_pool_max}: must be 0 "
            f"(no limit) or >= ports_pool_min ({settings.ports_pool_min})"
        )
    return settings


def load_gc(cfg: ConfigFile) -> GcSettings:
    section = "garbage_collection"
    settings = GcSettings(
        interval=cfg.get_float(section, "interval", 90.0),
        grace_period=cfg.get_float(section, "grace_period", 600.0),
    )
    if settings.interval <= 0 or settings.grace_period < 0:
        raise ConfigError(
            f"{cfg.source}: [garbage_collection] interval must be > 0 and grace_period >= 0 "
            f"(got {settings.interval}, {settings.grace_period})"
        )
    return settings


@dataclass(frozen=True)
class ValidatedNeutron:
    """``[neutron_defaults]`` as Neutron confirmed it at start."""

    project_id: str
    subnet: NeutronSubnet
    network: NeutronNetwork
    security_groups: tuple[str, ...]
    mtu: int
    """``network_device_mtu`` if set, else the network's MTU."""


async def validate_against_neutron(
    neutron: Neutron, defaults: NeutronDefaults, source: str = "kuryr.conf"
) -> ValidatedNeutron:
    """Check that the project, pod subnet and security groups exist in Neutron.

    Raises ConfigError naming the option and value (refuse to start); Neutron being
    unreachable is a TemporaryError (retry, or exit and let the supervisor restart)."""

    def bad(option: str, value: object, why: str) -> ConfigError:
        return ConfigError(f"{source}: [neutron_defaults] {option} = {value}: {why}")

    subnet = await neutron.get_subnet(defaults.pod_subnet)
    if subnet is None:
        raise bad("pod_subnet", defaults.pod_subnet, "no such subnet in Neutron")
    network = await neutron.get_network(subnet.network_id)
    if network is None:
        raise bad("pod_subnet", defaults.pod_subnet, f"its network {subnet.network_id} is gone")
    sg_projects = set()
    for sg_id in defaults.pod_security_groups:
        sg = await neutron.get_security_group(sg_id)
        if sg is None:
            raise bad("pod_security_groups", sg_id, "no such security group in Neutron")
        sg_projects.add(sg.project_id)
    project = defaults.project
    if (
        project != subnet.project_id
        and project not in sg_projects
        and not await neutron.project_has_resources(project)
    ):
        raise bad("project", project, "Neutron knows no network or security group of it")
    if subnet.project_id != project and not (subnet.shared or network.shared):
        raise bad(
            "pod_subnet",
            defaults.pod_subnet,
            f"belongs to project {subnet.project_id} and is not shared with {project}",
        )
    mtu = defaults.network_device_mtu or network.mtu
    if network.mtu and mtu > network.mtu:
        raise bad("network_device_mtu", mtu, f"larger than the pod network's MTU ({network.mtu})")
    return ValidatedNeutron(project, subnet, network, defaults.pod_security_groups, mtu)


# --------------------------------------------------------------------------------------
# Kubernetes side (reconcilers, leader election): [kubernetes]
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubernetesSettings:
    """``[kubernetes]`` (upstream names where they exist) plus ``[health_server]`` port and
    ``[prometheus_exporter]`` port: how the controller talks to Kubernetes and serves."""

    api_root: str = ""
    """API server URL (upstream option). Empty: from ``--kubeconfig``, else in-cluster.
    With a kubeconfig given as well, this overrides its server."""
    pod_vif_driver: str = "neutron-vif"
    """``neutron-vif`` (side-by-side: a port per pod bound to the node, ``ovs`` VIFs),
    ``nested-vlan`` (upstream: every node is a VM on a trunk; pods get VLAN subports,
    ``vlan`` VIFs) or ``mixed`` (ours: per node, from what Neutron says about its
    InternalIP). ``nested-macvlan``/``nested-dpdk`` are refused at start."""
    port_debug: bool = False
    """Upstream: name Neutron ports after their pods. Accepted for compatibility and
    without effect: ports in use are always named ``<namespace>/<pod>``."""
    controller_ha: bool = True
    """Leader election on a ``coordination.k8s.io/v1`` Lease; only the leader reconciles.
    Off: this process reconciles at once (never run two that way)."""
    leader_lease_namespace: str = "kube-system"
    """Namespace of the leader Lease."""
    leader_lease_name: str = "kuryr-controller"
    """Name of the leader Lease (one per cluster id is sensible)."""
    leader_lease_duration: float = 15.0
    """Seconds a standby waits after the last observed renewal before taking over."""
    leader_renew_deadline: float = 10.0
    """Seconds the leader keeps trying to renew before it stops reconciling."""
    leader_retry_period: float = 2.0
    """Seconds between lease attempts (acquire or renew)."""
    workers: int = 16
    """Keys reconciled in parallel per kind (the engine's concurrency cap). Neutron calls
    are further limited by ``[neutron] max_concurrency``."""
    watch_reconcile_period: float = 300.0
    """Seconds between full resyncs (every cached key re-queued), upstream's option name.
    Catches what no event announces, e.g. a quota raised after a permanent failure."""
    port_status_poll_max: float = 10.0
    """While a port is DOWN its KuryrPort is looked at again after 0.5 s, doubling up to
    this many seconds, until Neutron reports it ACTIVE."""
    port_sweep_interval: float = 60.0
    """Seconds between sweeps for a second port owned by a live pod (a create or claim of
    a killed or timed-out request landing late in Neutron); the extra one is released."""
    health_server_port: int = 8082
    """``[health_server] port``: ``/healthz``, ``/readyz`` and ``/metrics`` listen here
    (upstream defaults). 0 disables the server."""
    health_server_host: str = "127.0.0.1"
    """``[health_server] host``: listen address; ``0.0.0.0`` inside a pod."""


def _pod_vif_driver(cfg: ConfigFile) -> str:
    value = cfg.get_str("kubernetes", "pod_vif_driver", "neutron-vif")
    if value in REFUSED_DRIVERS:
        raise ConfigError(
            f"{cfg.source}: [kubernetes] pod_vif_driver = {value!r} is not supported: "
            f"{REFUSED_DRIVERS[value]}. Use pod_vif_driver = nested-vlan (pods on VLAN "
            "subports of the VM's trunk port; needs Neutron's 'trunk' service plugin) or "
            "mixed (bare-metal and VM nodes in one cluster)"
        )
    return cfg.get_choice("kubernetes", "pod_vif_driver", "neutron-vif", POD_VIF_DRIVERS)


@dataclass(frozen=True)
class NestedSettings:
    """``[pod_vif_nested]``: how a node (VM) is found for nested pods."""

    worker_nodes_subnets: tuple[str, ...] = ()
    """Subnet ids the VMs' addresses are on (upstream's list; the singular
    ``worker_nodes_subnet`` is merged in). A node whose InternalIP is in one of them is
    looked up in Neutron: the port holding that address must be a trunk parent."""

    @property
    def enabled(self) -> bool:
        return bool(self.worker_nodes_subnets)


def load_nested(cfg: ConfigFile, pod_vif_driver: str) -> NestedSettings:
    """``[pod_vif_nested]``; required (and only read into effect) for nested-vlan/mixed."""
    section = "pod_vif_nested"
    cfg.tolerate(section, "rev_update_attempts")
    subnets = cfg.get_list(section, "worker_nodes_subnets")
    subnets += cfg.get_list(section, "worker_nodes_subnet")
    merged = tuple(dict.fromkeys(subnets))
    if pod_vif_driver not in NESTED_DRIVERS:
        return NestedSettings()
    if not merged:
        raise ConfigError(
            f"{cfg.source}: [pod_vif_nested] worker_nodes_subnets is required with "
            f"[kubernetes] pod_vif_driver = {pod_vif_driver}: the subnet ids the VMs "
            "(Kubernetes nodes) have their addresses on"
        )
    return NestedSettings(merged)


async def validate_nested(
    neutron: Neutron, nested: NestedSettings, source: str = "kuryr.conf"
) -> tuple[NeutronSubnet, ...]:
    """The worker-nodes subnets as Neutron has them; ConfigError if Neutron has no
    ``trunk`` extension or a subnet does not exist."""
    if not await neutron.has_extension("trunk"):
        raise ConfigError(
            f"{source}: nested pods need Neutron's 'trunk' extension, which this Neutron "
            "does not have: add 'trunk' to service_plugins in neutron.conf, or use "
            "[kubernetes] pod_vif_driver = neutron-vif"
        )
    found = []
    for subnet_id in nested.worker_nodes_subnets:
        subnet = await neutron.get_subnet(subnet_id)
        if subnet is None:
            raise ConfigError(
                f"{source}: [pod_vif_nested] worker_nodes_subnets = {subnet_id}: no such "
                "subnet in Neutron"
            )
        found.append(subnet)
    return tuple(found)


def load_kubernetes(cfg: ConfigFile) -> KubernetesSettings:
    """``[kubernetes]`` and ``[health_server]``; upstream-only options are tolerated."""
    k = "kubernetes"
    cfg.tolerate(k, "ssl_verify_server_crt", "enabled_handlers", "pod_subnets_driver")
    cfg.tolerate(k, "pod_security_groups_driver", "pod_project_driver", "service_project_driver")
    defaults = KubernetesSettings()
    settings = KubernetesSettings(
        api_root=cfg.get_str(k, "api_root"),
        pod_vif_driver=_pod_vif_driver(cfg),
        port_debug=cfg.get_bool(k, "port_debug", False),
        controller_ha=cfg.get_bool(k, "controller_ha", True),
        leader_lease_namespace=cfg.get_str(k, "leader_lease_namespace", "kube-system"),
        leader_lease_name=cfg.get_str(k, "leader_lease_name", "kuryr-controller"),
        leader_lease_duration=cfg.get_float(k, "leader_lease_duration", 15.0),
        leader_renew_deadline=cfg.get_float(k, "leader_renew_deadline", 10.0),
        leader_retry_period=cfg.get_float(k, "leader_retry_period", 2.0),
        workers=cfg.get_int(k, "workers", defaults.workers, minimum=1),
        watch_reconcile_period=cfg.get_float(k, "watch_reconcile_period", 300.0),
        port_status_poll_max=cfg.get_float(k, "port_status_poll_max", 10.0),
        port_sweep_interval=cfg.get_float(k, "port_sweep_interval", 60.0),
        health_server_port=cfg.get_int("health_server", "port", 8082, minimum=0),
        health_server_host=cfg.get_str("health_server", "host", "127.0.0.1"),
    )
    if not 0 < settings.leader_retry_period < settings.leader_renew_deadline:
        raise ConfigError(
            f"{cfg.source}: [kubernetes] leader_retry_period = {settings.leader_retry_period}: "
            f"must be > 0 and < leader_renew_deadline ({settings.leader_renew_deadline})"
        )
    if settings.leader_renew_deadline >= settings.leader_lease_duration:
        raise ConfigError(
            f"{cfg.source}: [kubernetes] leader_renew_deadline = "
            f"{settings.leader_renew_deadline}: must be < leader_lease_duration "
            f"({settings.leader_lease_duration})"
        )
    for option in ("watch_reconcile_period", "port_status_poll_max", "port_sweep_interval"):
        if getattr(settings, option) <= 0:
            raise ConfigError(
                f"{cfg.source}: [kubernetes] {option} = {getattr(settings, option)}: must be > 0"
            )
    if settings.health_server_port > 65535:
        raise ConfigError(
            f"{cfg.source}: [health_server] port = {settings.health_server_port}: not a port"
        )
    return settings
