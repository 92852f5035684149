"""kuryr.conf reading: typed getters, and errors that name section, option and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError

CONF = """
[neutron_defaults]
pod_subnet = 1234
ovs_bridge = br-int
network_device_mtu = 1400
[vif_pool]
ports_pool_min = 5
ports_pool_batch = ten
[kubernetes]
port_debug = maybe
"""


def test_typed_getters() -> None:
    conf = ConfigFile.from_text(CONF, "kuryr.conf")
    assert conf.get_str("neutron_defaults", "ovs_bridge") == "br-int"
    assert conf.get_int("neutron_defaults", "network_device_mtu", 0) == 1400
    assert conf.get_int("vif_pool", "ports_pool_max", 0) == 0  # default
    assert conf.get_list("neutron_defaults", "pod_security_groups", ["x"]) == ["x"]


def test_errors_name_the_option_and_value() -> None:
    conf = ConfigFile.from_text(CONF, "kuryr.conf")
    with pytest.raises(ConfigError, match=r"kuryr.conf: \[vif_pool\] ports_pool_batch = 'ten'"):
        conf.get_int("vif_pool", "ports_pool_batch", 10)
    with pytest.raises(ConfigError, match=r"\[kubernetes\] port_debug = 'maybe': use true"):
        conf.get_bool("kubernetes", "port_debug", False)
    with pytest.raises(ConfigError, match=r"\[neutron_defaults\] project is required: the"):
        conf.get_required("neutron_defaults", "project", "the project id of pod ports")
    with pytest.raises(ConfigError, match="allowed values are neutron-vif, nested-vlan"):
        conf.get_choice(
            "neutron_defaults", "ovs_bridge", "neutron-vif", ["neutron-vif", "nested-vlan"]
        )


def test_unknown_options_and_sections_are_rejected() -> None:
    conf = ConfigFile.from_text("[neutron_defaults]\npod_subet = x\n[bogus]\na = 1\n", "k.conf")
    conf.get_str("neutron_defaults", "pod_subnet")
    with pytest.raises(ConfigError) as err:
        conf.reject_unknown()
    assert "unknown option [neutron_defaults] pod_subet (known: " in str(err.value)
    assert "pod_subnet" in str(err.value)
    assert "unknown section [bogus]" in str(err.value)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ConfigFile.load(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match="not a valid INI file"):
        ConfigFile.from_text("just text", "bad.conf")


def test_options_of_other_processes_are_not_rejected() -> None:
    """One kuryr.conf serves the controller and the daemon: neither rejects the other's."""
    conf = ConfigFile.from_text("[cni_daemon]\nsocket_path = /run/x.sock\n", "k.conf")
    conf.get_str("neutron_defaults", "project")
    conf.reject_unknown()
