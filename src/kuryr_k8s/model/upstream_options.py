"""Every option upstream kuryr-kubernetes 10.0.0 documents, and what we do with it.

The list is upstream's ``kuryr_kubernetes.opts.list_kuryr_opts()`` (what its sample-config
generator and docs show: its own sections, kuryr-lib's ``[neutron]`` keystone options and
``[binding]``, and oslo.log's ``[DEFAULT]``), taken from the 10.0.0 release by name only.
Each option is either *honoured* (read by our processes with upstream's meaning; the note
says under which name if it differs) or *ignored* (accepted so an upstream ``kuryr.conf``
loads unchanged, without effect; the note says why and what to use instead).

Sections upstream reads through its libraries without documenting them (``[os_vif_ovs]``,
``[oslo_concurrency]``, the privsep sections) are accepted whole, ignored (see
:data:`LIBRARY_SECTIONS`).

``tests/unit/model/test_upstream_options.py`` checks the honoured ones against what our
loaders really read, so a note cannot claim an effect the code does not have.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamOption:
    section: str
    option: str
    honoured: bool
    note: str
    ours: str = ""
    """The option we read instead (``section.option``) when the name differs."""


_H = True
_I = False

_KUBE_CONN = (
    "ours reaches the API server through --kubeconfig, else the pod's service account "
    "(the same token and CA files as upstream's defaults); [kubernetes] api_root still "
    "overrides the server"
)
_SINGLE_DRIVER = (
    "ours has one built-in behaviour here (the pod subnet/security groups of "
    "[neutron_defaults], or per namespace with pod_subnets_driver = namespace)"
)
_NO_LBAAS = "ours always uses Octavia (the only LBaaS left upstream as well)"
_CACHE = "ours keeps informer caches of what it watches; no TTL caches to tune"
_KEYSTONE = (
    "ours takes keystone credentials from clouds.yaml: set [neutron] cloud = <entry> "
    "(application credentials recommended); with auth_type = none, endpoint is honoured"
)
_SESSION = "TLS and session settings come from the clouds.yaml entry ([neutron] cloud)"
_LOGGING = (
    "ours logs to stderr (one line per event; --log-level, --log-format text|json); "
    "let the supervisor (kubelet, journald) store and rotate it"
)

_TABLE: tuple[tuple[str, str, bool, str], ...] = (
    # [kubernetes]
    ("kubernetes", "api_root", _H, "API server URL; overrides the kubeconfig's server"),
    ("kubernetes", "ssl_client_crt_file", _I, _KUBE_CONN),
    ("kubernetes", "ssl_client_key_file", _I, _KUBE_CONN),
    ("kubernetes", "ssl_ca_crt_file", _I, _KUBE_CONN),
    ("kubernetes", "ssl_verify_server_crt", _I, _KUBE_CONN + "; the CA is always verified"),
    ("kubernetes", "token_file", _I, _KUBE_CONN),
    ("kubernetes", "pod_project_driver", _I, "pod ports go to [neutron_defaults] project"),
    ("kubernetes", "service_project_driver", _I, "load balancers go to the pods' project"),
    ("kubernetes", "namespace_project_driver", _I, "namespace networks go to the project"),
    ("kubernetes", "network_policy_project_driver", _I, "policies' SGs go to the project"),
    ("kubernetes", "pod_subnets_driver", _H, "default or namespace (a network per namespace)"),
    ("kubernetes", "service_subnets_driver", _I, _SINGLE_DRIVER),
    ("kubernetes", "pod_security_groups_driver", _H, "default or namespace"),
    ("kubernetes", "service_security_groups_driver", _I, _SINGLE_DRIVER),
    ("kubernetes", "pod_vif_driver", _H, "neutron-vif, nested-vlan, or ours: mixed"),
    ("kubernetes", "endpoints_lbaas_driver", _I, _NO_LBAAS),
    ("kubernetes", "endpoints_driver_octavia_provider", _H, "ovn (default here) or amphora"),
    ("kubernetes", "vif_pool_driver", _H, "noop or neutron (pre-created ports per node)"),
    ("kubernetes", "nodes_subnets_driver", _I, "nodes' subnets: [pod_vif_nested]"),
    ("kubernetes", "port_debug", _H, "accepted; ports in use are always named ns/pod"),
    ("kubernetes", "service_public_ip_driver", _I, "floating IPs from external_svc_net"),
    ("kubernetes", "enable_manager", _I, "no pool-manager socket; pools are automatic"),
    ("kubernetes", "watch_retry_timeout", _I, "ours re-lists and re-watches with backoff"),
    ("kubernetes", "watch_connection_timeout", _I, "ours re-lists and re-watches with backoff"),
    ("kubernetes", "watch_read_timeout", _I, "ours re-lists and re-watches with backoff"),
    (
        "kubernetes",
        "watch_reconcile_period",
        _H,
        "seconds between full resyncs; upstream's 0 (never) keeps ours at 300 s",
    ),
    ("kubernetes", "enabled_handlers", _H, "turns the pod part and the Service part on/off"),
    ("kubernetes", "controller_ha", _H, "leader election on a Lease (no sidecar needed)"),
    (
        "kubernetes",
        "controller_ha_elector_port",
        _I,
        "no leader-elector sidecar: [kubernetes] leader_lease_* configure the Lease",
    ),
    ("kubernetes", "network_policy_driver", _I, "NetworkPolicies are always enforced"),
    ("kubernetes", "multi_vif_drivers", _I, "one interface per pod (no NPWG multi-VIF)"),
    ("kubernetes", "additional_ifname_prefix", _I, "one interface per pod (no multi-VIF)"),
    ("kubernetes", "use_events", _I, "ours always writes status and Events"),
    # [kuryr-kubernetes]
    ("kuryr-kubernetes", "pybasedir", _I, "an install path of upstream's Python package"),
    # [neutron_defaults]
    ("neutron_defaults", "project", _H, ""),
    ("neutron_defaults", "pod_subnet", _H, ""),
    ("neutron_defaults", "pod_security_groups", _H, ""),
    ("neutron_defaults", "ovs_bridge", _H, ""),
    ("neutron_defaults", "service_subnet", _H, ""),
    ("neutron_defaults", "external_svc_net", _H, ""),
    ("neutron_defaults", "external_svc_subnet", _I, "floating IPs from any subnet of it"),
    ("neutron_defaults", "network_device_mtu", _H, ""),
    ("neutron_defaults", "lbaas_activation_timeout", _H, ""),
    ("neutron_defaults", "subnet_mapping", _I, "no per-driver subnets (one pod subnet)"),
    ("neutron_defaults", "resource_tags", _H, "put on every port we create"),
    # [pod_vif_nested]
    ("pod_vif_nested", "worker_nodes_subnets", _H, ""),
    ("pod_vif_nested", "rev_update_attempts", _I, "no macvlan address pairs (refused)"),
    # [vif_pool]
    ("vif_pool", "ports_pool_max", _H, ""),
    ("vif_pool", "ports_pool_min", _H, ""),
    ("vif_pool", "ports_pool_batch", _H, ""),
    ("vif_pool", "ports_pool_update_frequency", _H, ""),
    ("vif_pool", "pools_vif_drivers", _I, "deprecated upstream; one pool kind per pod kind"),
    ("vif_pool", "vif_pool_mapping", _I, "the pool follows the pod's VIF kind by itself"),
    # [octavia_defaults]
    ("octavia_defaults", "member_mode", _I, "members are always L3 (pod addresses)"),
    (
        "octavia_defaults",
        "enforce_sg_rules",
        _H,
        "default true as upstream; with the amphora provider (which hides the client's "
        "address from the backends) each listener's allowed_cidrs are narrowed to what "
        "the members' own security groups admit to their port (Octavia writes them as "
        "rules on the VIP port's group; unit-tested only); with the ovn provider no "
        "effect: it keeps the client's address, so the backends' security groups and "
        "NetworkPolicies filter it themselves, and its VIP port carries no traffic (a "
        "group on it filters nothing, measured on the sandbox)",
    ),
    ("octavia_defaults", "lb_algorithm", _H, ""),
    ("octavia_defaults", "timeout_client_data", _I, "Octavia's default timeouts apply"),
    ("octavia_defaults", "timeout_member_data", _I, "Octavia's default timeouts apply"),
    # caches
    ("cache_defaults", "enabled", _I, _CACHE),
    ("cache_defaults", "backend", _I, _CACHE),
    ("subnet_caching", "caching", _I, _CACHE),
    ("subnet_caching", "cache_time", _I, _CACHE),
    ("node_driver_caching", "caching", _I, _CACHE),
    ("node_driver_caching", "cache_time", _I, _CACHE),
    ("pool_manager", "sock_file", _I, "no pool-manager socket; pools are automatic"),
    # [cni_daemon]
    (
        "cni_daemon",
        "bind_address",
        _I,
        "ours serves the CNI on a unix socket ([cni_daemon] socket_path), which the "
        "kuryr-cni that `kuryr cni install` writes uses",
    ),
    ("cni_daemon", "worker_num", _I, "ours is asyncio: no worker processes to size"),
    ("cni_daemon", "vif_annotation_timeout", _H, "seconds ADD waits for the KuryrPort VIF"),
    ("cni_daemon", "pyroute2_timeout", _I, "ours talks netlink directly, no pyroute2 IPDB"),
    ("cni_daemon", "docker_mode", _I, "ours enters the netns by the runtime's path"),
    ("cni_daemon", "netns_proc_dir", _I, "ours enters the netns by the runtime's path"),
    ("cni_daemon", "cni_failures_count", _I, "no self-restart on failures; see /readyz"),
    # health servers
    ("health_server", "port", _H, "/healthz, /readyz and /metrics"),
    (
        "cni_health_server",
        "port",
        _I,
        "the daemon's /healthz /readyz /metrics are on [cni_daemon] metrics_address",
    ),
    ("cni_health_server", "max_memory_usage", _I, "set a memory limit on the container"),
    ("cni_health_server", "cg_path", _I, "set a memory limit on the container"),
    # [namespace_subnet]
    ("namespace_subnet", "pod_router", _H, ""),
    ("namespace_subnet", "pod_subnet_pool", _H, ""),
    # kuryr-lib [DEFAULT]
    ("DEFAULT", "bindir", _I, "no external binding executables"),
    ("DEFAULT", "subnetpool_name_prefix", _I, "libnetwork-only (kuryr-lib)"),
    ("DEFAULT", "deployment_type", _I, "per node from the VIF kind (pod_vif_driver)"),
    # kuryr-lib [neutron]
    ("neutron", "auth_type", _H, "none (with endpoint) or a keystone type with cloud"),
    ("neutron", "region_name", _H, ""),
    ("neutron", "timeout", _H, "seconds per Neutron request"),
    ("neutron", "default_subnetpool_v4", _I, "libnetwork-only (kuryr-lib)"),
    ("neutron", "default_subnetpool_v6", _I, "libnetwork-only (kuryr-lib)"),
    ("neutron", "enable_dhcp", _I, "libnetwork-only (kuryr-lib)"),
    ("neutron", "vif_plugging_is_fatal", _I, "libnetwork-only (kuryr-lib)"),
    ("neutron", "vif_plugging_timeout", _I, "libnetwork-only (kuryr-lib)"),
    ("neutron", "endpoint_type", _I, "the interface comes from the clouds.yaml entry"),
    ("neutron", "collect_timing", _I, "Neutron timings are in our /metrics"),
    ("neutron", "split_loggers", _I, _LOGGING),
    # kuryr-lib [binding]
    ("binding", "veth_dst_prefix", _I, "the pod end is named by the runtime (CNI_IFNAME)"),
    ("binding", "default_driver", _I, "the binding follows the VIF kind"),
    ("binding", "enabled_drivers", _I, "the binding follows the VIF kind"),
    ("binding", "link_iface", _H, "the VM NIC carrying the trunk (nested)"),
)

_KEYSTONE_OPTIONS = (
    "auth_url",
    "default_domain_id",
    "default_domain_name",
    "domain_id",
    "domain_name",
    "password",
    "project_domain_id",
    "project_domain_name",
    "project_id",
    "project_name",
    "system_scope",
    "tenant_id",
    "tenant_name",
    "token",
    "trust_id",
    "user_domain_id",
    "user_domain_name",
    "user_id",
    "username",
)
_SESSION_OPTIONS = ("cafile", "certfile", "keyfile", "insecure", "tls_ciphers", "tls_min_version")
_OSLO_LOG_OPTIONS = (
    "debug",
    "log_config_append",
    "log_date_format",
    "log_file",
    "log_dir",
    "use_syslog",
    "use_journal",
    "syslog_log_facility",
    "use_json",
    "use_stderr",
    "log_color",
    "log_rotate_interval",
    "log_rotate_interval_type",
    "max_logfile_count",
    "max_logfile_size_mb",
    "log_rotation_type",
    "logging_context_format_string",
    "logging_default_format_string",
    "logging_debug_format_suffix",
    "logging_exception_prefix",
    "logging_user_identity_format",
    "default_log_levels",
    "publish_errors",
    "instance_format",
    "instance_uuid_format",
    "rate_limit_interval",
    "rate_limit_burst",
    "rate_limit_except_level",
    "fatal_deprecations",
)

UPSTREAM_OPTIONS: dict[tuple[str, str], UpstreamOption] = {
    (s, o): UpstreamOption(s, o, h, n)
    for s, o, h, n in (
        *_TABLE,
        *(("neutron", o, _I, _KEYSTONE) for o in _KEYSTONE_OPTIONS),
        *(("neutron", o, _I, _SESSION) for o in _SESSION_OPTIONS),
        *(("DEFAULT", o, _I, _LOGGING) for o in _OSLO_LOG_OPTIONS),
    )
}
"""Upstream 10.0.0's documented options (``list_kuryr_opts()``), by (section, option)."""

ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("neutron", "endpoint_override"): ("neutron", "endpoint"),
    ("cni_daemon", "ovsdb_connection"): ("os_vif_ovs", "ovsdb_connection"),
}
"""Our option -> the upstream spelling read when ours is absent. ``[neutron] endpoint`` is
keystoneauth's ``none`` plugin option that upstream deployments without keystone use."""

UPSTREAM_OPTIONS[("neutron", "endpoint")] = UpstreamOption(
    "neutron",
    "endpoint",
    True,
    "keystoneauth's none-plugin endpoint (not in upstream's option list, widely used)",
    ours="neutron.endpoint_override",
)
UPSTREAM_OPTIONS[("os_vif_ovs", "ovsdb_connection")] = UpstreamOption(
    "os_vif_ovs",
    "ovsdb_connection",
    True,
    "os-vif's OVSDB address (not in upstream's option list); used unless "
    "[cni_daemon] ovsdb_connection is set",
    ours="cni_daemon.ovsdb_connection",
)
for _key in (
    ("neutron", "application_credential_id"),
    ("neutron", "application_credential_name"),
    ("neutron", "application_credential_secret"),
):
    UPSTREAM_OPTIONS[_key] = UpstreamOption(*_key, False, _KEYSTONE)

NEUTRAL_VALUES: dict[tuple[str, str], tuple[str, str]] = {
    ("kubernetes", "watch_reconcile_period"): (
        "0",
        "upstream's 0 turns periodic resync off; ours needs it (it catches what no event "
        "announces), so its default of 300 s applies",
    ),
}
"""Upstream values with no meaning here: (value, why). The option reads as unset."""

LIBRARY_SECTIONS: dict[str, str] = {
    "os_vif_ovs": "os-vif's OVS plugin: ours plugs with its own OVSDB client "
    "([cni_daemon] ovsdb_connection, default unix:/run/openvswitch/db.sock)",
    "os_vif_linux_bridge": "os-vif's bridge plugin: no hybrid plug (ML2/OVN has none)",
    "oslo_concurrency": "oslo's file locks: ours serialises in-process (asyncio)",
    "privsep": "oslo.privsep helpers: ours runs the daemon with CAP_NET_ADMIN itself",
    "privsep_binding": "oslo.privsep helpers: ours runs the daemon with CAP_NET_ADMIN itself",
    "vif_plug_ovs_privileged": "os-vif's privsep helper: not used",
    "vif_plug_linux_bridge_privileged": "os-vif's privsep helper: not used",
    "vhostuser": "vhost-user VIFs are not supported (OVS-DPDK)",
    "sriov": "SR-IOV was removed upstream in 2022",
}
"""Sections upstream reads through libraries (not in its option list): accepted, ignored."""


def upstream_sections() -> frozenset[str]:
    return frozenset(s for s, _ in UPSTREAM_OPTIONS) | frozenset(LIBRARY_SECTIONS)
