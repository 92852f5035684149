"""The Neutron adapter: error translation, bulk create, tags, revisions, counters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keystoneauth1.exceptions as ksa
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kuryr_k8s.model.errors import PermanentError, TemporaryError
from kuryr_k8s.openstack.fake import FakeNeutron
from kuryr_k8s.openstack.metrics import NeutronCollector
from kuryr_k8s.openstack.neutron import (
    IpExhausted,
    Neutron,
    NeutronNotFound,
    NeutronRejected,
    NeutronUnavailable,
    PortSpec,
    QuotaExceeded,
    RevisionConflict,
    SdkTransport,
    translate,
)
from unit.openstack.world import PROJECT, World, make_world


def _spec(world: World, *tags: str, host: str = "node-a") -> PortSpec:
    return PortSpec(world.network, world.subnet, PROJECT, (world.sg,), host, tags)


def _neutron_error(kind: str, message: str) -> dict[str, Any]:
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (409, "OverQuota", QuotaExceeded),
        (409, "IpAddressGenerationFailure", IpExhausted),
        (404, "SubnetNotFound", NeutronNotFound),
        (404, "NetworkNotFound", NeutronNotFound),
        (404, "SecurityGroupNotFound", NeutronNotFound),
        (412, "RevisionNumberConstraintFailed", RevisionConflict),
        (409, "IpAddressAlreadyAllocated", NeutronUnavailable),
        (500, "HTTPInternalServerError", NeutronUnavailable),
        (503, "", NeutronUnavailable),
        (504, "", NeutronUnavailable),
        (400, "HTTPBadRequest", NeutronRejected),
        (403, "PolicyNotAuthorized", NeutronRejected),
    ],
)
def test_translate_by_type_then_status(status: int, kind: str, expected: type) -> None:
    err = translate("create_ports", status, _neutron_error(kind, "the reason"))
    assert type(err) is expected
    assert "the reason" in str(err)
    assert "create_ports" in str(err)


def test_translate_retry_semantics() -> None:
    assert isinstance(translate("x", 503, None), TemporaryError)
    assert isinstance(translate("x", 409, _neutron_error("OverQuota", "q")), PermanentError)
    assert isinstance(translate("x", 404, "plain text body"), PermanentError)
    assert "plain text body" in str(translate("x", 404, "plain text body"))


async def test_bulk_create_gives_distinct_tagged_bound_ports() -> None:
    world = make_world()
    ports = await world.neutron.create_ports([_spec(world, "a", "b")] * 3)
    assert len({p.id for p in ports}) == 3
    assert len({p.fixed_ips[0].ip_address for p in ports}) == 3
    for port in ports:
        assert set(port.tags) == {"a", "b"}
        assert port.binding_host_id == "node-a"
        assert port.security_groups == (world.sg,)
        assert port.project_id == PROJECT
        assert port.device_owner == "compute:kuryr"
    assert world.fake.requests.count(("POST", "/ports")) == 1
    assert world.neutron.stats.calls["create_ports"] == 1
    assert world.neutron.stats.ports_created == 3


async def test_bulk_create_is_all_or_nothing_and_reports_ip_exhaustion() -> None:
    world = make_world(cidr="10.0.0.0/29")  # 5 usable after the gateway
    with pytest.raises(IpExhausted, match="No more IP addresses"):
        await world.neutron.create_ports([_spec(world)] * 6)
    assert world.fake.ports == {}
    assert world.neutron.stats.errors[("create_ports", "IpExhausted")] == 1


async def test_quota_exceeded_is_permanent_with_neutrons_reason() -> None:
    world = make_world(port_quota=2)
    with pytest.raises(QuotaExceeded, match=r"Quota exceeded for resources: \['port'\]"):
        await world.neutron.create_ports([_spec(world)] * 3)


async def test_tags_are_set_afterwards_when_the_cloud_drops_them_in_bulk() -> None:
    world = make_world()

    def dropping_tags(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, data = world.fake(method, path, **kw)
        if method == "POST" and status == 201:
            for port in data["ports"]:
                world.fake.ports[port["id"]]["tags"] = []
                port["tags"] = []
        return status, data

    neutron = Neutron(dropping_tags, inline=True)
    ports = await neutron.create_ports([_spec(world, "a")] * 2)
    assert [p.tags for p in ports] == [("a",), ("a",)]
    assert all(p["tags"] == ["a"] for p in world.fake.ports.values())


async def test_update_with_stale_revision_conflicts() -> None:
    world = make_world()
    (port,) = await world.neutron.create_ports([_spec(world)])
    world.fake.touch(port.id)  # Neutron changed it (binding, status)
    with pytest.raises(RevisionConflict):
        await world.neutron.update_port(port.id, if_revision=port.revision_number, name="x")
    fresh = await world.neutron.get_port(port.id)
    assert fresh is not None and fresh.name == ""
    updated = await world.neutron.update_port(
        port.id, if_revision=fresh.revision_number, name="x", device_id="uid"
    )
    assert (updated.name, updated.device_id, updated.owner_uid) == ("x", "uid", "uid")


async def test_set_tags_replaces_all_and_list_filters_by_all_tags() -> None:
    world = make_world()
    a, _ = await world.neutron.create_ports([_spec(world, "t1")] * 2)
    port = await world.neutron.set_tags(a, ["t1", "t2"])
    assert port.tags == ("t1", "t2")
    assert port.revision_number == world.fake.ports[a.id]["revision_number"]
    assert [p.id for p in await world.neutron.list_ports(tags=["t1", "t2"])] == [a.id]
    assert len(await world.neutron.list_ports(tags=["t1"])) == 2


async def test_delete_is_idempotent_and_missing_things_are_none() -> None:
    world = make_world()
    (port,) = await world.neutron.create_ports([_spec(world)])
    assert await world.neutron.delete_port(port.id) is True
    assert await world.neutron.delete_port(port.id) is False
    assert await world.neutron.get_port(port.id) is None
    assert await world.neutron.get_subnet("nope") is None
    assert await world.neutron.get_network("nope") is None
    assert await world.neutron.get_security_group("nope") is None
    assert world.neutron.stats.ports_deleted == 1
    with pytest.raises(NeutronNotFound):
        await world.neutron.update_port(port.id, name="x")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError("refused"), NeutronUnavailable),
        (ksa.ConnectTimeout("slow"), NeutronUnavailable),
        (ksa.ConnectFailure("down"), NeutronUnavailable),
        (ksa.EndpointNotFound("no network endpoint"), NeutronRejected),
        (RuntimeError("surprise"), NeutronUnavailable),
    ],
)
async def test_transport_failures_enter_the_error_tree(exc: Exception, expected: type) -> None:
    def broken(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        raise exc

    neutron = Neutron(broken, inline=True)
    with pytest.raises(expected):
        await neutron.get_port("x")
    assert neutron.stats.errors[("get_port", expected.__name__)] == 1


async def test_thread_pool_mode_runs_calls_off_the_loop() -> None:
    world = make_world()
    neutron = Neutron(world.fake, max_concurrency=2)
    try:
        ports = await neutron.create_ports([_spec(world)] * 2)
        assert {p.id for p in await neutron.list_ports()} == {p.id for p in ports}
    finally:
        neutron.close()


class _Response:
    def __init__(self, status: int, data: Any) -> None:
        self.status_code = status
        self._data = data
        self.content = b"" if data is None else b"x"
        self.text = str(data)

    def json(self) -> Any:
        if isinstance(self._data, str):
            raise ValueError("not json")
        return self._data


class _Proxy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any, Mapping[str, str], Mapping[str, str]]] = []

    def request(self, path: str, method: str, *, json: Any, params: Any, headers: Any) -> _Response:
        self.seen.append((method, path, json, params, headers))
        if method == "DELETE":
            return _Response(204, None)
        if path == "/text":
            return _Response(500, "Internal Server Error")
        return _Response(200, {"ports": []})


class _Conn:
    def __init__(self) -> None:
        self.network = _Proxy()


def test_sdk_transport_speaks_json_through_the_network_proxy() -> None:
    conn = _Conn()
    transport = SdkTransport(conn)
    assert transport("GET", "/ports", params={"tags": "a"}) == (200, {"ports": []})
    assert transport("DELETE", "/ports/1") == (204, None)
    assert transport("GET", "/text") == (500, "Internal Server Error")
    assert conn.network.seen[0] == ("GET", "/ports", None, {"tags": "a"}, {})


async def test_counters_are_exported_for_prometheus() -> None:
    world = make_world()
    world.fake.fail_next("GET", "/ports", 503)
    with pytest.raises(NeutronUnavailable):
        await world.neutron.list_ports()
    await world.neutron.create_ports([_spec(world)])
    registry = CollectorRegistry()
    registry.register(NeutronCollector(world.neutron.stats))
    text = generate_latest(registry).decode()
    assert 'kuryr_neutron_calls_total{op="list_ports"} 1.0' in text
    assert 'kuryr_neutron_errors_total{error="NeutronUnavailable",op="list_ports"} 1.0' in text
    assert 'kuryr_neutron_ports_total{event="created"} 1.0' in text


async def test_project_known_by_its_resources() -> None:
    world = make_world()
    assert await world.neutron.project_has_resources(PROJECT)
    assert not await world.neutron.project_has_resources("0" * 32)


def test_fake_refuses_what_it_does_not_know() -> None:
    fake = FakeNeutron()
    assert fake("GET", "/routers")[0] == 400


async def test_free_ips_from_network_ip_availability_or_none_when_forbidden() -> None:
    world = make_world(cidr="10.0.0.0/29")
    await world.neutron.create_ports([_spec(world)] * 2)
    assert await world.neutron.free_ips(world.network, world.subnet) == 3
    world.fake.fail_next("GET", "/network-ip-availabilities", 403, "PolicyNotAuthorized")
    assert await world.neutron.free_ips(world.network, world.subnet) is None
    assert await world.neutron.free_ips("no-such-network", world.subnet) is None


async def test_delete_with_a_stale_revision_conflicts() -> None:
    world = make_world()
    (port,) = await world.neutron.create_ports([_spec(world)])
    world.fake.touch(port.id)
    with pytest.raises(RevisionConflict):
        await world.neutron.delete_port(port.id, if_revision=port.revision_number)
    assert await world.neutron.delete_port(port.id, if_revision=port.revision_number + 1)
