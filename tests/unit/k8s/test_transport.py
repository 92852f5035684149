"""The client's real network (:class:`AiohttpTransport`) where the loopback runs of the
client suite do not reach: TLS with a private CA and client certificates (what a real
kubeconfig uses), compressed answers, refused connections and servers that never answer.
The verbs, watches and errors themselves run over it in every ``[loopback]`` test."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from kuryr_k8s.k8s import PODS, ApiUnreachable, KubeClient, KubeSettings
from kuryr_k8s.k8s.transport import AiohttpTransport, bypass_proxy
from unit.k8s.fakeapi import FakeApi
from unit.k8s.loopback import serve

pytestmark = pytest.mark.unit


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    exts = (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth"))
    for name, ext in exts:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
                 "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    return d


def _server_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # like kube-apiserver with --client-ca-file
    return ctx


async def test_mutual_tls_with_a_private_ca_and_a_client_certificate(pki: Path) -> None:
    api = FakeApi()
    async with serve(api, ssl_context=_server_context(pki)) as url:
        settings = KubeSettings(
            server=url,
            ca_data=(pki / "ca.pem").read_bytes(),
            client_cert_data=(pki / "client.pem").read_bytes(),
            client_key_data=(pki / "client.key").read_bytes(),
        )
        async with KubeClient.from_settings(settings) as client:
            created = await client.create(PODS, {"metadata": {"name": "a"}, "spec": {}})
            got = await client.get(PODS, "a")
        assert got["metadata"]["uid"] == created["metadata"]["uid"]

        no_cert = KubeSettings(server=url, ca_data=(pki / "ca.pem").read_bytes())
        async with KubeClient.from_settings(no_cert) as client:
            with pytest.raises(ApiUnreachable, match="GET /api/v1/namespaces/default/pods/a"):
                await client.get(PODS, "a")

        wrong_ca = KubeSettings(
            server=url,
            ca_data=(pki / "client.pem").read_bytes(),  # not the CA that signed the server
            client_cert_data=(pki / "client.pem").read_bytes(),
            client_key_data=(pki / "client.key").read_bytes(),
        )
        async with KubeClient.from_settings(wrong_ca) as client:
            with pytest.raises(ApiUnreachable, match="certificate"):
                await client.get(PODS, "a")


@contextlib.asynccontextmanager
async def _raw_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_gzip_answer_is_decoded_once() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        body = gzip.compress(json.dumps({"kind": "Pod", "metadata": {"name": "z"}}).encode())
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async with (
        _raw_server(handler) as url,
        KubeClient.from_settings(KubeSettings(server=url)) as client,
    ):
        got = await client.get(PODS, "z")
    assert got["metadata"]["name"] == "z"
    assert "gzip" in seen[0]


async def test_a_refused_connection_is_unreachable_and_names_the_request() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with KubeClient.from_settings(KubeSettings(server=f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(ApiUnreachable, match="GET /api/v1/namespaces/default/pods/x"):
            await client.get(PODS, "x")


async def test_a_server_that_never_answers_times_out_as_unreachable() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async with _raw_server(handler) as url:
        settings = KubeSettings(server=url)
        async with KubeClient.from_settings(settings, timeout=0.3) as client:
            with pytest.raises(ApiUnreachable, match="GET /api/v1/namespaces/default/pods/x"):
                await asyncio.wait_for(client.get(PODS, "x"), 10)


async def test_a_watch_cut_by_the_server_is_unreachable_not_a_silent_end() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Length": "1000"})
        await out.prepare(request)
        event = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}
        await out.write((json.dumps(event) + "\n").encode())
        assert request.transport is not None
        request.transport.close()  # 1000 bytes promised, fewer sent
        return out

    got = []
    async with (
        _raw_server(handler) as url,
        KubeClient.from_settings(KubeSettings(server=url)) as client,
    ):
        with pytest.raises(ApiUnreachable, match="watch pods"):
            async for event in client.watch(PODS, "default"):
                got.append(event)
    assert [e.type for e in got] == ["ADDED"]


async def test_requests_go_through_the_environment_proxy_unless_no_proxy_names_the_server() -> None:
    """``kube.invalid`` does not resolve: only the proxy can answer for it."""
    seen: list[tuple[str, str]] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append((request.host.split(":")[0], request.path))
        return web.json_response({"kind": "Pod", "metadata": {"name": "p"}})

    async with _raw_server(proxy) as proxy_url:
        settings = KubeSettings(server="http://kube.invalid:6443")
        through = AiohttpTransport(proxies={"http": proxy_url, "no": "localhost,.svc"})
        async with KubeClient.from_settings(settings, transport=through) as client:
            got = await client.get(PODS, "p")
        assert got["metadata"]["name"] == "p"
        assert seen == [("kube.invalid", "/api/v1/namespaces/default/pods/p")]

        direct = AiohttpTransport(proxies={"http": proxy_url, "no": "127.0.0.1,kube.invalid"})
        async with KubeClient.from_settings(settings, transport=direct, timeout=5) as client:
            with pytest.raises(ApiUnreachable, match="GET /api/v1/namespaces/default/pods/p"):
                await client.get(PODS, "p")
        assert len(seen) == 1


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("api.example.com", 443, "", False),
        ("api.example.com", 443, "*", True),
        ("api.example.com", 443, "example.com", True),
        ("api.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("api.example.com", 443, "api.example.com:6443", False),
        ("api.example.com", 6443, " api.example.com:6443 ,other", True),
        ("10.0.0.5", 6443, "10.0.0.0/8", True),
        ("10.0.0.5", 6443, "192.168.0.0/16,10.0.0.5", True),
        ("10.0.0.5", 6443, "10.0.0.5:6443", True),
        ("10.1.0.5", 6443, "10.0.0.0/16", False),
        ("[fd00::1]", 6443, "fd00::/64", True),
        ("API.Example.COM", 443, "api.example.com", True),
    ],
)
def test_no_proxy_entries(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert bypass_proxy(host, port, no_proxy) is bypass
