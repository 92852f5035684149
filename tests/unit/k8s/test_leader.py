"""Lease-based leader election with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from kuryr_k8s.k8s import (
    LEASES,
    KubeClient,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLost,
)
from unit.k8s.fakeapi import FakeApi, FakeClock

pytestmark = pytest.mark.unit


def elector(client: KubeClient, clock: FakeClock, who: str) -> LeaderElector:
    cfg = LeaderElectionConfig("kube-system", "kuryr", who, 15, 10, 2)
    return LeaderElector(client, cfg, clock=clock)


async def holder(client: KubeClient) -> tuple[str | None, int]:
    spec = (await client.get(LEASES, "kuryr", "kube-system"))["spec"]
    return spec.get("holderIdentity"), spec["leaseTransitions"]


async def test_first_candidate_acquires_second_waits(client: KubeClient, clock: FakeClock) -> None:
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(14)
    assert await a.try_acquire_or_renew()  # renew
    clock.advance(14)
    assert not await b.try_acquire_or_renew()  # b saw the renewal: the lease is fresh
    assert await holder(client) == ("a", 0)
    assert a.is_leader and not b.is_leader


async def test_takeover_after_lease_duration_without_renewal(
    client: KubeClient, clock: FakeClock
) -> None:
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(14.9)
    assert not await b.try_acquire_or_renew()
    clock.advance(0.2)
    assert await b.try_acquire_or_renew()
    assert await holder(client) == ("b", 1)
    assert not await a.try_acquire_or_renew()  # a comes back: b's renewal is fresh
    assert not a.is_leader


async def test_release_lets_the_next_candidate_in_quickly(
    client: KubeClient, clock: FakeClock
) -> None:
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert await holder(client) == (None, 0)
    assert await b.try_acquire_or_renew()  # empty holder: no need to wait


async def test_concurrent_writers_one_wins_by_resource_version(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    await a.release()
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    winner = "a" if results[0] else "b"
    assert (await holder(client))[0] == winner


async def test_run_leads_then_loses_when_renewal_fails(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    a = elector(client, clock, "a")
    led = asyncio.Event()

    async def lead() -> None:
        led.set()
        api.fail_next(503, "ServiceUnavailable", times=100)
        await asyncio.Event().wait()

    with pytest.raises(LeadershipLost):
        await a.run(lead)
    assert led.is_set() and not a.is_leader
    assert clock.t >= 10  # gave up after the renew deadline


async def test_run_releases_when_lead_returns(client: KubeClient, clock: FakeClock) -> None:
    a = elector(client, clock, "a")

    async def lead() -> None:
        return None

    await a.run(lead)
    assert await holder(client) == (None, 0)


async def test_holds_lease_until_renew_deadline_without_renewal(
    client: KubeClient, clock: FakeClock
) -> None:
    a = elector(client, clock, "a")  # lease 15 s, renew deadline 10 s
    assert not a.holds_lease()
    assert await a.try_acquire_or_renew()
    assert a.holds_lease()
    clock.advance(9.9)
    assert a.holds_lease()
    clock.advance(0.1)
    assert not a.holds_lease()  # a successor may be 5 s from taking over: stop claiming
    assert await a.try_acquire_or_renew()  # still ours (nobody took it): renewed
    assert a.holds_lease()
    await a.release()
    assert not a.holds_lease()


async def test_a_failed_renewal_does_not_extend_the_lease(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    clock.advance(6)
    api.fail_next(503, "ServiceUnavailable")
    assert not await a.try_acquire_or_renew()
    assert a.holds_lease()  # the last renewal (6 s ago) still fences a successor out
    clock.advance(4)
    assert not a.holds_lease()
    assert not await b.try_acquire_or_renew()
    assert not b.holds_lease()  # a candidate that did not get the lease never claims


async def test_the_old_leader_stops_claiming_before_a_successor_can_start(
    client: KubeClient, clock: FakeClock
) -> None:
    """The fence of ``pool-ownership.md`` §6: whenever the successor holds the lease, the
    paused leader's ``holds_lease`` is already False."""
    a, b = elector(client, clock, "a"), elector(client, clock, "b")
    assert await a.try_acquire_or_renew()
    for _ in range(40):  # a is paused (no renewal); b tries every 0.5 s
        clock.advance(0.5)
        b_leads = await b.try_acquire_or_renew()
        assert not (b_leads and a.holds_lease()), f"both may claim at t={clock.t}"
        if b_leads:
            break
    assert b.is_leader and b.holds_lease() and not a.holds_lease()
    assert not await a.try_acquire_or_renew()  # a wakes up: b's lease is fresh
    assert not a.holds_lease()
