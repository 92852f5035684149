"""The reconcile engine: de-duplication, per-key serial / cross-key parallel, backoff,
delayed requeue, permanent errors. Time is a FakeClock: sleeps advance it instantly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from kuryr_k8s.controller.engine import Engine, EngineSettings, Result, WorkQueue
from kuryr_k8s.model.errors import PermanentError, TemporaryError
from unit.k8s.fakeapi import FakeClock


@dataclass
class Recorder:
    """A reconciler whose behaviour per call is scripted; it records what it saw."""

    kind: str = "test"
    script: dict[str, list[Callable[[], Result]]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event | None = None
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight_per_key: int = 0
    max_in_flight: int = 0
    times: list[tuple[str, float]] = field(default_factory=list)
    clock: FakeClock | None = None

    async def reconcile(self, key: str) -> Result:
        self.calls[key] += 1
        if self.clock is not None:
            self.times.append((key, self.clock.monotonic()))
        self.in_flight[key] += 1
        self.max_in_flight_per_key = max(self.max_in_flight_per_key, self.in_flight[key])
        self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            if self.gate is not None:
                await self.gate.wait()
            steps = self.script.get(key)
            if steps:
                return steps.pop(0)()
            return Result()
        finally:
            self.in_flight[key] -= 1


def raise_(exc: Exception) -> Callable[[], Result]:
    def step() -> Result:
        raise exc

    return step


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rec(clock: FakeClock) -> Recorder:
    return Recorder(clock=clock)


@pytest.fixture
async def engine(rec: Recorder, clock: FakeClock) -> AsyncIterator[Engine]:
    eng = Engine(
        rec,
        EngineSettings(workers=3, backoff_base=1.0, backoff_cap=8.0),
        clock=clock,
        rng=random.Random(7),
    )
    task = asyncio.ensure_future(eng.run())
    yield eng
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def settle(engine: Engine) -> None:
    """Let delayed requeues fire and the queue drain."""
    for _ in range(50):
        await engine.wait_idle()
        await asyncio.sleep(0)
        if not engine.queue.pending_timers() and not len(engine.queue):
            await engine.wait_idle()
            return


async def test_queue_deduplicates_keys() -> None:
    q = WorkQueue(FakeClock())
    for key in ["a", "b", "a", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert [await q.get(), await q.get(), await q.get()] == ["a", "b", "c"]


async def test_key_added_while_processing_is_processed_again_after() -> None:
    q = WorkQueue(FakeClock())
    q.add("a")
    assert await q.get() == "a"
    q.add("a")
    assert len(q) == 0, "not handed to a second worker while processing"
    q.done("a")
    assert len(q) == 1
    assert await q.get() == "a"


async def test_many_adds_before_start_reconcile_once(engine: Engine, rec: Recorder) -> None:
    for _ in range(10):
        engine.enqueue("ns/a")
    await settle(engine)
    assert rec.calls == {"ns/a": 1}


async def test_one_worker_per_key_many_keys_in_parallel_up_to_the_cap(
    engine: Engine, rec: Recorder
) -> None:
    rec.gate = asyncio.Event()
    for i in range(10):
        engine.enqueue(f"ns/p{i}")
    for _ in range(20):
        await asyncio.sleep(0)
    engine.enqueue("ns/p0")  # changed while being reconciled
    for _ in range(20):
        await asyncio.sleep(0)
    assert rec.max_in_flight == 3, "the concurrency cap"
    rec.gate.set()
    await settle(engine)
    assert rec.max_in_flight_per_key == 1
    assert rec.calls["ns/p0"] == 2
    assert all(rec.calls[f"ns/p{i}"] == 1 for i in range(1, 10))


async def test_temporary_errors_back_off_exponentially_capped_and_jittered(
    engine: Engine, rec: Recorder, clock: FakeClock
) -> None:
    rec.script["ns/a"] = [raise_(TemporaryError("neutron 503")) for _ in range(6)]
    engine.enqueue("ns/a")
    await settle(engine)
    assert rec.calls["ns/a"] == 7
    starts = [t for k, t in rec.times if k == "ns/a"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for gap, ceiling in zip(gaps, ceilings, strict=True):
        assert ceiling / 2 <= gap <= ceiling
    assert engine.failures == {}, "success forgets the backoff"


async def test_a_temporary_errors_delay_is_honoured(
    engine: Engine, rec: Recorder, clock: FakeClock
) -> None:
    rec.script["ns/a"] = [raise_(TemporaryError("retry-after", delay=5.0))]
    engine.enqueue("ns/a")
    await settle(engine)
    starts = [t for k, t in rec.times if k == "ns/a"]
    assert starts[1] - starts[0] == pytest.approx(5.0)


async def test_permanent_error_is_recorded_and_not_retried(engine: Engine, rec: Recorder) -> None:
    rec.script["ns/a"] = [raise_(PermanentError("quota exceeded"))]
    engine.enqueue("ns/a")
    await settle(engine)
    assert rec.calls["ns/a"] == 1
    assert engine.permanent == {"ns/a": "quota exceeded"}
    assert engine.queue.pending_timers() == []
    engine.enqueue("ns/a")  # the object changed: try again, and success clears the record
    await settle(engine)
    assert rec.calls["ns/a"] == 2
    assert engine.permanent == {}


async def test_unexpected_exceptions_are_retried_with_backoff(
    engine: Engine, rec: Recorder
) -> None:
    rec.script["ns/a"] = [raise_(RuntimeError("bug"))]
    engine.enqueue("ns/a")
    await settle(engine)
    assert rec.calls["ns/a"] == 2


async def test_requeue_after_looks_again_later(
    engine: Engine, rec: Recorder, clock: FakeClock
) -> None:
    rec.script["ns/a"] = [lambda: Result(requeue_after=3.0), lambda: Result(requeue_after=3.0)]
    engine.enqueue("ns/a")
    await settle(engine)
    starts = [t for k, t in rec.times if k == "ns/a"]
    assert len(starts) == 3
    assert starts[2] - starts[1] == pytest.approx(3.0)


async def test_an_earlier_timer_wins_over_a_later_one(clock: FakeClock) -> None:
    q = WorkQueue(clock)
    q.add_after("a", 10.0)
    q.add_after("a", 2.0)
    q.add_after("a", 5.0)
    assert q.pending_timers() == ["a"]
    assert await q.get() == "a"
    assert clock.monotonic() == pytest.approx(2.0)
    q.shutdown()


async def test_event_keys_go_before_a_resync_and_an_event_promotes_a_resynced_key() -> None:
    """After a restart the resync queues every key; a new pod's key must not wait
    behind a thousand unchanged ones."""
    q = WorkQueue(FakeClock())
    for i in range(5):
        q.add(f"old-{i}", background=True)
    q.add("new")
    q.add("old-3")  # an event for a key already queued by the resync
    order = []
    for _ in range(6):
        key = await q.get()
        order.append(key)
        q.done(key)
    assert order[:2] == ["new", "old-3"]
    assert sorted(order[2:]) == ["old-0", "old-1", "old-2", "old-4"]
    assert len(q) == 0


async def test_a_lone_key_is_next_after_one_key_of_each_busier_group() -> None:
    """Keys are handed out round-robin over groups: a pod of another workload queued
    after a burst of 100 goes second, not 101st; within a group order is kept."""
    group = {f"burst-{i}": "rs-a" for i in range(100)} | {"lone": "bare", "other-0": "rs-b"}
    q = WorkQueue(FakeClock(), group_of=group.__getitem__)
    for i in range(100):
        q.add(f"burst-{i}")
    first = await q.get()
    q.add("lone")
    q.add("other-0")
    order = [first]
    while len(q):
        key = await q.get()
        order.append(key)
        q.done(key)
    assert order[:4] == ["burst-0", "burst-1", "lone", "other-0"]
    assert [k for k in order if k.startswith("burst")] == [f"burst-{i}" for i in range(100)]
    assert len(order) == 102


async def test_a_key_requeued_while_processing_keeps_its_group_turn() -> None:
    group = {"a1": "A", "a2": "A", "b1": "B"}
    q = WorkQueue(FakeClock(), group_of=group.__getitem__)
    q.add("a1")
    assert await q.get() == "a1"
    q.add("a2")
    q.add("a1")  # changed while processing
    q.add("b1")
    q.done("a1")
    assert [await q.get(), await q.get(), await q.get()] == ["a2", "b1", "a1"]


async def test_a_failing_grouping_never_loses_a_key() -> None:
    def broken(key: str) -> str:
        raise KeyError(key)

    q = WorkQueue(FakeClock(), group_of=broken)
    q.add("a")
    q.add("b")
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_engine_serves_a_lone_key_before_the_rest_of_a_burst(clock: FakeClock) -> None:
    """End to end through the engine: one worker, a burst of 20 of one group, then a key
    of another group; it is reconciled second."""
    done: list[str] = []

    class Slow:
        kind = "pod"

        async def reconcile(self, key: str) -> Result:
            done.append(key)
            await asyncio.sleep(0)
            return Result()

    engine = Engine(
        Slow(),
        EngineSettings(workers=1),
        clock=clock,
        group_of=lambda key: key.split("-")[0],
    )
    for i in range(20):
        engine.enqueue(f"burst-{i}")
    engine.enqueue("lone-0")
    task = asyncio.ensure_future(engine.run())
    try:
        await asyncio.wait_for(engine.wait_idle(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert done[:3] == ["burst-0", "lone-0", "burst-1"]
    assert len(done) == 21
