"""Controller settings: typed, one frozen dataclass per ``kuryr.conf`` section.

Built once by the composition root (``kuryr controller`` main) from a
:class:`~kuryr_k8s.model.config.ConfigFile`; nothing here is global. Each ``load_*``
function reads one section with the upstream option names and raises
:class:`~kuryr_k8s.model.errors.ConfigError` naming the section, option and value.

Sections and owners:

* ``[neutron]`` (:func:`load_neutron`), ``[neutron_defaults]`` (:func:`load_neutron_defaults`),
  ``[vif_pool]`` (:func:`load_vif_pool`, which also reads ``[kubernetes] vif_pool_driver``),
  ``[garbage_collection]`` (:func:`load_gc`): ports, pools and GC.
* ``[kubernetes]`` (the rest): the reconcile side.

Values that only Neutron can check (project, subnet, security groups exist) are checked by
:func:`validate_against_neutron` (below) at start.
"""

from __future__ import annotations

from dataclasses import dataclass

from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.openstack.connection import NeutronSettings

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
    sharing a Neutron project. Required."""
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
        cluster_id=cfg.get_required(
            section, "cluster_id", "a unique name for this cluster, tagged on every port"
        ),
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


# --------------------------------------------------------------------------------------
# Kubernetes side (reconcilers, leader election): [kubernetes]
# --------------------------------------------------------------------------------------
