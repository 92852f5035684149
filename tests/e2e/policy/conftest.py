"""These suites need only OVS, OVN and Neutron of the sandbox (the product's controller,
daemon and node agent are not used: the policy and namespace reconcilers run in-process).
So ``sandbox`` here does not insist on every component: when the networking parts run it
uses them as they are, and only otherwise brings the sandbox up (as the shared fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.openstack import topology
from kuryr_k8s.sandbox.settings import settings_from_env

NEEDED = {"ovsdb-server", "ovs-vswitchd", "ovnnb_db", "ovnsb_db", "ovn-northd", "ovn-controller"}
NEEDED |= {"mariadb", "neutron-server"}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    try:
        manager.preflight()
    except Exception as exc:
        pytest.fail(f"these tests need the sandbox: {exc}")
    settings = settings_from_env()
    running = {s.name for s in manager.status(settings) if s.pid is not None}
    if not running >= NEEDED:
        manager.up(settings, lambda msg: None)
    conn = topology.connect(settings)
    topo = topology.ensure_base_topology(conn, lambda msg: None)
    yield Sandbox(settings, manager.context(settings), conn, topo)
    conn.close()
