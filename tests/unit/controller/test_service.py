"""The Controller service: informers feed every engine, leadership start-up steps run
before reconciling, readiness follows, and shutdown steps run when leading ends."""

from __future__ import annotations

import asyncio

from kuryr_k8s.controller.engine import Engine, Result
from kuryr_k8s.controller.health import HealthState
from kuryr_k8s.controller.service import Controller
from kuryr_k8s.k8s import PODS, Informer
from unit.k8s.fakeapi import FakeApi, FakeClock


class Seen:
    kind = "seen"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def reconcile(self, key: str) -> Result:
        self.log.append(f"reconcile {key}")
        return Result()


async def test_leading_runs_startup_then_reconciles_every_cached_key_then_shuts_down() -> None:
    api = FakeApi()
    log: list[str] = []
    async with api.client() as client:
        await client.create(PODS, {"metadata": {"name": "a"}}, "ns")
        await client.create(PODS, {"metadata": {"name": "b"}}, "ns")
        informer = Informer(client, PODS, clock=FakeClock())
        health = HealthState()

        async def startup() -> None:
            assert not health.startup_done
            log.append("startup")

        async def shutdown() -> None:
            log.append("shutdown")

        controller = Controller(
            informers=[informer],
            engines=[Engine(Seen(log))],
            elector=None,
            health=health,
            startup=[startup],
            shutdown=[shutdown],
            clock=FakeClock(),
            resync_period=3600.0,
        )
        task = asyncio.ensure_future(controller.run())
        for _ in range(200):
            if len(log) >= 3:
                break
            await asyncio.sleep(0)
        assert log[0] == "startup"
        assert sorted(log[1:3]) == ["reconcile ns/a", "reconcile ns/b"]
        assert health.readiness() == (True, "leader")

        await client.create(PODS, {"metadata": {"name": "c"}}, "ns")
        for _ in range(200):
            if "reconcile ns/c" in log:
                break
            await asyncio.sleep(0)
        assert "reconcile ns/c" in log, "watch events reach the engines"

        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert log[-1] == "shutdown"
        assert health.role == "standby"
        await api.end_watches()


async def test_health_server_reports_readiness_and_metrics() -> None:
    import httpx

    from kuryr_k8s.controller.health import HealthServer
    from kuryr_k8s.controller.metrics import Metrics

    state, metrics = HealthState(), Metrics()
    metrics.reconciled("pod", "success", 0.01)
    server = HealthServer(state, metrics.registry, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            r = await http.get("/readyz")
            assert (r.status_code, r.text) == (503, "starting: informers not synced")
            state.informers_synced, state.role = True, "standby"
            r = await http.get("/readyz")
            assert (r.status_code, r.text) == (200, "standby")
            body = (await http.get("/metrics")).text
            assert 'kuryr_reconcile_total{kind="pod",outcome="success"} 1.0' in body
            assert "kuryr_pod_wiring_seconds_bucket" in body
    finally:
        await server.stop()
