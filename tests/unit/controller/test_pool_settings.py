"""[neutron], [neutron_defaults], [vif_pool], [garbage_collection] and the start-up check
of [neutron_defaults] against Neutron."""

from __future__ import annotations

import pytest

from kuryr_k8s.controller.settings import (
    GcSettings,
    VifPoolSettings,
    load_gc,
    load_neutron,
    load_neutron_defaults,
    load_vif_pool,
    validate_against_neutron,
)
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.openstack.connection import NeutronSettings
from unit.openstack.world import PROJECT, World, make_world


def _conf(text: str) -> ConfigFile:
    return ConfigFile.from_text(text, "kuryr.conf")


def _defaults_text(world: World, **over: str) -> str:
    values = {
        "project": PROJECT,
        "pod_subnet": world.subnet,
        "pod_security_groups": f"{world.sg2}, {world.sg}",
        "cluster_id": "c1",
        **over,
    }
    return "[neutron_defaults]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


def test_neutron_defaults_are_typed_and_sorted() -> None:
    world = make_world()
    text = _defaults_text(world, resource_tags="a, b", network_device_mtu="1400")
    cfg = _conf(text)
    defaults = load_neutron_defaults(cfg)
    cfg.reject_unknown()
    assert defaults.pod_security_groups == tuple(sorted((world.sg, world.sg2)))
    assert (defaults.resource_tags, defaults.network_device_mtu) == (("a", "b"), 1400)
    assert defaults.ovs_bridge == "br-int"


@pytest.mark.parametrize("missing", ["project", "pod_subnet", "pod_security_groups"])
def test_required_neutron_defaults_are_named(missing: str) -> None:
    world = make_world()
    text = "\n".join(
        line for line in _defaults_text(world).splitlines() if not line.startswith(missing)
    )
    with pytest.raises(ConfigError, match=rf"\[neutron_defaults\] {missing}"):
        load_neutron_defaults(_conf(text))


def test_vif_pool_defaults_follow_upstream_and_noop_is_default() -> None:
    assert load_vif_pool(_conf("")) == VifPoolSettings()
    assert VifPoolSettings() == VifPoolSettings(False, 5, 10, 0, 20.0)
    on = load_vif_pool(
        _conf(
            "[kubernetes]\nvif_pool_driver = neutron\n"
            "[vif_pool]\nports_pool_min = 1\nports_pool_batch = 3\nports_pool_max = 4\n"
        )
    )
    assert on == VifPoolSettings(True, 1, 3, 4, 20.0)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[kubernetes]\nvif_pool_driver = nested\n", "vif_pool_driver"),
        ("[vif_pool]\nports_pool_batch = 0\n", "ports_pool_batch"),
        ("[vif_pool]\nports_pool_min = 5\nports_pool_max = 2\n", "ports_pool_max"),
        ("[vif_pool]\nports_pool_update_frequency = 0\n", "ports_pool_update_frequency"),
    ],
)
def test_bad_vif_pool_values_are_named(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_vif_pool(_conf(text))


def test_gc_settings() -> None:
    assert load_gc(_conf("")) == GcSettings()
    assert load_gc(_conf("[garbage_collection]\ngrace_period = 5\n")).grace_period == 5
    with pytest.raises(ConfigError, match="garbage_collection"):
        load_gc(_conf("[garbage_collection]\ninterval = 0\n"))


def test_neutron_connection_from_cloud_or_endpoint() -> None:
    assert load_neutron(_conf("[neutron]\ncloud = mycloud\n")) == NeutronSettings(cloud="mycloud")
    noauth = load_neutron(
        _conf("[neutron]\nauth_type = none\nendpoint_override = http://127.0.0.1:9696\n")
    )
    assert noauth.endpoint == "http://127.0.0.1:9696"
    with pytest.raises(ConfigError, match=r"\[neutron\] needs either cloud"):
        load_neutron(_conf(""))
    with pytest.raises(ConfigError, match="auth_type"):
        load_neutron(_conf("[neutron]\nauth_type = password\nendpoint_override = http://x\n"))


async def test_validation_accepts_a_good_config_and_resolves_the_network() -> None:
    world = make_world()
    defaults = load_neutron_defaults(_conf(_defaults_text(world)))
    checked = await validate_against_neutron(world.neutron, defaults)
    assert (checked.network.id, checked.subnet.cidr, checked.mtu) == (
        world.network,
        "10.0.0.0/24",
        1442,
    )


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("pod_subnet", "no-such-subnet", "no such subnet"),
        ("pod_security_groups", "no-such-sg", "no such security group"),
        ("project", "0" * 32, "Neutron knows no network or security group"),
        ("network_device_mtu", "9000", "larger than the pod network's MTU"),
    ],
)
async def test_validation_refuses_unknown_values_naming_option_and_value(
    option: str, value: str, why: str
) -> None:
    world = make_world()
    defaults = load_neutron_defaults(_conf(_defaults_text(world, **{option: value})))
    with pytest.raises(ConfigError, match=rf"\[neutron_defaults\] {option} = {value}: {why}"):
        await validate_against_neutron(world.neutron, defaults)


async def test_validation_refuses_a_subnet_of_another_project() -> None:
    world = make_world()
    other = "o" * 32
    world.fake.add_network(other)
    defaults = load_neutron_defaults(_conf(_defaults_text(world, project=other)))
    with pytest.raises(ConfigError, match="is not shared"):
        await validate_against_neutron(world.neutron, defaults)
