"""Garbage collection: orphans and stranded pool ports, only after the grace period."""

from __future__ import annotations

from collections.abc import Callable, Collection

from kuryr_k8s.controller.gc import GarbageCollector
from kuryr_k8s.controller.pool import PooledPortProvider
from kuryr_k8s.controller.settings import GcSettings, VifPoolSettings
from kuryr_k8s.openstack.neutron import PortSpec
from unit.openstack.world import PROJECT, World, make_world

GRACE = 600.0


class Live:
    def __init__(self, *items: str) -> None:
        self.items = set(items)
        self.calls = 0

    async def __call__(self) -> Collection[str]:
        self.calls += 1
        return set(self.items)


async def _port(world: World, owner: str = "", host: str = "node-a") -> str:
    tags = world.tagging.in_use(owner) if owner else world.tagging.free(world.request().pool_key)
    spec = PortSpec(world.network, world.subnet, PROJECT, (world.sg,), host, tags, "", owner)
    (port,) = await world.neutron.create_ports([spec])
    return port.id


def _gc(
    world: World,
    owners: Live,
    nodes: Live | None = None,
    on_deleted: Callable[[str], None] | None = None,
) -> GarbageCollector:
    settings = GcSettings(1.0, GRACE)
    return GarbageCollector(
        world.neutron, world.tagging, settings, owners, nodes, now=world.clock,
        on_deleted=on_deleted,
    )  # fmt: skip


async def test_orphans_are_deleted_only_after_the_grace_period() -> None:
    world = make_world()
    live = await _port(world, "alive")
    orphan = await _port(world, "gone")
    gc = _gc(world, Live("alive"))
    result = await gc.run_once()
    assert (result.deleted_orphans, result.waiting) == ([], 1)
    world.clock.advance(GRACE + 1)
    result = await gc.run_once()
    assert result.deleted_orphans == [orphan]
    assert set(world.fake.ports) == {live}
    assert gc.deleted_total == 1


async def test_ports_orphaned_while_the_controller_was_down_go_on_the_first_pass() -> None:
    world = make_world()
    orphan = await _port(world, "gone")
    world.clock.advance(3 * GRACE)  # the controller was down all this time
    fresh_gc = _gc(world, Live())
    assert (await fresh_gc.run_once()).deleted_orphans == [orphan]
    assert world.fake.ports == {}


async def test_an_owner_tag_alone_counts_as_owner() -> None:
    world = make_world()
    port = await _port(world, "gone")
    world.fake.ports[port]["device_id"] = ""  # a release a crash interrupted
    world.clock.advance(GRACE + 1)
    assert (await _gc(world, Live("gone")).run_once()).deleted_orphans == []
    assert (await _gc(world, Live()).run_once()).deleted_orphans == [port]


async def test_pool_ports_of_nodes_that_are_gone_are_deleted() -> None:
    world = make_world()
    kept = await _port(world, host="node-a")
    stranded = await _port(world, host="node-b")
    world.clock.advance(GRACE + 1)
    deleted: list[str] = []
    gc = _gc(world, Live(), Live("node-a"), deleted.append)
    result = await gc.run_once()
    assert result.deleted_stranded == [stranded] == deleted
    assert set(world.fake.ports) == {kept}


async def test_an_empty_node_list_never_wipes_the_pools() -> None:
    world = make_world()
    port = await _port(world)
    world.clock.advance(GRACE + 1)
    assert (await _gc(world, Live(), Live()).run_once()).deleted_stranded == []
    assert port in world.fake.ports


async def test_other_clusters_ports_are_never_touched() -> None:
    world = make_world()
    spec = PortSpec(
        world.network, world.subnet, PROJECT, (world.sg,), "node-a",
        ("kuryr.cluster:other", "kuryr.owner:x"), device_id="x",
    )  # fmt: skip
    (foreign,) = await world.neutron.create_ports([spec])
    world.clock.advance(GRACE + 1)
    await _gc(world, Live()).run_once()
    assert foreign.id in world.fake.ports


async def test_live_sets_are_read_after_the_port_list() -> None:
    world = make_world()
    owners = Live()
    order: list[str] = []

    def spy(method: str, path: str) -> None:
        order.append(f"{method} {path} after {owners.calls} owner reads")

    world.fake.on_request = spy
    await _gc(world, owners).run_once()
    assert order == ["GET /ports after 0 owner reads"]
    assert owners.calls == 1


async def test_gc_tells_the_pool_to_forget_deleted_ports() -> None:
    world = make_world()
    pool = PooledPortProvider(
        world.neutron, world.tagging, VifPoolSettings(True, 1, 2, 0, 3600), Live()
    )
    await pool.rebuild()
    await pool.acquire(world.request(node="node-b"), "a", "x")
    world.clock.advance(GRACE + 1)
    gc = GarbageCollector(
        world.neutron, world.tagging, GcSettings(1.0, GRACE), Live("a"), Live("node-a"),
        now=world.clock, on_deleted=pool.forget, on_node_gone=pool.forget_node,
    )  # fmt: skip
    result = await gc.run_once()
    assert len(result.deleted_stranded) == 1
    assert pool.sizes() == {}  # node-b's pool is gone: no refills for a dead node
    await pool.maintain_once()
    assert [p["binding:host_id"] for p in world.fake.ports.values()] == ["node-b"]  # in use


async def test_a_port_changed_since_the_listing_is_not_deleted() -> None:
    world = make_world()
    orphan = await _port(world, "gone")
    world.clock.advance(GRACE + 1)
    owners = Live()

    async def claim_meanwhile() -> Collection[str]:
        # between GC's port list and its delete, someone takes the port over
        world.fake.ports[orphan]["device_id"] = "new-owner"
        world.fake.touch(orphan)
        return await owners()

    gc = _gc(world, claim_meanwhile)  # type: ignore[arg-type]
    result = await gc.run_once()
    assert (result.deleted_orphans, result.waiting) == ([], 1)
    assert world.fake.ports[orphan]["device_id"] == "new-owner"


async def test_ports_the_providers_hold_are_never_collected_whatever_their_marks() -> None:
    """Marks lag the ledger (``pool-ownership.md`` §7): a port back in the pool still
    marked with its dead owner, and a port handed to a live pod but still marked with a
    dead one, are the providers'; only the marks would have doomed them."""
    world = make_world()
    owners = Live()
    provider = PooledPortProvider(
        world.neutron, world.tagging, VifPoolSettings(True, 0, 2, 0, 3600), owners
    )
    await provider.rebuild()
    first = await provider.acquire(world.request(), "dead", "x")  # made with dead's marks
    second = await provider.acquire(world.request(), "dead2", "y")
    await provider.marks.flush()
    await provider.release(first.id, "dead")
    await provider.release(second.id, "dead2")
    reused = await provider.acquire(world.request(), "live", "z")
    owners.items.add("live")
    assert {world.fake.ports[p.id]["device_id"] for p in (first, second)} == {"dead", "dead2"}
    world.clock.advance(GRACE + 1)
    settings = GcSettings(1.0, GRACE)
    gc = GarbageCollector(
        world.neutron, world.tagging, settings, owners, now=world.clock, known=provider.owns
    )
    result = await gc.run_once()
    assert (result.deleted_orphans, result.deleted_stranded, result.waiting) == ([], [], 0)
    assert {first.id, second.id} <= set(world.fake.ports)
    assert reused.id in (first.id, second.id)
    blind = _gc(world, owners)  # the same pass going by the marks alone
    assert set((await blind.run_once()).deleted_orphans) == {first.id, second.id}
