"""Start-up checks of ``[neutron_defaults]`` against an in-memory Neutron: an outage is
waited out with backoff; an object Neutron does not have is a ConfigError naming it."""

from __future__ import annotations

import pytest

from kuryr_k8s.controller.build import ControllerConfig, validated_defaults
from kuryr_k8s.controller.settings import (
    GcSettings,
    KubernetesSettings,
    NeutronDefaults,
    VifPoolSettings,
)
from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.fake import FakeNeutron
from kuryr_k8s.openstack.neutron import Neutron


def config(subnet: str, sg: str) -> ControllerConfig:
    return ControllerConfig(
        neutron=NeutronSettings(endpoint="http://neutron.invalid"),
        defaults=NeutronDefaults("p1", subnet, (sg,), "c1", network_device_mtu=1400),
        pool=VifPoolSettings(),
        gc=GcSettings(),
        kubernetes=KubernetesSettings(),
    )


@pytest.fixture
def fake() -> FakeNeutron:
    return FakeNeutron()


async def test_neutron_unreachable_at_start_is_waited_out(fake: FakeNeutron) -> None:
    net = fake.add_network("p1", mtu=1442)
    subnet = fake.add_subnet(net, "10.20.0.0/24")
    sg = fake.add_security_group("p1")
    fake.fail_next("GET", "/subnets", 503, times=3)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    got = await validated_defaults(Neutron(fake, inline=True), config(subnet, sg), sleep=sleep)
    assert (got.subnet.id, got.network.id, got.mtu) == (subnet, net, 1400)
    assert len(slept) == 3 and slept[0] < slept[2]


async def test_an_unknown_subnet_is_a_config_error_naming_it(fake: FakeNeutron) -> None:
    sg = fake.add_security_group("p1")
    with pytest.raises(ConfigError, match=r"\[neutron_defaults\] pod_subnet = nope"):
        await validated_defaults(Neutron(fake, inline=True), config("nope", sg))
