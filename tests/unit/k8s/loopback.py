"""The in-memory API (:class:`~unit.k8s.fakeapi.FakeApi`) served over a real loopback
HTTP server (aiohttp), so the client's real network, :class:`AiohttpTransport`, is
exercised by the same tests as ``httpx.MockTransport``: bodies, query strings, headers,
status codes and streamed watches all cross a socket."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

import httpx
from aiohttp import web

from unit.k8s.fakeapi import FakeApi

_NOT_FORWARDED = frozenset({"content-length", "transfer-encoding", "connection"})


@contextlib.asynccontextmanager
async def serve(api: FakeApi, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``api`` on 127.0.0.1 (a free port); yields its base URL."""

    async def handler(request: web.Request) -> web.StreamResponse:
        forwarded = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.items()),
            content=await request.read(),
        )
        answer = await api.handle(forwarded)
        out = web.StreamResponse(status=answer.status_code)
        for key, value in answer.headers.multi_items():
            if key.lower() not in _NOT_FORWARDED:
                out.headers.add(key, value)
        await out.prepare(request)
        if answer.is_stream_consumed:  # built from bytes or JSON: read already
            await out.write(answer.content)
        else:  # a watch
            async for chunk in answer.aiter_raw():
                await out.write(chunk)
        await out.write_eof()
        return out

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await api.end_watches()
        await runner.cleanup()
