"""The emulator process: aiohttp application, bootstrap, persistence, kubeconfig.

Usage::

    async with KubeApiServer("127.0.0.1", 0, persist_path=None) as srv:
        srv.write_kubeconfig(path)
        ... srv.url ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from kuryr_k8s.sandbox.kubeapi import auth, discovery, errors, rootca
from kuryr_k8s.sandbox.kubeapi.api import CRD_KEY, Api
from kuryr_k8s.sandbox.kubeapi.controllers import Controllers
from kuryr_k8s.sandbox.kubeapi.handlers import USER_KEY, Handlers, error_response, json_response
from kuryr_k8s.sandbox.kubeapi.resources import Registry, crd_resource_type
from kuryr_k8s.sandbox.kubeapi.store import Store

Obj = dict[str, Any]
LOG = logging.getLogger(__name__)

FLUSH_COST_RATIO = 10.0
"""The store is written again no sooner than this many times the last write's duration."""


def next_flush_delay(interval: float, last_cost: float) -> float:
    """Seconds until the next write of the store, given the last write's duration."""
    return max(interval, FLUSH_COST_RATIO * last_cost)


SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CONTEXT = "kuryr-emulator"


def kubeconfig(url: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_atomically(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KubeApiServer:
    """A Kubernetes API emulator listening on ``host:port`` (``port=0`` picks a free one)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        persist_path: Path | None = None,
        *,
        history: int = 10_000,
        bookmark_interval: float = 60.0,
        flush_interval: float = 0.2,
        orphan_pod_quarantine: float = 40.0,
        tls_port: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.tls_port = tls_port
        """Also serve HTTPS here (0: a free port), self-signed: kubectl sends bearer tokens
        only over TLS, so a ServiceAccount's kubectl needs this listener."""
        self.persist_path = Path(persist_path) if persist_path else None
        self.store = Store(history=history)
        self.registry = Registry()
        self.api = Api(self.store, self.registry)
        self.controllers = Controllers(self.api, orphan_pod_quarantine)
        self.handlers = Handlers(self.api, bookmark_interval)
        self.flush_interval = flush_interval
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        return None if self.tls_port is None else f"https://{self.host}:{self.tls_port}"

    # ------------------------------------------------------------ lifecycle

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Authentication then RBAC (no ``Authorization`` header: the administrator)."""
        header = request.headers.get("Authorization")
        if not header:
            response: web.StreamResponse = await handler(request)
            return response
        try:
            user = self.handlers.tokens.authenticate(header)
        except errors.ApiError as exc:
            return error_response(exc)
        request[USER_KEY] = user
        attrs = auth.request_attributes(request.method, request.path, dict(request.query))
        decision = self.handlers.authorizer.authorize(user, attrs)
        if not decision.allowed:
            return error_response(auth.forbidden(user, attrs, decision.reason))
        response = await handler(request)
        return response

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[self._authorize])
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, self._ok)
        app.router.add_get("/version", self._version)
        app.router.add_get("/openapi/v3", self._openapi_index)
        app.router.add_get("/openapi/v3/{path:.*}", self._openapi_document)
        app.router.add_route("*", "/api{tail:.*}", self.handlers.handle)
        return app

    async def start(self) -> None:
        self._load()
        self._bootstrap()
        self._runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        if self.tls_port is not None:
            tls = web.TCPSite(
                self._runner,
                self.host,
                self.tls_port,
                ssl_context=rootca.self_signed_server_context(self.host),
            )
            await tls.start()
            if self.tls_port == 0:
                self.tls_port = int(self._runner.addresses[1][1])
        self.handlers.address = f"{self.host}:{self.port}"
        self._publish_endpoints()
        self._tasks.append(asyncio.create_task(self.controllers.run()))
        self._tasks.append(asyncio.create_task(self.controllers.run_pod_gc()))
        if self.persist_path is not None:
            self._tasks.append(asyncio.create_task(self._flusher()))
        LOG.info("Kubernetes API emulator listening on %s", self.url)

    async def stop(self) -> None:
        self.store.close_watchers()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.flush()

    async def __aenter__(self) -> KubeApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ state

    def _load(self) -> None:
        if self.persist_path is None or not self.persist_path.exists():
            return
        data = json.loads(self.persist_path.read_text())
        for key, obj in self.store.restore(data):
            if key == CRD_KEY:
                self.registry.add(crd_resource_type(obj))
            if key == "/services":
                self.api.ips.reserve([str((obj.get("spec") or {}).get("clusterIP") or "")])
        LOG.info("loaded %d objects from %s", len(data.get("objects", [])), self.persist_path)

    def _bootstrap(self) -> None:
        nss = self.registry.get("/namespaces")
        svcs = self.registry.get("/services")
        assert nss is not None and svcs is not None
        for name in SYSTEM_NAMESPACES:
            if self.store.get(nss.key, "", name) is None:
                self.api.create(nss, "v1", "", {"metadata": {"name": name}})
        if self.store.get(svcs.key, "default", "kubernetes") is None:
            self.api.create(
                svcs,
                "v1",
                "default",
                {
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"component": "apiserver", "provider": "kubernetes"},
                    },
                    "spec": {
                        "clusterIP": "10.96.0.1",
                        "ports": [
                            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
                        ],
                    },
                },
            )
        for key, defaults in (
            (auth.CLUSTER_ROLES, auth.DEFAULT_CLUSTER_ROLES),
            (auth.CLUSTER_ROLE_BINDINGS, auth.DEFAULT_CLUSTER_ROLE_BINDINGS),
        ):
            rt = self.registry.get(key)
            assert rt is not None
            for body in defaults:
                if self.store.get(key, "", body["metadata"]["name"]) is None:
                    self.api.create(rt, rt.version, "", json.loads(json.dumps(body)))
        self.controllers.resync_endpoint_slices()
        self.controllers.run_pending()
        self.store.window_start = self.store.rv

    def _publish_endpoints(self) -> None:
        """Point ``default/kubernetes`` at this server, as a real apiserver does for itself."""
        port: Obj = {"name": "https", "port": self.port, "protocol": "TCP"}
        endpoints: Obj = {
            "metadata": {
                "name": "kubernetes",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
            },
            "subsets": [{"addresses": [{"ip": self.host}], "ports": [port]}],
        }
        endpoint_slice: Obj = {
            "metadata": {
                "name": "kubernetes",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [port],
            "endpoints": [{"addresses": [self.host], "conditions": {"ready": True}}],
        }
        for key, body in (
            ("/endpoints", endpoints),
            ("discovery.k8s.io/endpointslices", endpoint_slice),
        ):
            rt = self.registry.get(key)
            assert rt is not None
            old = self.store.get(key, "default", "kubernetes")
            if old is None:
                self.api.create(rt, rt.version, "default", body)
            else:
                body["metadata"] = {**old["metadata"], **body["metadata"]}
                self.api.replace(rt, rt.version, "default", "kubernetes", {**old, **body})

    def flush(self) -> None:
        if self.persist_path is None or not self.store.changed:
            return
        self.store.changed = False
        write_atomically(self.persist_path, json.dumps(self.store.snapshot()))

    async def _flusher(self) -> None:
        """Persist changes every ``flush_interval``, or less often when a write is costly:
        the next write waits at least :data:`FLUSH_COST_RATIO` times the last one's
        duration, so persisting takes at most ~1/ratio of a core. Each write is the whole
        store as JSON; every 0.2 s during a burst of 100 pods it took two thirds of the
        emulator's CPU (profiled 2026-11-28), which the controller then waited on."""
        delay = self.flush_interval
        while True:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                self.flush()
            except Exception:  # keep serving; the next change retries the write
                self.store.changed = True
                LOG.exception("could not persist the store to %s", self.persist_path)
            delay = next_flush_delay(self.flush_interval, time.monotonic() - started)

    def write_kubeconfig(self, path: Path) -> Path:
        path = Path(path)
        write_atomically(path, yaml.safe_dump(kubeconfig(self.url), sort_keys=False))
        return path

    # ------------------------------------------------------------ non-resource endpoints

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(discovery.version_info())

    async def _openapi_index(self, request: web.Request) -> web.Response:
        return json_response(discovery.openapi_index(self.registry))

    async def _openapi_document(self, request: web.Request) -> web.Response:
        parts = request.match_info["path"].strip("/").split("/")
        doc = None
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.openapi_document(self.registry, "", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.openapi_document(self.registry, parts[1], parts[2])
        if doc is None:
            return web.Response(status=404, text="404 page not found\n")
        return json_response(doc)
