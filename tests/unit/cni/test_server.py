"""The daemon's HTTP front over a real unix socket, driven by the real plugin code."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kuryr_k8s.cni import spec, wire
from kuryr_k8s.cni.binding import Drivers
from kuryr_k8s.cni.daemon.server import DaemonServer, Metrics
from kuryr_k8s.cni.daemon.service import CniService, ServiceSettings
from kuryr_k8s.cni.plugin import Dispatcher
from kuryr_k8s.model.errors import ConfigError
from unit.cni.fakes import FakeDriver, FakeVifs, make_vif

pytestmark = pytest.mark.unit


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.socket = tmp / "run" / "cni.sock"
        self.vifs = FakeVifs()
        self.driver = FakeDriver()
        settings = ServiceSettings(vif_timeout=0.3, ready_timeout=0.3, poll_interval=0.01)
        self.service = CniService(self.vifs, Drivers([self.driver]), settings)
        self.problem: str | None = None
        self.server = DaemonServer(self.service, Metrics(), lambda: self.problem)

    async def plugin(self, env: dict[str, str], conf: dict[str, Any]) -> tuple[int, Any]:
        conf = {"cniVersion": "1.0.0", "name": "kuryr", "daemonSocket": str(self.socket), **conf}
        out = io.StringIO()
        dispatcher = Dispatcher(env, io.StringIO(json.dumps(conf)), out, io.StringIO())
        rc = await asyncio.to_thread(dispatcher.run)
        return rc, json.loads(out.getvalue()) if out.getvalue() else None

    def http(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url="http://kuryr")


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path)
    await d.server.start(d.socket, None)
    yield d
    await d.server.stop()


def env(command: str, netns: str, container: str = "c1") -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-a",
    }


async def test_socket_is_root_only(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700


async def test_a_second_daemon_does_not_steal_the_socket(daemon: Daemon, tmp_path: Path) -> None:
    other = Daemon(tmp_path)
    with pytest.raises(ConfigError, match="another kuryr daemon"):
        await other.server.start(daemon.socket, None)
    await other.server.stop()
    async with daemon.http() as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.socket.parent.mkdir(mode=0o755)
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening: a dead daemon's
        dead.bind(str(d.socket))
    await d.server.start(d.socket, None)
    try:
        assert stat.S_IMODE(d.socket.stat().st_mode) == 0o600
        assert stat.S_IMODE(d.socket.parent.stat().st_mode) == 0o755, "not ours to change"
    finally:
        await d.server.stop()


async def test_add_check_del_through_the_socket(daemon: Daemon, tmp_path: Path) -> None:
    netns = tmp_path / "ns1"
    netns.write_text("")
    daemon.vifs.put("ns/pod-a", make_vif())
    rc, result = await daemon.plugin(env("ADD", str(netns)), {})
    assert rc == 0 and result["ips"][0]["address"] == "10.20.0.5/24"
    rc, out = await daemon.plugin(env("CHECK", str(netns)), {"prevResult": result})
    assert (rc, out) == (0, None)
    for _ in range(2):
        rc, out = await daemon.plugin(env("DEL", ""), {})
        assert (rc, out) == (0, None)
    assert daemon.driver.host == {}


async def test_errors_and_metrics(daemon: Daemon, tmp_path: Path) -> None:
    netns = tmp_path / "ns1"
    netns.write_text("")
    rc, err = await daemon.plugin(env("ADD", str(netns)), {})
    assert rc == 1 and err["code"] == spec.TRY_AGAIN_LATER and "pod-a" in err["details"]
    async with daemon.http() as http:
        text = (await http.get("/metrics")).text
    assert 'kuryr_cni_failures_total{code="11",command="ADD",reason="VifTimeout"} 1.0' in text
    assert 'kuryr_cni_request_duration_seconds_bucket{command="ADD",le="0.5",outcome="error"}' in (
        text
    )


async def test_health_and_readiness(daemon: Daemon) -> None:
    async with daemon.http() as http:
        assert (await http.get("/healthz")).status_code == 200
        daemon.problem = "KuryrPort cache not synced"
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and "not synced" in ready.text
        daemon.problem = None
        assert (await http.get("/readyz")).status_code == 200


async def test_unknown_api_version_is_incompatible(daemon: Daemon) -> None:
    async with daemon.http() as http:
        resp = await http.post("/v2/cni", json={})
    assert resp.status_code == 404
    with pytest.raises(spec.CniError) as info:
        wire.parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n")
    assert info.value.code == spec.INCOMPATIBLE_VERSION


async def test_daemon_not_running_is_try_again_later(tmp_path: Path) -> None:
    with pytest.raises(spec.CniError) as info:
        await asyncio.to_thread(wire.call, str(tmp_path / "none.sock"), {}, 1.0)
    assert info.value.code == spec.TRY_AGAIN_LATER
    assert "not running" in info.value.msg


async def test_slow_daemon_is_try_again_later(tmp_path: Path) -> None:
    path = tmp_path / "slow.sock"
    with socket.socket(socket.AF_UNIX) as listener:  # listens, never accepts
        listener.bind(str(path))
        listener.listen(1)
        with pytest.raises(spec.CniError) as info:
            await asyncio.to_thread(wire.call, str(path), {}, 0.2)
    assert info.value.code == spec.TRY_AGAIN_LATER


async def test_the_request_histogram_counts_from_the_plugin_process_start(
    daemon: Daemon, tmp_path: Path
) -> None:
    """In a burst the runtime starts dozens of plugin processes at once; their start-up is
    part of the ADD as the runtime sees it, so the daemon counts from the start the plugin
    reports (``pluginStarted``), not from reading the request."""
    netns = tmp_path / "ns1"
    netns.write_text("")
    daemon.vifs.put("ns/pod-a", make_vif())
    conf = {"cniVersion": "1.0.0", "name": "kuryr", "daemonSocket": str(daemon.socket)}
    e = env("ADD", str(netns))
    args = spec.parse_cni_args(e["CNI_ARGS"])
    body = wire.request_body("ADD", "c1", str(netns), "eth0", args, "", conf)
    assert time.time() - 3600 < body["pluginStarted"] <= time.time()  # this process's start
    body["pluginStarted"] = time.time() - 2.0  # a plugin that took 2 s to get here
    async with daemon.http() as http:
        answer = await http.post(wire.API_PATH, json=body)
        assert answer.status_code == 200, answer.text
        body["pluginStarted"] = time.time() - 10_000  # a wrong clock: ignored
        body["containerId"] = "c2"
        assert (await http.post(wire.API_PATH, json=body)).status_code == 200
        text = (await http.get("/metrics")).text
    ok = 'kuryr_cni_request_duration_seconds_bucket{command="ADD",le="%s",outcome="ok"} %s'
    assert ok % ("1.0", "1.0") in text  # the wrong clock's request, counted from receipt
    assert ok % ("2.5", "2.0") in text  # the 2 s head start counted
