"""A small in-memory Neutron world for unit tests of the adapter, providers, pools and GC."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kuryr_k8s.openstack.fake import FakeNeutron
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import PortRequest
from kuryr_k8s.openstack.provider import PortTagging

PROJECT = "p" * 32


@dataclass
class Clock:
    """Wall clock under the test's control (Neutron timestamps, GC cut-offs)."""

    now: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    fake: FakeNeutron
    neutron: Neutron
    clock: Clock
    network: str
    subnet: str
    sg: str
    sg2: str
    tagging: PortTagging = field(default_factory=lambda: PortTagging("c1", ("extra",)))

    def request(self, node: str = "node-a", sgs: tuple[str, ...] | None = None) -> PortRequest:
        return PortRequest(node, PROJECT, self.network, self.subnet, sgs or (self.sg,))

    def ports(self, *tags: str) -> list[dict[str, Any]]:
        return [p for p in self.fake.ports.values() if set(tags) <= set(p["tags"])]


def make_world(cidr: str = "10.0.0.0/24", port_quota: int = 500) -> World:
    clock = Clock()
    fake = FakeNeutron(port_quota=port_quota, now=clock)
    net = fake.add_network(PROJECT)
    subnet = fake.add_subnet(net, cidr)
    sg = fake.add_security_group(PROJECT)
    sg2 = fake.add_security_group(PROJECT, "web")
    return World(fake, Neutron(fake, inline=True), clock, net, subnet, sg, sg2)
