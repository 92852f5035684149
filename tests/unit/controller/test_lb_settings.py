"""``kuryr.conf`` options of the Services part (controller/lbwiring.py)."""

from __future__ import annotations

import pytest

from kuryr_k8s.controller.lbwiring import load_services
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError


def conf(text: str) -> ConfigFile:
    return ConfigFile.from_text(text, "kuryr.conf")


def test_nothing_set_means_pods_only() -> None:
    s = load_services(conf(""))
    assert not s.enabled and s.pods_enabled


def test_a_service_subnet_turns_services_on_beside_pods() -> None:
    s = load_services(conf("[neutron_defaults]\nservice_subnet = sub-1\n"))
    assert s.enabled and s.pods_enabled
    assert (s.provider, s.lb_algorithm) == ("ovn", "SOURCE_IP_PORT")


def test_enabled_handlers_pick_the_parts_with_upstream_names() -> None:
    only_services = conf(
        "[neutron_defaults]\nservice_subnet = sub-1\n"
        "[kubernetes]\nenabled_handlers = service, endpoints, kuryrloadbalancer\n"
    )
    s = load_services(only_services)
    assert s.enabled and not s.pods_enabled
    only_pods = conf(
        "[neutron_defaults]\nservice_subnet = s\n[kubernetes]\nenabled_handlers = vif,kuryrport\n"
    )
    s = load_services(only_pods)
    assert not s.enabled and s.pods_enabled


def test_services_asked_for_without_a_subnet_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"service_subnet"):
        load_services(conf("[kubernetes]\nenabled_handlers = vif,service\n"))


def test_amphora_defaults_to_round_robin_and_unknown_providers_are_refused() -> None:
    s = load_services(
        conf(
            "[neutron_defaults]\nservice_subnet = s\n"
            "[kubernetes]\nendpoints_driver_octavia_provider = amphora\n"
        )
    )
    assert (s.provider, s.lb_algorithm) == ("amphora", "ROUND_ROBIN")
    with pytest.raises(ConfigError, match="endpoints_driver_octavia_provider"):
        load_services(conf("[kubernetes]\nendpoints_driver_octavia_provider = f5\n"))


def test_every_option_read_is_known_to_the_file_check() -> None:
    cfg = conf(
        "[neutron_defaults]\nservice_subnet = s\nexternal_svc_net = n\n"
        "lbaas_activation_timeout = 60\n"
        "[octavia_defaults]\nendpoint_override = http://x\nhealth_monitors = true\n"
        "enforce_sg_rules = true\n"
    )
    s = load_services(cfg)
    assert s.health_monitors and s.activation_timeout == 60.0
    cfg.reject_unknown()  # no unknown option among them


def test_enforce_sg_rules_is_read_with_upstreams_default() -> None:
    base = "[neutron_defaults]\nservice_subnet = s\n"
    assert load_services(conf(base)).enforce_sg_rules  # upstream's default: true
    off = load_services(conf(base + "[octavia_defaults]\nenforce_sg_rules = false\n"))
    assert not off.enforce_sg_rules
