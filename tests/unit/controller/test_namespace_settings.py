"""``[kubernetes] pod_subnets_driver``/``pod_security_groups_driver`` and
``[namespace_subnet]``: defaults, the namespace driver's required options, bad values."""

from __future__ import annotations

import asyncio

import pytest

from kuryr_k8s.controller.kuryrports import PodNetwork
from kuryr_k8s.controller.namespaces import NamespacePlacement, load_placement
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.model.config import KNOWN_OPTIONS, ConfigFile
from kuryr_k8s.model.errors import ConfigError, ResourceNotReady


def test_defaults_keep_the_single_pod_subnet() -> None:
    s = load_placement(ConfigFile.from_text(""))
    assert (s.subnets_driver, s.security_groups_driver) == ("default", "default")


def test_namespace_driver_with_router_and_pool() -> None:
    cfg = ConfigFile.from_text(
        "[kubernetes]\npod_subnets_driver = namespace\npod_security_groups_driver = policy\n"
        "[namespace_subnet]\npod_router = r1\npod_subnet_pool = sp1\n"
    )
    s = load_placement(cfg)
    assert (s.subnets_driver, s.security_groups_driver) == ("namespace", "policy")
    assert (s.pod_router, s.pod_subnet_pool) == ("r1", "sp1")
    cfg.reject_unknown()


@pytest.mark.parametrize("missing", ["pod_router", "pod_subnet_pool"])
def test_namespace_driver_needs_router_and_pool(missing: str) -> None:
    others = {"pod_router": "r1", "pod_subnet_pool": "sp1"}
    del others[missing]
    body = "".join(f"{k} = {v}\n" for k, v in others.items())
    cfg = ConfigFile.from_text(
        f"[kubernetes]\npod_subnets_driver = namespace\n[namespace_subnet]\n{body}"
    )
    with pytest.raises(ConfigError, match=rf"\[namespace_subnet\] {missing}"):
        load_placement(cfg)


@pytest.mark.parametrize(("text", "mode"), [("", "policy"), ("identity", "identity")])
def test_policy_security_group_mode(text: str, mode: str) -> None:
    body = f"[network_policy]\nsecurity_group_mode = {text}\n" if text else ""
    cfg = ConfigFile.from_text("[kubernetes]\npod_security_groups_driver = policy\n" + body)
    assert load_placement(cfg).security_group_mode == mode
    cfg.reject_unknown()


def test_an_unknown_security_group_mode_is_named() -> None:
    cfg = ConfigFile.from_text("[network_policy]\nsecurity_group_mode = per-pod\n")
    with pytest.raises(ConfigError, match="security_group_mode"):
        load_placement(cfg)


def test_unknown_driver_is_named() -> None:
    cfg = ConfigFile.from_text("[kubernetes]\npod_subnets_driver = per-pod\n")
    with pytest.raises(ConfigError, match="pod_subnets_driver"):
        load_placement(cfg)


def test_namespace_placement_waits_for_a_complete_status() -> None:
    kns = Store()
    defaults = PodNetwork("proj", "net1", "sub1", ("sg",), (), 1442)
    placement = NamespacePlacement(kns, defaults)
    pod = {"metadata": {"name": "p", "namespace": "alpha"}}
    with pytest.raises(ResourceNotReady):
        asyncio.run(placement.network_for(pod))
    kns.put({"metadata": {"name": "alpha", "namespace": "alpha"}, "status": {"netId": "n"}})
    with pytest.raises(ResourceNotReady):
        asyncio.run(placement.network_for(pod))
    status = {
        "netId": "n",
        "subnetId": "s",
        "subnetCIDR": "10.40.3.0/24",
        "gatewayIp": "10.40.3.1",
        "routerId": "r",
        "mtu": 1442,
    }
    kns.put({"metadata": {"name": "alpha", "namespace": "alpha"}, "status": status})
    net = asyncio.run(placement.network_for(pod))
    assert (net.network_id, net.subnet_id, net.subnets[0].cidr) == ("n", "s", "10.40.3.0/24")
    assert net.subnets[0].gateway == "10.40.3.1" and net.security_groups == ("sg",)


def test_options_are_catalogued() -> None:
    cfg = ConfigFile.from_text(
        "[kubernetes]\npod_subnets_driver = namespace\npod_security_groups_driver = policy\n"
        "[namespace_subnet]\npod_router = r1\npod_subnet_pool = sp1\n"
    )
    load_placement(cfg)
    for section, options in cfg.read_options.items():
        assert set(options) <= KNOWN_OPTIONS.get(section, frozenset()), (section, options)
