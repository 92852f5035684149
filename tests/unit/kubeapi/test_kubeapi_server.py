"""The emulator in-process and as a subprocess: persistence, restart, scale."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kuryr_k8s.sandbox.kubeapi import EmulatorProcess, KubeApiServer
from kuryr_k8s.sandbox.kubeapi.server import next_flush_delay

Obj = dict[str, Any]
CRD: Obj = {
    "metadata": {"name": "things.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Thing", "plural": "things"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def _cm(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


async def test_persistence_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    async with KubeApiServer(persist_path=state) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        assert (
            await c.post("/api/v1/namespaces", json={"metadata": {"name": "keep"}})
        ).status_code == 201
        cm = (await c.post("/api/v1/namespaces/keep/configmaps", json=_cm("c1"))).json()
        assert (
            await c.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD)
        ).status_code == 201
        assert (
            await c.post(
                "/apis/example.com/v1/namespaces/keep/things",
                json={"metadata": {"name": "t1"}, "x": 1},
            )
        ).status_code == 201
        old_rv = int(cm["metadata"]["resourceVersion"])
    snapshot = json.loads(state.read_text())
    assert any(o["object"]["metadata"]["name"] == "t1" for o in snapshot["objects"])

    async with KubeApiServer(persist_path=state) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        got = (await c.get("/api/v1/namespaces/keep/configmaps/c1")).json()
        assert got["metadata"]["uid"] == cm["metadata"]["uid"]
        thing = (await c.get("/apis/example.com/v1/namespaces/keep/things/t1")).json()
        assert thing["x"] == 1
        new = (await c.post("/api/v1/namespaces/keep/configmaps", json=_cm("c2"))).json()
        assert int(new["metadata"]["resourceVersion"]) > old_rv
        lines = (
            await c.get(
                "/api/v1/namespaces/keep/configmaps",
                params={"watch": "1", "resourceVersion": str(old_rv)},
            )
        ).text
        assert json.loads(lines.splitlines()[0])["object"]["code"] == 410
        names = [n["metadata"]["name"] for n in (await c.get("/api/v1/namespaces")).json()["items"]]
        assert names.count("default") == 1


async def test_kubeconfig_and_stop_ends_watches(tmp_path: Path) -> None:
    srv = KubeApiServer()
    await srv.start()
    path = srv.write_kubeconfig(tmp_path / "kc")
    assert yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"] == srv.url
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as c:

        async def watch() -> list[str]:
            async with c.stream("GET", "/api/v1/pods", params={"watch": "1"}) as resp:
                return [line async for line in resp.aiter_lines()]

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        await srv.stop()
        assert await asyncio.wait_for(task, 5) == []  # the stream ends, it does not hang


def test_subprocess_restart_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with EmulatorProcess(tmp_path / "kc", state_file=state) as proc:
        resp = httpx.post(f"{proc.url}/api/v1/namespaces/default/configmaps", json=_cm("sticky"))
        assert resp.status_code == 201
        uid = resp.json()["metadata"]["uid"]
    with EmulatorProcess(tmp_path / "kc", state_file=state) as proc:
        got = httpx.get(f"{proc.url}/api/v1/namespaces/default/configmaps/sticky").json()
        assert got["metadata"]["uid"] == uid


async def test_thousand_pods_with_watchers() -> None:
    count, watchers = 1000, 6
    async with KubeApiServer() as srv, httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
        path = "/api/v1/namespaces/default/pods"
        start_rv = (await c.get(path)).json()["metadata"]["resourceVersion"]

        async def watch(params: dict[str, str]) -> int:
            seen = 0
            query = {"watch": "1", "resourceVersion": start_rv, "timeoutSeconds": "30", **params}
            async with c.stream("GET", path, params=query) as resp:
                async for line in resp.aiter_lines():
                    if line and json.loads(line)["type"] == "ADDED":
                        seen += 1
                        if seen == expected(params):
                            return seen
            return seen

        def expected(params: dict[str, str]) -> int:
            return count if not params else count // 2

        selections = [
            {},
            {},
            {"labelSelector": "half=a"},
            {"labelSelector": "half=b"},
            {"fieldSelector": "spec.nodeName=n0"},
            {"fieldSelector": "spec.nodeName=n1"},
        ]
        tasks = [asyncio.create_task(watch(sel)) for sel in selections[:watchers]]
        began = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            body = {
                "metadata": {"name": f"p{i}", "labels": {"half": "ab"[i % 2]}},
                "spec": {
                    "nodeName": f"n{i % 2}",
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            }
            async with sem:
                assert (await c.post(path, json=body)).status_code == 201

        await asyncio.gather(*(create(i) for i in range(count)))
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed = time.monotonic() - began
        assert results == [expected(sel) for sel in selections[:watchers]]
        listed = (await c.get(path, params={"fieldSelector": "spec.nodeName=n1"})).json()
        assert len(listed["items"]) == count // 2
        assert elapsed < 30, f"1000 creates with {watchers} watchers took {elapsed:.1f}s"


async def test_deleting_a_crd_ends_its_watches() -> None:
    async with KubeApiServer() as srv, httpx.AsyncClient(base_url=srv.url, timeout=10) as c:
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        assert (await c.post(crds, json=CRD)).status_code == 201

        async def watch() -> list[str]:
            path = "/apis/example.com/v1/things"
            async with c.stream("GET", path, params={"watch": "1"}) as resp:
                return [line async for line in resp.aiter_lines()]

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        assert (await c.delete(f"{crds}/things.example.com")).status_code == 200
        assert await asyncio.wait_for(task, 5) == []


def test_a_costly_store_write_is_repeated_less_often() -> None:
    """Persisting is at most ~1/10 of a core: a cheap write keeps the interval, a write
    of 80 ms (a big store during a burst) waits 0.8 s before the next."""
    assert next_flush_delay(0.2, 0.001) == 0.2
    assert next_flush_delay(0.2, 0.08) == pytest.approx(0.8)
