"""Configuration files the sandbox generates for Neutron, Octavia, uWSGI and clients.

Every value here comes from shared/notes/openstack-sandbox.md (sections 5 and 7); the
comments say why where it is not obvious.
"""

from __future__ import annotations

from pathlib import Path

from kuryr_k8s.sandbox.paths import SandboxPaths
from kuryr_k8s.sandbox.settings import SandboxSettings


def _ini(sections: dict[str, dict[str, str]]) -> str:
    out: list[str] = []
    for section, options in sections.items():
        out.append(f"[{section}]")
        out.extend(f"{key} = {value}" for key, value in options.items())
        out.append("")
    return "\n".join(out)


def mysql_url(paths: SandboxPaths, db: str) -> str:
    return f"mysql+pymysql://{db}:{db}@localhost/{db}?unix_socket={paths.mysql_socket}"


def neutron_api_paste(settings: SandboxSettings, paths: SandboxPaths) -> Path:
    if settings.neutron == "debian":
        return Path("/etc/neutron/api-paste.ini")
    return paths.venvs / "neutron29" / "etc" / "neutron" / "api-paste.ini"


def neutron_conf(settings: SandboxSettings, paths: SandboxPaths) -> str:
    default = {
        "host": settings.hostname,
        "core_plugin": "ml2",
        "service_plugins": "ovn-router,trunk,segments",
        "auth_strategy": "noauth",
        "bind_host": "127.0.0.1",
        "bind_port": str(settings.ports.neutron),
        "api_workers": "1",
        "rpc_workers": "0",
        "rpc_state_report_workers": "0",
        # ML2/OVN has no agents: the in-process fake driver replaces RabbitMQ.
        "transport_url": "fake:/",
        "allow_overlapping_ips": "true",
        "notify_nova_on_port_status_changes": "false",
        "notify_nova_on_port_data_changes": "false",
        "dhcp_agent_notification": "false",
        "state_path": str(paths.neutron),
        "api_paste_config": str(neutron_api_paste(settings, paths)),
        "log_file": str(paths.logfile("neutron-server")),
        "debug": "false",
    }
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": default,
        "database": {"connection": mysql_url(paths, "neutron")},
        "oslo_concurrency": {"lock_path": str(paths.neutron / "lock")},
    }
    if settings.neutron == "debian":
        sections["oslo_policy"] = {"policy_dirs": "/etc/neutron/policy.d"}
    return _ini(sections)


def ml2_conf(settings: SandboxSettings) -> str:
    return _ini(
        {
            "ml2": {
                "mechanism_drivers": "ovn",
                "type_drivers": "local,flat,vlan,geneve",
                "tenant_network_types": "geneve",
                # tag_ports_during_bulk_creation: without it bulk POST /ports drops tags.
                "extension_drivers": "port_security,tag_ports_during_bulk_creation",
                "overlay_ip_version": "4",
            },
            "ml2_type_geneve": {"vni_ranges": "1:65536", "max_header_size": "38"},
            "ml2_type_flat": {"flat_networks": "*"},
            "ml2_type_vlan": {"network_vlan_ranges": "physnet1"},
            "securitygroup": {"enable_security_group": "true"},
            "ovn": {
                "ovn_nb_connection": f"tcp:127.0.0.1:{settings.ports.ovn_nb}",
                "ovn_sb_connection": f"tcp:127.0.0.1:{settings.ports.ovn_sb}",
                "ovn_l3_scheduler": "leastloaded",
                "ovn_metadata_enabled": "false",
                "enable_distributed_floating_ip": "false",
            },
        }
    )


def uwsgi_ini(settings: SandboxSettings, paths: SandboxPaths) -> str:
    venv = paths.venvs / "neutron29"
    options = [
        ("http-socket", f"127.0.0.1:{settings.ports.neutron}"),
        ("home", str(venv)),
        ("module", "neutron.wsgi.api:application"),
        ("env", f"OS_NEUTRON_CONFIG_DIR={paths.etc}"),
        ("env", "OS_NEUTRON_CONFIG_FILES=neutron.conf;ml2_conf.ini"),
        ("master", "true"),
        ("processes", "1"),
        ("threads", "1"),
        ("enable-threads", "true"),
        ("lazy-apps", "true"),
        ("thunder-lock", "true"),
        ("buffer-size", "65535"),
        ("die-on-term", "true"),
        ("hook-master-start", "unix_signal:15 gracefully_kill_them_all"),
        ("add-header", "Connection: close"),
        ("pidfile", str(paths.pidfile("neutron-api"))),
    ]
    return "[uwsgi]\n" + "".join(f"{key} = {value}\n" for key, value in options)


def octavia_conf(settings: SandboxSettings, paths: SandboxPaths) -> str:
    neutron = settings.neutron_url
    return _ini(
        {
            "DEFAULT": {
                "transport_url": "fake:/",
                "log_file": str(paths.logfile("octavia")),
            },
            "api_settings": {
                "bind_host": "127.0.0.1",
                "bind_port": str(settings.ports.octavia),
                "auth_strategy": "noauth",
                "enabled_provider_drivers": "ovn:OVN provider driver",
                "default_provider_driver": "ovn",
            },
            "database": {"connection": mysql_url(paths, "octavia")},
            # Keep the *_socket_path defaults: the ovn provider ignores them (pitfall 5).
            "driver_agent": {"enabled_provider_agents": "ovn"},
            "ovn": {
                "ovn_nb_connection": f"tcp:127.0.0.1:{settings.ports.ovn_nb}",
                "ovn_sb_connection": f"tcp:127.0.0.1:{settings.ports.ovn_sb}",
            },
            # auth_type=none in [neutron] clashes with Octavia's own 'endpoint' option
            # (pitfall 6); an auth_section with the none plugin works.
            "neutron": {"endpoint_override": neutron, "auth_section": "neutron_noauth"},
            "neutron_noauth": {"auth_type": "none", "endpoint": neutron},
            "oslo_concurrency": {"lock_path": str(paths.octavia / "lock")},
        }
    )


def clouds_yaml(settings: SandboxSettings) -> str:
    lines = [
        "clouds:",
        "  kuryr-sandbox:",
        "    auth_type: none",
        "    auth:",
        f"      endpoint: {settings.neutron_url}",
        f"    network_endpoint_override: {settings.neutron_url}",
    ]
    if settings.octavia:
        lines.append(f"    load_balancer_endpoint_override: {settings.octavia_url}")
    return "\n".join(lines) + "\n"
