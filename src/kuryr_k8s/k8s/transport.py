"""The Kubernetes client's network: an ``httpx`` transport over aiohttp's HTTP client.

:class:`~kuryr_k8s.k8s.client.KubeClient` speaks ``httpx`` (tests swap the network for
``httpx.MockTransport``), but httpx's own transport, httpcore's connection pool, was most
of the controller's CPU in a burst of pods: on every request and every response it walks
all pooled connections and asks each idle one whether its socket is readable (a syscall
each), and with ``sniffio`` absent (anyio 4.16 dropped it) it also retries a failed import
several times per request. Measured against the sandbox's API emulator (2026-11-29,
``GET`` of an empty list): httpcore 1.3 ms of client CPU per request one at a time and
2.0-4.3 ms with 16-48 in flight; aiohttp 0.15-0.3 ms. A py-spy profile of the
controller in a burst of 50 pods had 57 % of its samples inside httpcore.

This transport hands each request to one ``aiohttp.ClientSession`` (created on first use,
in the running loop) and returns the body as a stream, so watches stay streams. Errors
become the ``httpx`` exceptions the client already handles (all ``httpx.HTTPError``).
Bodies are passed through undecoded: httpx decodes ``Content-Encoding`` itself.

Proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, as httpx's
own transport honoured them) are read once, when the transport is built, and decided
once per server: aiohttp's ``trust_env`` re-reads the environment and tries to parse
``~/.netrc`` on every request, which was a quarter of the controller's CPU in a burst of
50 pods (py-spy, 2026-11-29).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx
import yarl

_HOP_BY_HOP = frozenset({"host", "connection", "content-length", "transfer-encoding", "keep-alive"})
"""Request headers aiohttp writes itself."""


def bypass_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (comma-separated: ``*``, host names with or without a leading
    dot, which also match their subdomains, ``host:port``, IP addresses and CIDRs) names
    ``host``."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            with contextlib.suppress(ValueError):
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
        name, _, entry_port = entry.partition(":")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` on aiohttp; one connection pool of ``limit``."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limit: int = 256,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        """``proxies``: scheme -> proxy URL plus ``no`` (hosts to reach directly), as
        :func:`urllib.request.getproxies` returns them; default: from the environment."""
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._proxies = dict(urllib.request.getproxies() if proxies is None else proxies)
        self._proxy_of: dict[tuple[str, str, int | None], yarl.URL | None] = {}

    def proxy_for(self, url: yarl.URL) -> yarl.URL | None:
        """The proxy requests to ``url`` go through (None: direct); decided once per server."""
        key = (url.scheme, url.host or "", url.port)
        if key not in self._proxy_of:
            proxy = self._proxies.get(url.scheme)
            if proxy and bypass_proxy(url.host or "", url.port, self._proxies.get("no", "")):
                proxy = None
            self._proxy_of[key] = yarl.URL(proxy) if proxy else None
        return self._proxy_of[key]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
                trust_env=False,  # the environment's proxies: see proxy_for()
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limits = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=limits.get("pool"),
            sock_connect=limits.get("connect"),
            sock_read=limits.get("read"),
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        body = await request.aread()
        url = yarl.URL(str(request.url), encoded=True)
        try:
            resp = await self._client().request(
                request.method,
                url,
                proxy=self.proxy_for(url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError from 3.11
            raise httpx.TimeoutException(f"no answer in time: {exc!r}", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.NetworkError(str(exc) or repr(exc), request=request) from exc
        version = resp.version or aiohttp.HttpVersion11
        return httpx.Response(
            resp.status,
            headers=[(bytes(k), bytes(v)) for k, v in resp.raw_headers],
            stream=_Body(resp, request),
            request=request,
            extensions={
                "http_version": f"HTTP/{version.major}.{version.minor}".encode(),
                "reason_phrase": (resp.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp reads it; closing it early drops the connection."""

    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._resp = resp
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"read timed out: {exc!r}", request=self._request) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise httpx.ReadError(str(exc) or repr(exc), request=self._request) from exc

    async def aclose(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()  # the connection goes back to the pool
        else:
            self._resp.close()  # a watch given up, or a body not read: no reuse
