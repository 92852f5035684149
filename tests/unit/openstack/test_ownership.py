"""The ownership ledger, its load at the start of leadership, and the background writer of
Neutron's marks (``docs/design/pool-ownership.md``), over the in-memory Neutron."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kuryr_k8s.openstack.neutron import PortSpec
from kuryr_k8s.openstack.ownership import Ledger, MarkWriter, load_ledger, with_marks
from kuryr_k8s.openstack.ports import FixedIp, NeutronPort
from unit.openstack.world import PROJECT, World, make_world


def port(pid: str, *, device_id: str = "", tags: tuple[str, ...] = ()) -> NeutronPort:
    return NeutronPort(
        id=pid,
        mac_address="fa:16:3e:00:00:01",
        network_id="net",
        fixed_ips=(FixedIp("sub", "10.0.0.5"),),
        status="DOWN",
        binding_host_id="node-a",
        security_groups=("sg",),
        tags=("kuryr.cluster:c1", *tags),
        device_id=device_id,
    )


# ---- Ledger ------------------------------------------------------------------------------


def test_ledger_is_one_port_per_owner_and_one_owner_per_port() -> None:
    ledger = Ledger()
    a, b = port("pa"), port("pb")
    ledger.assign("A", a)
    ledger.assign("A", a)  # the same pair again: fine
    assert (ledger.owner_of("pa"), ledger.port_of("A"), len(ledger)) == ("A", a, 1)
    with pytest.raises(ValueError, match="pa already belongs to A"):
        ledger.assign("B", a)
    with pytest.raises(ValueError, match="A already has port pa"):
        ledger.assign("A", b)
    assert ledger.owner_of("pb") is None and ledger.port_of("B") is None
    ledger.assign("B", b)
    assert dict(ledger.items()) == {"A": a, "B": b}


def test_ledger_update_refreshes_owned_ports_only() -> None:
    ledger = Ledger()
    ledger.assign("A", port("pa"))
    fresh = port("pa", device_id="A")
    ledger.update(fresh)
    ledger.update(port("stranger"))
    assert ledger.port_of("A") == fresh
    assert ledger.owner_of("stranger") is None and len(ledger) == 1


def test_ledger_unassign_frees_both_sides_and_clear_forgets_all() -> None:
    ledger = Ledger()
    a = port("pa")
    ledger.assign("A", a)
    ledger.assign("B", port("pb"))
    assert ledger.unassign("pa") == a
    assert ledger.unassign("pa") is None
    assert ledger.owner_of("pa") is None and ledger.port_of("A") is None
    ledger.assign("C", a)  # free again: anybody's
    assert ledger.owner_of("pa") == "C"
    items = ledger.items()
    ledger.clear()
    assert len(ledger) == 0 and ledger.port_of("B") is None
    assert {uid for uid, _ in items} == {"B", "C"}  # items() is a snapshot


# ---- load_ledger ---------------------------------------------------------------------------


def load(
    ports: list[NeutronPort], refs: dict[str, str], live: set[str]
) -> tuple[dict[str, str], int, int, list[str]]:
    """(port id -> owner given, named, adopted, ids of the rest), through a real Ledger."""
    ledger = Ledger()
    named, adopted, rest = load_ledger(ports, refs, live, ledger.assign)
    return (
        {p.id: uid for uid, p in ledger.items()},
        named,
        adopted,
        sorted(p.id for p in rest),
    )


def test_ports_named_by_kuryrports_are_their_pods_whatever_the_marks_say() -> None:
    ports = [
        port("p1"),  # claimed, marks not written yet
        port("p2", device_id="old", tags=("kuryr.owner:old",)),  # marks of a dead pod
        port("p3", device_id="B", tags=("kuryr.owner:B",)),  # marks of a live pod
    ]
    owners, named, adopted, rest = load(ports, {"p1": "A", "p2": "C", "p3": "D"}, {"A", "B"})
    assert owners == {"p1": "A", "p2": "C", "p3": "D"}
    assert (named, adopted, rest) == (3, 0, [])


def test_a_second_port_of_an_owner_is_not_taken() -> None:
    ports = [port("p1"), port("p2", device_id="A")]
    owners, named, adopted, rest = load(ports, {"p1": "A", "p2": "A"}, {"A"})
    assert owners == {"p1": "A"}
    assert (named, adopted, rest) == (1, 0, ["p2"])


def test_references_to_ports_neutron_lacks_are_skipped() -> None:
    owners, named, adopted, rest = load([port("p1")], {"gone": "A", "p1": "B"}, {"A", "B"})
    assert owners == {"p1": "B"}
    assert (named, adopted, rest) == (1, 0, [])


def test_live_owners_without_a_named_port_adopt_the_one_marked_for_them() -> None:
    ports = [
        port("by-device", device_id="A"),
        port("by-tag", tags=("kuryr.owner:B",)),  # a create whose device_id never landed
        port("second", device_id="A"),  # one port per owner: the other is free
        port("has-one", device_id="C"),  # C's KuryrPort names another port
        port("named", device_id="X"),
    ]
    owners, named, adopted, rest = load(ports, {"named": "C"}, {"A", "B", "C"})
    assert owners == {"by-device": "A", "by-tag": "B", "named": "C"}
    assert (named, adopted) == (1, 2)
    assert rest == ["has-one", "second"]


def test_ports_of_dead_owners_and_free_ports_are_left_to_the_caller() -> None:
    ports = [port("dead", device_id="D", tags=("kuryr.owner:D",)), port("free")]
    owners, named, adopted, rest = load(ports, {}, {"A"})
    assert owners == {}
    assert (named, adopted, rest) == (0, 0, ["dead", "free"])


# ---- MarkWriter ----------------------------------------------------------------------------


async def _ports(world: World, n: int) -> list[NeutronPort]:
    spec = PortSpec(
        world.network, world.subnet, PROJECT, (world.sg,), "node-a",
        world.tagging.free(world.request().pool_key),
    )  # fmt: skip
    return await world.neutron.create_ports([spec] * n)


def _owned(world: World, free: NeutronPort, uid: str) -> NeutronPort:
    return with_marks(free, uid, f"ns/{uid}", world.tagging.in_use(uid))


def _writes(world: World, port_id: str) -> int:
    return sum(
        1 for m, path in world.fake.requests if m == "PUT" and path.startswith(f"/ports/{port_id}")
    )


def _marks(world: World, port_id: str) -> tuple[str, str, set[str]]:
    raw = world.fake.ports[port_id]
    return raw["device_id"], raw["name"], set(raw["tags"])


async def _until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer did not get there")


async def test_claim_release_claim_is_written_once() -> None:
    world = make_world()
    (free,) = await _ports(world, 1)
    writer = MarkWriter(world.neutron)
    a, b = _owned(world, free, "A"), _owned(world, free, "B")
    writer.want(free, a)  # as the pool does it: seen = the copy it held
    writer.want(a, free)
    writer.want(free, b)
    assert writer.backlog == 1
    await writer.flush()
    assert _marks(world, free.id) == ("B", "ns/B", set(world.tagging.in_use("B")))
    assert _writes(world, free.id) == 2  # one update (device_id, name), one tag replace
    assert (writer.written, writer.errors, writer.backlog) == (1, 0, 0)


async def test_claim_then_release_is_not_written_at_all() -> None:
    world = make_world()
    (free,) = await _ports(world, 1)
    writer = MarkWriter(world.neutron)
    a = _owned(world, free, "A")
    writer.want(free, a)
    writer.want(a, free)
    writer.want(free, free)  # already as Neutron has it
    assert writer.backlog == 0
    await writer.flush()
    assert _writes(world, free.id) == 0 and writer.written == 0


async def test_marks_wait_while_busy_and_are_written_once_quiet() -> None:
    world = make_world()
    ports = await _ports(world, 3)
    busy = [True]
    writer = MarkWriter(world.neutron, lambda: busy[0], max_delay=3600, poll=0.01)
    writer.start()
    try:
        for p in ports:
            writer.want(p, _owned(world, p, p.id[:8]))
        for _ in range(20):  # many rounds of the writer's loop
            await asyncio.sleep(0.01)
        assert world.fake.requests.count(("PUT", f"/ports/{ports[0].id}")) == 0
        assert writer.backlog == 3
        busy[0] = False
        await _until(lambda: writer.backlog == 0)
        for p in ports:
            assert _marks(world, p.id)[0] == p.id[:8]
    finally:
        await writer.stop()


async def test_marks_are_written_after_max_delay_even_when_busy() -> None:
    world = make_world()
    (free,) = await _ports(world, 1)
    writer = MarkWriter(world.neutron, lambda: True, max_delay=0.05, poll=0.01)
    writer.start()
    try:
        writer.want(free, _owned(world, free, "A"))
        await _until(lambda: writer.written == 1)
        assert _marks(world, free.id)[0] == "A"
    finally:
        await writer.stop()


@pytest.mark.parametrize(
    ("failing", "updates", "tag_writes"),
    [("", 2, 1), ("/tags", 1, 2)],
    ids=["update", "tags"],
)
async def test_a_temporary_error_is_retried_without_redoing_what_landed(
    failing: str, updates: int, tag_writes: int
) -> None:
    world = make_world()
    (free,) = await _ports(world, 1)
    writer = MarkWriter(world.neutron)
    world.fake.fail_next("PUT", f"/ports/{free.id}{failing}", 503)
    writer.want(free, _owned(world, free, "A"))
    await writer.flush()
    assert _marks(world, free.id) == ("A", "ns/A", set(world.tagging.in_use("A")))
    assert (writer.errors, writer.written, writer.backlog) == (1, 1, 0)
    assert world.fake.requests.count(("PUT", f"/ports/{free.id}")) == updates
    assert world.fake.requests.count(("PUT", f"/ports/{free.id}/tags")) == tag_writes


async def test_a_port_neutron_no_longer_has_is_dropped() -> None:
    world = make_world()
    gone, kept = await _ports(world, 2)
    writer = MarkWriter(world.neutron)
    del world.fake.ports[gone.id]
    writer.want(gone, _owned(world, gone, "A"))
    writer.want(kept, _owned(world, kept, "B"))
    await writer.flush()
    assert (writer.written, writer.errors, writer.backlog) == (1, 0, 0)
    assert gone.id not in world.fake.ports
    assert _marks(world, kept.id)[0] == "B"


async def test_forget_drops_a_pending_mark_and_stop_flushes_the_rest() -> None:
    world = make_world()
    deleted, kept = await _ports(world, 2)
    writer = MarkWriter(world.neutron, lambda: True, max_delay=3600)
    writer.start()
    writer.want(deleted, _owned(world, deleted, "A"))
    writer.want(kept, _owned(world, kept, "B"))
    writer.forget(deleted.id)
    await writer.stop()
    assert _writes(world, deleted.id) == 0
    assert _marks(world, kept.id)[0] == "B" and writer.backlog == 0
