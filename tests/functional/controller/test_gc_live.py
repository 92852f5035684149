"""Garbage collection against the sandbox's real Neutron."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import pytest

from functional.openstack.cluster import Cluster, cluster_fixture  # noqa: F401
from kuryr_k8s.controller.gc import GarbageCollector
from kuryr_k8s.controller.settings import GcSettings
from kuryr_k8s.openstack.provider import spec_for

pytestmark = pytest.mark.functional

GRACE = 3600.0


class Live:
    def __init__(self, *items: str) -> None:
        self.items = set(items)

    async def __call__(self) -> Collection[str]:
        return set(self.items)


async def test_gc_deletes_orphans_after_the_grace_period_and_keeps_live_ports(
    cluster: Cluster,
) -> None:
    request = cluster.request()
    live_spec = spec_for(request, cluster.tagging.in_use("alive"), owner_uid="alive")
    orphan_spec = spec_for(request, cluster.tagging.in_use("gone"), owner_uid="gone")
    pool_spec = spec_for(request, cluster.tagging.free(request.pool_key))
    live, orphan, stranded = await cluster.neutron.create_ports([live_spec, orphan_spec, pool_spec])
    owners = Live("alive")
    other_nodes = Live("some-other-node")  # our node is gone, as far as GC knows

    def gc(now: datetime) -> GarbageCollector:
        settings = GcSettings(interval=1.0, grace_period=GRACE)
        return GarbageCollector(
            cluster.neutron, cluster.tagging, settings, owners, other_nodes, now=lambda: now
        )

    early = await gc(datetime.now(UTC)).run_once()
    assert (early.deleted_orphans, early.deleted_stranded, early.waiting) == ([], [], 2)
    assert {p.id for p in cluster.ports()} == {live.id, orphan.id, stranded.id}

    # the same ports seen two hours later (e.g. the controller was down meanwhile)
    later = await gc(datetime.now(UTC) + timedelta(hours=2)).run_once()
    assert later.deleted_orphans == [orphan.id]
    assert later.deleted_stranded == [stranded.id]
    assert {p.id for p in cluster.ports()} == {live.id}
    await cluster.neutron.delete_port(live.id)
