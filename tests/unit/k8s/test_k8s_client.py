"""KubeClient against the in-memory API: verbs, paging, watch, and error translation."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kuryr_k8s.k8s import (
    LEASES,
    NODES,
    PODS,
    AlreadyExists,
    ApiUnreachable,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    KubeSettings,
    NotFound,
    PatchType,
    ServerError,
    WatchEvent,
)
from kuryr_k8s.k8s import objects as o
from kuryr_k8s.k8s.client import MAX_THROTTLE_DELAY, THROTTLE_RETRIES
from kuryr_k8s.k8s.errors import BadRequest, Unauthorized
from kuryr_k8s.model.errors import PermanentError, TemporaryError
from unit.k8s.fakeapi import FakeApi, FakeClock

pytestmark = pytest.mark.unit


def pod(name: str, ns: str = "default", **labels: str) -> o.Obj:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {}}


async def test_create_get_replace_roundtrip(client: KubeClient) -> None:
    created = await client.create(PODS, pod("a"))
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1"
    got = await client.get(PODS, "a", "default")
    assert o.uid(got) == o.uid(created)
    got["spec"]["nodeName"] = "n1"
    replaced = await client.replace(PODS, got)
    assert replaced["spec"]["nodeName"] == "n1"
    assert int(o.resource_version(replaced)) > int(o.resource_version(created))


async def test_replace_with_stale_version_is_a_temporary_conflict(client: KubeClient) -> None:
    stale = await client.create(PODS, pod("a"))
    await client.patch(PODS, "a", {"metadata": {"labels": {"x": "1"}}}, "default")
    with pytest.raises(Conflict) as err:
        await client.replace(PODS, stale)
    assert isinstance(err.value, TemporaryError) and err.value.delay == 0


async def test_create_existing_name_is_already_exists_not_conflict(client: KubeClient) -> None:
    await client.create(PODS, pod("a"))
    with pytest.raises(AlreadyExists) as err:
        await client.create(PODS, pod("a"))
    assert not isinstance(err.value, Conflict)
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"


async def test_patch_flavours(client: KubeClient) -> None:
    await client.create(PODS, pod("a", app="web"))
    await client.patch(PODS, "a", {"metadata": {"labels": {"tier": "db", "app": None}}}, "default")
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}]
    await client.patch(PODS, "a", ops, "default", patch_type=PatchType.JSON)
    final = await client.get(PODS, "a", "default")
    assert final["metadata"]["labels"] == {"tier": "db"}
    assert final["metadata"]["annotations"] == {"k": "v"}


async def test_status_subresource_changes_only_status(client: KubeClient) -> None:
    await client.create(PODS, pod("a"))
    await client.patch(PODS, "a", {"status": {"phase": "Running"}}, "default", subresource="status")
    current = await client.get(PODS, "a", "default")
    current["status"]["podIP"] = "10.0.0.5"
    await client.replace(PODS, current, subresource="status")
    got = await client.get(PODS, "a", "default", subresource="status")
    assert got["status"] == {"phase": "Running", "podIP": "10.0.0.5"}


async def test_delete_preconditions_and_finalizers(client: KubeClient) -> None:
    created = await client.create(LEASES, {"metadata": {"name": "l", "finalizers": ["x"]}})
    with pytest.raises(Conflict):
        await client.delete(LEASES, "l", precondition_uid="someone-else")
    held = await client.delete(
        LEASES, "l", propagation_policy="Foreground", precondition_uid=o.uid(created)
    )
    assert o.is_deleting(held)
    await client.patch(LEASES, "l", {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        await client.get(LEASES, "l")


async def test_delete_sends_delete_options(api: FakeApi, client: KubeClient) -> None:
    await client.create(PODS, pod("a"))
    await client.delete(PODS, "a", "default", grace_period_seconds=0, propagation_policy="Orphan")
    body = httpx.Response(200, content=api.requests[-1].content).json()
    assert body["gracePeriodSeconds"] == 0 and body["propagationPolicy"] == "Orphan"


async def test_list_all_follows_continue_tokens(api: FakeApi, client: KubeClient) -> None:
    for i in range(7):
        await client.create(PODS, pod(f"p{i}", "ns1" if i % 2 else "ns2", app="x"))
    await client.create(NODES, {"metadata": {"name": "n"}})
    api.requests.clear()
    result = await client.list_all(PODS, page_size=3)
    assert sorted(o.name(p) for p in result.items) == [f"p{i}" for i in range(7)]
    assert [r.url.params.get("continue") for r in api.requests] == [None, "3", "6"]
    assert result.resource_version == str(api.rv)
    in_ns1 = await client.list_all(PODS, "ns1", label_selector="app=x")
    assert {o.name(p) for p in in_ns1.items} == {"p1", "p3", "p5"}


async def test_list_page_exposes_continue_token(client: KubeClient) -> None:
    for i in range(3):
        await client.create(PODS, pod(f"p{i}"))
    page = await client.list(PODS, "default", limit=2)
    assert len(page.items) == 2 and page.continue_token
    rest = await client.list(PODS, "default", limit=2, continue_token=page.continue_token)
    assert len(rest.items) == 1 and rest.continue_token is None


async def test_watch_resumes_from_resource_version(api: FakeApi, client: KubeClient) -> None:
    await client.create(PODS, pod("before"))
    listed = await client.list_all(PODS)
    await client.create(PODS, pod("after"))
    await client.delete(PODS, "before", "default")
    events: list[WatchEvent] = []
    async for ev in client.watch(PODS, resource_version=listed.resource_version):
        events.append(ev)
        if len(events) == 2:
            break
    assert [(e.type, o.name(e.object)) for e in events] == [
        ("ADDED", "after"),
        ("DELETED", "before"),
    ]
    params = api.requests[-1].url.params
    assert params["allowWatchBookmarks"] == "true" and params["watch"] == "true"


async def test_watch_of_compacted_version_raises_gone(api: FakeApi, client: KubeClient) -> None:
    await client.create(PODS, pod("a"))
    old = str(api.rv - 1)
    api.compact()
    with pytest.raises(Gone):
        async for _ in client.watch(PODS, resource_version=old):
            pass


@pytest.mark.parametrize(
    ("status", "reason", "expected", "kind"),
    [
        (400, "BadRequest", BadRequest, PermanentError),
        (401, "Unauthorized", Unauthorized, PermanentError),
        (403, "Forbidden", Forbidden, PermanentError),
        (404, "NotFound", NotFound, None),
        (410, "Gone", Gone, None),
        (422, "Invalid", Invalid, PermanentError),
        (500, "InternalError", ServerError, TemporaryError),
        (503, "ServiceUnavailable", ServerError, TemporaryError),
    ],
)
async def test_error_mapping(
    api: FakeApi,
    client: KubeClient,
    status: int,
    reason: str,
    expected: type[Exception],
    kind: type[Exception] | None,
) -> None:
    api.fail_next(status, reason)
    with pytest.raises(expected) as err:
        await client.get(PODS, "a", "default")
    if kind is not None:
        assert isinstance(err.value, kind)
    else:
        assert not isinstance(err.value, TemporaryError | PermanentError)


async def test_429_is_sent_again_after_retry_after(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    # A real v1.36 answers 429 "storage is (re)initializing" right after a CRD is created
    # (issue 11): the request was not acted on, so the client waits as told and resends.
    await client.create(PODS, pod("a"))
    api.fail_next(429, "TooManyRequests", headers={"Retry-After": "1"})
    assert o.name(await client.get(PODS, "a", "default")) == "a"
    api.fail_next(429, "TooManyRequests", method="POST", times=2)  # no Retry-After: 1 s
    await client.create(PODS, pod("b"))
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert {o.name(p) for p in (await client.list_all(PODS)).items} == {"a", "b"}


async def test_429_that_persists_is_temporary_with_the_delay_hint(
    api: FakeApi, client: KubeClient, clock: FakeClock
) -> None:
    api.fail_next(429, "TooManyRequests", times=THROTTLE_RETRIES + 1, headers={"Retry-After": "7"})
    with pytest.raises(ServerError) as err:
        await client.list_all(PODS)
    assert isinstance(err.value, TemporaryError)
    assert err.value.status == 429 and err.value.delay == 7.0
    assert clock.sleeps == [7.0] * THROTTLE_RETRIES
    api.fail_next(429, "TooManyRequests", headers={"Retry-After": "3600"})
    await client.list_all(PODS)
    assert clock.sleeps[-1] == MAX_THROTTLE_DELAY, "a huge Retry-After is capped"


async def test_non_json_error_body_still_maps() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    c = KubeClient.from_settings(
        KubeSettings(server="https://x.invalid"), transport=httpx.MockTransport(handler)
    )
    async with c:
        with pytest.raises(ServerError) as err:
            await c.get(NODES, "n")
    assert err.value.status == 502 and "bad gateway" in err.value.message


async def test_connection_errors_are_temporary() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    c = KubeClient.from_settings(
        KubeSettings(server="https://x.invalid"), transport=httpx.MockTransport(handler)
    )
    async with c:
        with pytest.raises(ApiUnreachable):
            await c.get(NODES, "n")
        with pytest.raises(ApiUnreachable):
            async for _ in c.watch(NODES):
                pass


async def test_bearer_token_file_is_read_per_request(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"metadata": {"name": "n"}})

    settings = KubeSettings(server="https://x.invalid", token="inline", token_file=token_file)
    async with KubeClient.from_settings(settings, transport=httpx.MockTransport(handler)) as c:
        await c.get(NODES, "n")
        token_file.write_text("rotated")
        await c.get(NODES, "n")
    assert seen == ["Bearer first", "Bearer rotated"]


async def test_binding_subresource(client: KubeClient) -> None:
    await client.create(PODS, pod("a"))
    binding = {"metadata": {"name": "a"}, "target": {"kind": "Node", "name": "n1"}}
    await client.post_subresource(PODS, "a", "binding", binding, "default")
    assert (await client.get(PODS, "a", "default"))["spec"]["nodeName"] == "n1"
