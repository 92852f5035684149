"""Every option any process reads from kuryr.conf is in the shared catalogue, so one file
can serve the controller and the daemon without either rejecting the other's options."""

from __future__ import annotations

from kuryr_k8s.cni.daemon.main import DaemonSettings
from kuryr_k8s.controller import settings as controller_settings
from kuryr_k8s.model.config import KNOWN_OPTIONS, ConfigFile

MINIMAL = """
[neutron]
auth_type = none
endpoint_override = http://127.0.0.1:9696
[neutron_defaults]
project = p
pod_subnet = s
cluster_id = c
pod_security_groups = sg1
"""


def _unlisted(cfg: ConfigFile) -> dict[str, set[str]]:
    return {
        section: set(opts) - KNOWN_OPTIONS.get(section, frozenset())
        for section, opts in cfg.read_options.items()
        if set(opts) - KNOWN_OPTIONS.get(section, frozenset())
    }


def test_controller_options_are_catalogued() -> None:
    cfg = ConfigFile.from_text(MINIMAL)
    controller_settings.load_neutron(cfg)
    controller_settings.load_neutron_defaults(cfg)
    controller_settings.load_vif_pool(cfg)
    controller_settings.load_gc(cfg)
    controller_settings.load_kubernetes(cfg)
    assert _unlisted(cfg) == {}


def test_nested_options_are_catalogued() -> None:
    cfg = ConfigFile.from_text(
        MINIMAL
        + "[kubernetes]\npod_vif_driver = mixed\n"
        + "[pod_vif_nested]\nworker_nodes_subnet = s0\nrev_update_attempts = 3\n"
        + "[binding]\nlink_iface = eth0\ndriver = kuryr.lib.binding.drivers.vlan\n"
    )
    k = controller_settings.load_kubernetes(cfg)
    controller_settings.load_nested(cfg, k.pod_vif_driver)
    assert _unlisted(cfg) == {}
    cfg.reject_unknown()  # [binding] is the daemon's, known to every process


def test_daemon_options_are_catalogued_and_it_accepts_the_controller_sections() -> None:
    cfg = ConfigFile.from_text(MINIMAL + "[vif_pool]\nports_pool_min = 1\n")
    DaemonSettings.from_config(cfg)  # calls reject_unknown(): must not fail on [vif_pool]
    assert _unlisted(cfg) == {}
