"""A per-test cluster id against the sandbox Neutron, for provider/pool/GC tests.

Import the fixture into a test module
(``from functional.openstack.cluster import cluster_fixture  # noqa: F401``); it is
registered under the name ``cluster``. Every port the code under test makes carries
``kuryr.cluster:<random id>``, so tests never see each other's ports; at teardown
anything still tagged is deleted and the test fails if there was anything (tests must
release or free what they make).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import PortRequest
from kuryr_k8s.openstack.provider import PortTagging

TIMEOUT = 120.0
"""Per Neutron request: a bulk of 20 ports takes ~3.5 s on one API worker; 10x and more."""


@dataclass
class Cluster:
    sandbox: Sandbox
    neutron: Neutron
    tagging: PortTagging

    @property
    def node(self) -> str:
        return self.sandbox.settings.hostname

    def request(
        self,
        *,
        node: str | None = None,
        network_id: str | None = None,
        subnet_id: str | None = None,
        sgs: tuple[str, ...] | None = None,
    ) -> PortRequest:
        topo = self.sandbox.topo
        return PortRequest(
            node=node or self.node,
            project_id=topo.project_id,
            network_id=network_id or topo.net1_id,
            subnet_id=subnet_id or topo.subnet1_id,
            security_groups=sgs or (topo.default_sg_id,),
        )

    def ports(self) -> list[Any]:
        """Our ports, as the SDK sees them (independent of the code under test)."""
        return list(self.sandbox.conn.network.ports(tags=self.tagging.cluster_tag))

    def neutron_port(self, port_id: str) -> Any:
        return self.sandbox.conn.network.get_port(port_id)


@pytest.fixture(name="cluster")
def cluster_fixture(sandbox: Sandbox) -> Iterator[Cluster]:
    tagging = PortTagging(f"kt-{uuid.uuid4().hex[:12]}", ("kuryr-functional",))
    neutron = Neutron.connect(
        NeutronSettings(endpoint=sandbox.settings.neutron_url, timeout=TIMEOUT)
    )
    made = Cluster(sandbox, neutron, tagging)
    yield made
    neutron.close()
    leftovers = made.ports()
    for port in leftovers:
        sandbox.conn.network.delete_port(port, ignore_missing=True)
    assert [p.id for p in leftovers] == [], f"ports tagged {tagging.cluster_tag} remained"
    assert made.ports() == []
