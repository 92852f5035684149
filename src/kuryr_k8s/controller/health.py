"""``/healthz``, ``/readyz`` and ``/metrics`` over aiohttp.

* ``/healthz``: 200 while the process's loops are alive (a probe restarts us otherwise).
* ``/readyz``: 200 when this process is a healthy leader or standby: informers synced,
  and, when leading, the start-up steps (pool rebuild) done. The body says which part is
  missing.
* ``/metrics``: Prometheus text format from the controller's own registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LOG = logging.getLogger(__name__)


@dataclass
class HealthState:
    """What the probes report; the controller updates it, the server only reads."""

    role: str = "starting"
    """``starting``, ``standby`` or ``leader``."""
    informers_synced: bool = False
    startup_done: bool = False
    """Start-up steps of the leader (pool rebuild) finished."""
    failures: list[str] = field(default_factory=list)
    """Loops that died (non-empty: unhealthy)."""

    def readiness(self) -> tuple[bool, str]:
        if self.failures:
            return False, "failed: " + "; ".join(self.failures)
        if not self.informers_synced:
            return False, f"{self.role}: informers not synced"
        if self.role == "leader" and not self.startup_done:
            return False, "leader: pools are being rebuilt"
        if self.role not in ("leader", "standby"):
            return False, self.role
        return True, self.role


class HealthServer:
    def __init__(
        self,
        state: HealthState,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        self._state = state
        self._registry = registry
        self._host = host
        self._port = port
        self._alive = alive or (lambda: True)
        self._runner: web.AppRunner | None = None
        self.bound_port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses
        self.bound_port = int(addresses[0][1]) if addresses else self._port
        LOG.info("health and metrics on http://%s:%d", self._host, self.bound_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._state.failures or not self._alive():
            return web.Response(status=503, text="unhealthy: " + "; ".join(self._state.failures))
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self._state.readiness()
        return web.Response(status=200 if ok else 503, text=why)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
