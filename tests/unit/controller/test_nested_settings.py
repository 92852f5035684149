"""``pod_vif_driver`` and ``[pod_vif_nested]``: nested modes need worker subnets and the
trunk extension; nested-macvlan is refused with the reason and what to use instead."""

from __future__ import annotations

import pytest

from kuryr_k8s.controller.settings import (
    NestedSettings,
    load_kubernetes,
    load_nested,
    validate_nested,
)
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.openstack.fake import FakeNeutron
from kuryr_k8s.openstack.neutron import Neutron


def _load(text: str) -> tuple[str, NestedSettings]:
    cfg = ConfigFile.from_text(text)
    k = load_kubernetes(cfg)
    nested = load_nested(cfg, k.pod_vif_driver)
    cfg.reject_unknown()
    return k.pod_vif_driver, nested


def test_default_is_side_by_side_and_needs_no_worker_subnets() -> None:
    assert _load("[kubernetes]\n") == ("neutron-vif", NestedSettings())


@pytest.mark.parametrize("driver", ["nested-vlan", "mixed"])
def test_worker_subnets_list_and_upstream_singular_are_merged(driver: str) -> None:
    got = _load(
        f"[kubernetes]\npod_vif_driver = {driver}\n[pod_vif_nested]\n"
        "worker_nodes_subnets = a, b\nworker_nodes_subnet = b\nrev_update_attempts = 3\n"
    )
    assert got == (driver, NestedSettings(("a", "b")))


def test_nested_without_worker_subnets_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"\[pod_vif_nested\] worker_nodes_subnets is required"):
        _load("[kubernetes]\npod_vif_driver = nested-vlan\n")


@pytest.mark.parametrize("driver", ["nested-macvlan", "nested-dpdk"])
def test_other_nested_drivers_are_refused_saying_what_to_use(driver: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(f"[kubernetes]\npod_vif_driver = {driver}\n")
    message = str(err.value)
    assert f"pod_vif_driver = '{driver}' is not supported" in message
    assert "nested-vlan" in message and "'trunk' service plugin" in message
    if driver == "nested-macvlan":
        assert "allowed_address_pairs" in message


async def test_start_up_checks_trunk_extension_and_worker_subnets() -> None:
    fake = FakeNeutron()
    net = fake.add_network("p1")
    subnet = fake.add_subnet(net, "10.10.0.0/24")
    neutron = Neutron(fake, inline=True)
    [found] = await validate_nested(neutron, NestedSettings((subnet,)))
    assert found.cidr == "10.10.0.0/24"
    with pytest.raises(ConfigError, match=r"worker_nodes_subnets = nope: no such subnet"):
        await validate_nested(neutron, NestedSettings((subnet, "nope")))
    fake.extensions.discard("trunk")
    with pytest.raises(ConfigError, match="'trunk' extension"):
        await validate_nested(neutron, NestedSettings((subnet,)))
