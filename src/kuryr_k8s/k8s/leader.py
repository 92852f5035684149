"""Leader election on a coordination.k8s.io/v1 Lease, following client-go's algorithm.

* A candidate reads the Lease. If another holder renewed it less than
  ``leaseDurationSeconds`` ago *as observed on our own monotonic clock* (we never compare
  our wall clock with another node's), the lease is held: wait ``retry_period``.
* Otherwise it writes itself as holder with ``replace`` carrying the resourceVersion it
  read: two candidates racing produce one winner and one ``Conflict``.
* The leader renews every ``retry_period``; if it cannot renew for ``renew_deadline``
  (shorter than the lease duration) it stops leading before anyone else may take over.
* ``release()`` hands the lease back (empty holder, 1 s duration) for a fast failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import AlreadyExists, Conflict, NotFound
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import LEASES
from kuryr_k8s.k8s.timing import Clock, SystemClock
from kuryr_k8s.model.errors import KuryrError

LOG = logging.getLogger(__name__)


class LeadershipLost(KuryrError):
    """The leader could not renew its lease within the renew deadline."""


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Which Lease, who we are, and the timing (client-go defaults)."""

    namespace: str
    name: str
    identity: str
    """Unique per process, e.g. ``<hostname>_<uuid>``."""
    lease_duration: float = 15.0
    """Seconds a non-leader waits after the last observed renewal before taking over."""
    renew_deadline: float = 10.0
    """Seconds the leader keeps trying to renew before giving up leadership."""
    retry_period: float = 2.0
    """Seconds between attempts (acquire or renew)."""


class LeaderElector:
    """Acquire, renew and release one Lease."""

    def __init__(
        self, client: KubeClient, config: LeaderElectionConfig, *, clock: Clock | None = None
    ) -> None:
        if config.renew_deadline >= config.lease_duration:
            raise ValueError("renew_deadline must be shorter than lease_duration")
        self._client = client
        self.config = config
        self._clock: Clock = clock or SystemClock()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._observed_duration = config.lease_duration
        self.is_leader = False
        self._renewed_at: float | None = None
        """Monotonic time at which our last successful acquire/renew was *sent*."""

    def holds_lease(self) -> bool:
        """True while our last successful renewal is younger than ``renew_deadline``, so a
        successor (which waits ``lease_duration`` after the last renewal it saw) cannot
        have taken over. For fencing writes that must come from the leader only."""
        if self._renewed_at is None:
            return False
        return self._clock.monotonic() - self._renewed_at < self.config.renew_deadline

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards. API errors count as False."""
        sent = self._clock.monotonic()
        try:
            ok = await self._attempt()
        except KuryrError as exc:
            LOG.warning("lease %s/%s: %s", self.config.namespace, self.config.name, exc)
            self.is_leader = False
            return False
        if ok:
            self._renewed_at = sent
        elif self._observed and self._observed[0] not in (None, "", self.config.identity):
            self._renewed_at = None  # somebody else holds it
        return ok

    async def _attempt(self) -> bool:
        cfg = self.config
        try:
            lease = await self._client.get(LEASES, cfg.name, cfg.namespace)
        except NotFound:
            return await self._create()
        spec: dict[str, Any] = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        expires = self._observed_at + self._observed_duration
        if holder and holder != cfg.identity and self._clock.monotonic() < expires:
            self.is_leader = False
            return False
        now = objects.micro_timestamp(self._clock.now())
        new_spec = dict(spec)
        if holder != cfg.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        new_spec.update(
            holderIdentity=cfg.identity,
            leaseDurationSeconds=int(cfg.lease_duration),
            renewTime=now,
        )
        lease["spec"] = new_spec
        try:
            written = await self._client.replace(LEASES, lease)
        except Conflict:
            self.is_leader = False
            return False
        self._observe(written.get("spec") or {})
        self.is_leader = True
        return True

    async def _create(self) -> bool:
        cfg = self.config
        now = objects.micro_timestamp(self._clock.now())
        body: Obj = {
            "metadata": {"name": cfg.name, "namespace": cfg.namespace},
            "spec": {
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": int(cfg.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._client.create(LEASES, body, cfg.namespace)
        except AlreadyExists:
            return False
        self._observe(created.get("spec") or {})
        self.is_leader = True
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        record = tuple(
            spec.get(f) for f in ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions")
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock.monotonic()
            self._observed_duration = float(
                spec.get("leaseDurationSeconds") or self.config.lease_duration
            )

    async def release(self) -> None:
        """Give the lease up if we hold it (best-effort)."""
        self._renewed_at = None
        if not self.is_leader:
            return
        self.is_leader = False
        cfg = self.config
        try:
            lease = await self._client.get(LEASES, cfg.name, cfg.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != cfg.identity:
                return
            spec.update(
                holderIdentity=None,
                leaseDurationSeconds=1,
                renewTime=objects.micro_timestamp(self._clock.now()),
            )
            lease["spec"] = spec
            await self._client.replace(LEASES, lease)
        except KuryrError as exc:
            LOG.warning("could not release lease %s/%s: %s", cfg.namespace, cfg.name, exc)

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Wait for leadership, run ``lead()`` while renewing, release when it returns.

        Raises :class:`LeadershipLost` (after cancelling ``lead``) if renewal fails for
        ``renew_deadline``. Cancelling ``run`` cancels ``lead`` and releases the lease.
        """
        while not await self.try_acquire_or_renew():
            await self._clock.sleep(self.config.retry_period)
        LOG.info(
            "lease %s/%s: became leader as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        leading = asyncio.ensure_future(lead())
        renewing = asyncio.ensure_future(self._keep_renewing())
        try:
            done, _ = await asyncio.wait({leading, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if renewing in done:
                renewing.result()  # raises LeadershipLost
            leading.result()
        finally:
            for task in (leading, renewing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.release()

    async def _keep_renewing(self) -> None:
        last_ok = self._clock.monotonic()
        while True:
            await self._clock.sleep(self.config.retry_period)
            if await self.try_acquire_or_renew():
                last_ok = self._clock.monotonic()
            elif self._clock.monotonic() - last_ok >= self.config.renew_deadline:
                raise LeadershipLost(
                    f"could not renew lease {self.config.namespace}/{self.config.name} "
                    f"for {self.config.renew_deadline}s"
                )
            elif (
                not self.is_leader
                and self._observed
                and self._observed[0] not in (None, "", self.config.identity)
            ):
                raise LeadershipLost(f"lease taken over by {self._observed[0]}")
