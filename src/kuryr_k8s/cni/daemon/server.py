"""The daemon's HTTP front: the CNI API on a root-only unix socket, health and metrics.

* unix socket (mode 0600; its directory is made 0700 if missing): ``POST /v1/cni``
  (:mod:`kuryr_k8s.cni.wire`), plus ``/healthz``, ``/readyz``, ``/metrics``;
* optional TCP address (e.g. ``127.0.0.1:8091``) for probes and Prometheus: ``/healthz``,
  ``/readyz``, ``/metrics`` only, never the CNI API.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kuryr_k8s.cni import spec, wire
from kuryr_k8s.cni.daemon.service import CniService
from kuryr_k8s.cni.errors import reason, to_cni_error
from kuryr_k8s.model.errors import ConfigError

LOG = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096
"""Pending connections on the CNI socket (one per plugin run kubelet started)."""
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 120)


MAX_HEAD_START = 120.0
"""A plugin start further back than this is a wrong clock, not a slow start: ignored."""


def plugin_head_start(plugin_started: object, now: float) -> float:
    """Seconds between the plugin process's start (Unix time it sent) and ``now``, the
    part of a request the daemon's own clock misses; 0 when absent or implausible."""
    if not isinstance(plugin_started, int | float) or isinstance(plugin_started, bool):
        return 0.0
    head = now - float(plugin_started)
    return head if 0.0 <= head <= MAX_HEAD_START else 0.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "kuryr_cni_request_duration_seconds",
            "Time to answer a CNI request, from the plugin process's start when it says when "
            "(pluginStarted), by command and outcome",
            ["command", "outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.failures = Counter(
            "kuryr_cni_failures_total",
            "Failed CNI requests by command, CNI error code and reason",
            ["command", "code", "reason"],
            registry=self.registry,
        )
        self.replugs = Counter(
            "kuryr_cni_replugs_total",
            "Attachments plugged again after their host side vanished, by vifType and outcome",
            ["vif_type", "outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


Readiness = Callable[[], "str | None"]


class DaemonServer:
    def __init__(self, service: CniService, metrics: Metrics, ready: Readiness) -> None:
        self.service = service
        self.metrics = metrics
        self.ready = ready
        self._runners: list[web.AppRunner] = []

    def app(self, *, cni: bool) -> web.Application:
        app = web.Application()
        if cni:
            app.router.add_post(wire.API_PATH, self._cni)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _cni(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        command = "?"
        try:
            body = json.loads(await request.read())
            command = str(body.get("command", "?")) if isinstance(body, dict) else "?"
            if isinstance(body, dict):
                started -= plugin_head_start(body.get("pluginStarted"), time.time())
            result = await self.service.handle(body)
        except Exception as exc:
            err = to_cni_error(exc)
            if err.code == spec.INTERNAL:
                LOG.exception("%s failed", command)
            else:
                LOG.warning("%s failed: %s", command, err)
            self.metrics.failures.labels(command, str(err.code), reason(exc)).inc()
            self.metrics.duration.labels(command, "error").observe(time.monotonic() - started)
            status = 500 if err.code in (spec.INTERNAL, spec.TRY_AGAIN_LATER) else 400
            return web.json_response({"error": err.to_dict()}, status=status)
        self.metrics.duration.labels(command, "ok").observe(time.monotonic() - started)
        return web.json_response({"result": result})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problem = self.ready()
        if problem:
            return web.Response(text=f"not ready: {problem}\n", status=503)
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self, socket_path: Path, tcp_address: str | None) -> None:
        _prepare_socket_path(socket_path)
        runner = web.AppRunner(self.app(cni=True), access_log=None)
        await runner.setup()
        self._runners.append(runner)
        old = os.umask(0o177)
        try:
            # kubelet runs one plugin per pod at once: a burst of 200 DELs overflowed
            # aiohttp's default backlog (128) and the plugins got EAGAIN (benchmark run
            # 2026-11-28); the kernel caps this at net.core.somaxconn.
            await web.UnixSite(runner, str(socket_path), backlog=LISTEN_BACKLOG).start()
        finally:
            os.umask(old)
        socket_path.chmod(0o600)  # noqa: ASYNC240 - once, at start
        if tcp_address:
            host, _, port = tcp_address.rpartition(":")
            tcp = web.AppRunner(self.app(cni=False), access_log=None)
            await tcp.setup()
            self._runners.append(tcp)
            await web.TCPSite(tcp, host.strip("[]") or "127.0.0.1", int(port)).start()

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


def _prepare_socket_path(path: Path) -> None:
    """Make the socket's directory (0700 when we create it; an existing one is left as it
    is, the socket itself is 0600) and remove a stale socket, refusing to steal the socket
    of a daemon that still answers on it."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: a leftover of a daemon that died
            return
    raise ConfigError(f"another kuryr daemon is serving {path}; stop it first")
