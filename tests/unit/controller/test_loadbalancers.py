"""The KuryrLoadBalancer reconciler against an in-memory Octavia (+ Neutron floating IPs)
behind the adapters' Transport seam. Each test drives passes and asserts on what the
fake cloud holds afterwards (never on calls)."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kuryr_k8s.controller.loadbalancers import KuryrLoadBalancerReconciler, LbSettings
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.model import kuryrloadbalancer as m
from kuryr_k8s.model.errors import PermanentError, TemporaryError
from kuryr_k8s.openstack.metrics import OctaviaCollector
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.octavia import LbPending, Octavia
from unit.controller.fakes import FakeEvents

SVC_UID = "svc-uid-1"


@dataclass
class FakeCloud:
    """Octavia v2 (LBs, listeners, pools, members; ``PENDING_*`` for ``pending_reads``
    GETs after a change) and Neutron floating IPs, as JSON over the Transport seam."""

    lbs: dict[str, dict[str, Any]] = field(default_factory=dict)
    listeners: dict[str, dict[str, Any]] = field(default_factory=dict)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fips: dict[str, dict[str, Any]] = field(default_factory=dict)
    port_groups: dict[str, list[str]] = field(default_factory=dict)
    """Neutron ports: fixed IP -> security group ids."""
    sg_rules: list[dict[str, Any]] = field(default_factory=list)
    groups_down: bool = False
    """Neutron's port and rule listings answer 503."""
    pending_reads: int = 1
    member_puts: int = 0
    down: bool = False
    stale_active_on_delete: bool = False
    """The OVN provider's status race seen on the sandbox: a late status report of an
    earlier change shows ``ACTIVE`` right after a DELETE was accepted, while the delete is
    still being done; a second DELETE accepted then crashes in the provider once the first
    has removed the LB, which comes back as ``ERROR`` (ovn-octavia-provider: "'NoneType'
    object has no attribute 'external_ids'")."""
    late_member_deletes: int = 0
    """The OVN provider's batch update as measured on the sandbox: the LB is ``ACTIVE``
    again while the removed members are still listed, ``ACTIVE`` too, for this many member
    listings; the provider's late report then deletes those rows by id, whatever became of
    them meanwhile."""
    stale_report_drops: set[str] = field(default_factory=set)
    """Addresses whose rows a stale provider report deletes right after the next member
    batch update (one listing later)."""
    _late_deletes: list[list[Any]] = field(default_factory=list)
    _deleting: dict[str, int] = field(default_factory=dict)
    _resurrect: dict[str, dict[str, Any]] = field(default_factory=dict)
    _pending: dict[str, int] = field(default_factory=dict)
    _seq: Any = field(default_factory=lambda: itertools.count(1))

    def _touch(self, lb_id: str, state: str = "PENDING_UPDATE") -> None:
        self.lbs[lb_id]["provisioning_status"] = state
        self._pending[lb_id] = self.pending_reads

    def _lb_of(self, body: Mapping[str, Any]) -> str:
        if "loadbalancer_id" in body:
            return str(body["loadbalancer_id"])
        if "listener_id" in body:
            return str(self.listeners[body["listener_id"]]["loadbalancer_id"])
        return str(self.pools[body["pool_id"]]["loadbalancer_id"])

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        if self.down:
            raise ConnectionRefusedError("octavia is down")
        params = dict(params or {})
        parts = path.strip("/").split("/")
        if parts[0] == "floatingips":
            return self._fip(method, parts, body, params)
        if parts[0] in ("ports", "security-group-rules") and self.groups_down:
            return 503, {"NeutronError": {"type": "ServiceUnavailable", "message": "down"}}
        if parts[0] == "ports" and method == "GET":
            [ip] = [f.split("=", 1)[1] for f in params["fixed_ips"] if f.startswith("ip_")]
            groups = self.port_groups.get(ip)
            ports = [] if groups is None else [{"id": f"port-{ip}", "security_groups": groups}]
            return 200, {"ports": ports}
        if parts[0] == "security-group-rules" and method == "GET":
            wanted = set(params["security_group_id"])
            rules = [r for r in self.sg_rules if r["security_group_id"] in wanted]
            return 200, {"security_group_rules": copy.deepcopy(rules)}
        kind = parts[1]
        if kind == "providers":
            return 200, {"providers": [{"name": "ovn"}]}
        if self.stale_active_on_delete and method == "GET":
            self._provider_step()
        if kind == "loadbalancers" and len(parts) == 2 and method == "GET":
            for lb_id in [
                i for i, lb in self.lbs.items() if lb["provisioning_status"] == "PENDING_DELETE"
            ]:
                if self._pending.get(lb_id, 0) > 0:
                    self._pending[lb_id] -= 1
                else:
                    self._delete_lb(lb_id)
            want = set(filter(None, str(params.get("tags", "")).split(",")))
            return 200, {
                "loadbalancers": [
                    copy.deepcopy(lb) for lb in self.lbs.values() if want <= set(lb["tags"])
                ]
            }
        if kind == "loadbalancers" and method == "POST":
            lb_id = f"lb-{next(self._seq)}"
            self.lbs[lb_id] = {
                **body["loadbalancer"],
                "id": lb_id,
                "vip_port_id": f"vip-{lb_id}",
                "provisioning_status": "PENDING_CREATE",
                "created_at": f"2026-01-01T00:00:{next(self._seq):02d}",
            }
            self._pending[lb_id] = self.pending_reads
            return 201, {"loadbalancer": copy.deepcopy(self.lbs[lb_id])}
        if kind == "loadbalancers" and method == "GET":
            lb = self.lbs.get(parts[2])
            if lb is None:
                return 404, {"faultstring": "not found"}
            if self._pending.get(lb["id"], 0) > 0:
                self._pending[lb["id"]] -= 1
            elif lb["provisioning_status"] == "PENDING_DELETE":
                self._delete_lb(lb["id"])
                return 404, {"faultstring": "not found"}
            elif lb["provisioning_status"].startswith("PENDING"):
                lb["provisioning_status"] = "ACTIVE"
            return 200, {"loadbalancer": copy.deepcopy(lb)}
        if kind == "loadbalancers" and method == "DELETE":
            if parts[2] not in self.lbs:
                return 404, {"faultstring": "not found"}
            if self.stale_active_on_delete:
                lb_id = parts[2]
                if lb_id in self._deleting:  # accepted again: the provider will crash
                    self._resurrect[lb_id] = copy.deepcopy(self.lbs[lb_id])
                    return 204, None
                self._deleting[lb_id] = 3  # GETs until the provider has removed it
                self.lbs[lb_id]["provisioning_status"] = "ACTIVE"  # the stale report
                return 204, None
            if self.lbs[parts[2]]["provisioning_status"] == "PENDING_DELETE":
                return 409, {
                    "faultstring": f"Load Balancer {parts[2]} is immutable and cannot be updated."
                }
            self._touch(parts[2], "PENDING_DELETE")
            return 204, None
        if kind in ("listeners", "pools") and len(parts) == 2 and method == "GET":
            table = self.listeners if kind == "listeners" else self.pools
            items = [o for o in table.values() if o["loadbalancer_id"] == params["loadbalancer_id"]]
            return 200, {kind: copy.deepcopy(items)}
        if kind in ("listeners", "pools", "healthmonitors") and method == "POST":
            one = kind[:-1]
            lb_id = self._lb_of(body[one])
            if self.lbs[lb_id]["provisioning_status"] != "ACTIVE":
                return 409, {
                    "faultstring": f"Load Balancer {lb_id} is immutable and cannot be updated."
                }
            obj = {**body[one], "id": f"{one}-{next(self._seq)}", "loadbalancer_id": lb_id}
            if kind == "listeners":
                obj["default_pool_id"] = None
                self.listeners[obj["id"]] = obj
            elif kind == "pools":
                obj["listeners"] = [{"id": body[one]["listener_id"]}]
                self.pools[obj["id"]] = obj
                self.listeners[body[one]["listener_id"]]["default_pool_id"] = obj["id"]
                self.members[obj["id"]] = []
            self._touch(lb_id)
            return 201, {one: copy.deepcopy(obj)}
        if kind == "listeners" and method == "PUT":
            listener = self.listeners[parts[2]]
            lb = self.lbs[listener["loadbalancer_id"]]
            cidrs = body["listener"].get("allowed_cidrs")
            if cidrs and lb["provider"] == "ovn":  # ovn-octavia-provider 11, as the sandbox
                return 501, {
                    "faultstring": "Provider 'ovn' does not support a requested option: "
                    "OVN provider does not support allowed_cidrs option"
                }
            if lb["provisioning_status"] != "ACTIVE":
                return 409, {
                    "faultstring": f"Load Balancer {lb['id']} is immutable and cannot be updated."
                }
            listener["allowed_cidrs"] = cidrs
            listener["updated_at"] = f"2026-01-01T01:00:{next(self._seq):02d}"
            self._touch(lb["id"])
            return 200, {"listener": copy.deepcopy(listener)}
        if kind in ("listeners", "pools") and method == "DELETE":
            table = self.listeners if kind == "listeners" else self.pools
            obj = table.pop(parts[2], None)
            if obj is None:
                return 404, {"faultstring": "not found"}
            self.members.pop(parts[2], None)
            self._touch(obj["loadbalancer_id"])
            return 204, None
        if kind == "pools" and parts[-1] == "members":
            pool_id = parts[2]
            if method == "GET":
                self._provider_reports(1)
                return 200, {"members": copy.deepcopy(self.members[pool_id])}
            lb_id = self.pools[pool_id]["loadbalancer_id"]
            if self.lbs[lb_id]["provisioning_status"] != "ACTIVE":
                return 409, {
                    "faultstring": f"Load Balancer {lb_id} is immutable and cannot be updated."
                }
            self.member_puts += 1
            # Octavia's batch update: rows matched by (address, port) among all the pool's
            # rows keep their id (PENDING_DELETE ones too), the others are new or removed.
            old = self.members[pool_id]
            by_key = {(mb["address"], mb["protocol_port"]): mb for mb in old}
            wanted = {(mb["address"], mb["protocol_port"]) for mb in body["members"]}
            rows = []
            for mb in body["members"]:
                prev = by_key.get((mb["address"], mb["protocol_port"]))
                rows.append(
                    {
                        **mb,
                        "id": prev["id"] if prev else f"m-{next(self._seq)}",
                        "provisioning_status": "ACTIVE",
                    }
                )
            removed = [mb for mb in old if (mb["address"], mb["protocol_port"]) not in wanted]
            if self.late_member_deletes:
                rows += [{**mb, "provisioning_status": "ACTIVE"} for mb in removed]
                ids = [mb["id"] for mb in removed]
                self._late_deletes.append([self.late_member_deletes, pool_id, ids])
            self.members[pool_id] = rows
            if self.stale_report_drops:
                ids = [mb["id"] for mb in rows if mb["address"] in self.stale_report_drops]
                self._late_deletes.append([1, pool_id, ids])
                self.stale_report_drops = set()
            self._touch(lb_id)
            return 202, None
        raise AssertionError(f"unexpected {method} {path}")

    def _provider_reports(self, steps: int) -> None:
        """``steps`` member listings pass: due late member reports delete their rows."""
        for late in list(self._late_deletes):
            late[0] -= steps
            if late[0] <= 0:
                self._late_deletes.remove(late)
                _, pool_id, ids = late
                self.members[pool_id] = [m for m in self.members[pool_id] if m["id"] not in ids]

    def _provider_step(self) -> None:
        for lb_id in list(self._deleting):
            self._deleting[lb_id] -= 1
            if self._deleting[lb_id] > 0:
                continue
            del self._deleting[lb_id]
            if lb_id in self.lbs:
                self._delete_lb(lb_id)
            elif lb_id in self._resurrect:  # the second delete failed: ERROR, not gone
                self.lbs[lb_id] = {**self._resurrect.pop(lb_id), "provisioning_status": "ERROR"}
        for lb_id in list(self._resurrect):
            if lb_id not in self.lbs and lb_id not in self._deleting:
                self._deleting[lb_id] = 1  # the failing second delete, processed next

    def _delete_lb(self, lb_id: str) -> None:
        self.lbs.pop(lb_id)
        for pool_id in [p for p, o in self.pools.items() if o["loadbalancer_id"] == lb_id]:
            self.pools.pop(pool_id)
            self.members.pop(pool_id, None)
        for li in [x for x, o in self.listeners.items() if o["loadbalancer_id"] == lb_id]:
            self.listeners.pop(li)

    def _fip(
        self, method: str, parts: list[str], body: Any, params: dict[str, Any]
    ) -> tuple[int, Any]:
        if method == "GET":
            out = [
                f
                for f in self.fips.values()
                if all(
                    (set(str(v).split(",")) <= set(f["tags"])) if k == "tags" else f.get(k) == v
                    for k, v in params.items()
                )
            ]
            return 200, {"floatingips": copy.deepcopy(out)}
        if method == "POST":
            fid = str(uuid.uuid4())
            addr = (
                body["floatingip"].get("floating_ip_address") or f"172.24.4.{100 + len(self.fips)}"
            )
            self.fips[fid] = {
                **body["floatingip"],
                "id": fid,
                "floating_ip_address": addr,
                "tags": [],
            }
            return 201, {"floatingip": copy.deepcopy(self.fips[fid])}
        if len(parts) == 3 and parts[2] == "tags":
            self.fips[parts[1]]["tags"] = list(body["tags"])
            return 200, {"tags": body["tags"]}
        if method == "PUT":
            self.fips[parts[1]]["port_id"] = body["floatingip"]["port_id"]
            return 200, {"floatingip": copy.deepcopy(self.fips[parts[1]])}
        if method == "DELETE":
            return (204, None) if self.fips.pop(parts[1], None) else (404, None)
        raise AssertionError(method)


class FakeKube:
    """What the reconciler writes through the client (merge patches), kept in a Store."""

    def __init__(self, klbs: Store, services: Store) -> None:
        self.stores = {"kuryrloadbalancers": klbs, "services": services}

    async def patch(
        self, res: Any, name: str, patch: Any, namespace: str | None = None, **kw: Any
    ) -> Any:
        store = self.stores[res.plural]
        obj = copy.deepcopy(store.get(f"{namespace}/{name}"))
        assert obj is not None

        def merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
            for k, v in src.items():
                if v is None:
                    dst.pop(k, None)
                elif isinstance(v, Mapping) and isinstance(dst.get(k), dict):
                    merge(dst[k], v)
                else:
                    dst[k] = copy.deepcopy(v)

        merge(obj, patch)
        store.put(obj)
        return obj


@dataclass
class World:
    cloud: FakeCloud
    klbs: Store
    services: Store
    rec: KuryrLoadBalancerReconciler
    events: FakeEvents

    async def converge(self, key: str = "ns/web", passes: int = 20) -> None:
        """Passes until one succeeds (temporary errors are retried, as the engine would)."""
        for _ in range(passes):
            try:
                await self.rec.reconcile(key)
                return
            except TemporaryError:
                continue
        raise AssertionError("did not converge")

    def klb(self) -> dict[str, Any]:
        obj = self.klbs.get("ns/web")
        assert obj is not None
        return obj


def make_world(spec: dict[str, Any], *, enforce_sg_rules: bool = False) -> World:
    cloud = FakeCloud()

    now = [0.0]

    async def sleep(seconds: float) -> None:  # virtual time: waits cost nothing
        now[0] += seconds

    octavia = Octavia(cloud, inline=True, sleep=sleep, clock=lambda: now[0])
    neutron = Neutron(cloud, inline=True)
    klbs, services = Store(), Store()
    svc = {"metadata": {"name": "web", "namespace": "ns", "uid": SVC_UID}, "spec": {}}
    services.put(svc)
    klbs.put(
        {
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "uid": "klb-uid",
                "finalizers": [m.KLB_FINALIZER],
                "ownerReferences": [{"kind": "Service", "uid": SVC_UID, "name": "web"}],
            },
            "spec": spec,
        }
    )
    settings = LbSettings(
        cluster_id="c1",
        project_id="p1",
        vip_subnet_id="svc-sub",
        vip_subnet_cidr="10.96.0.0/12",
        member_subnets=(("pod-sub", "10.20.0.0/20"),),
        external_network_id="ext-net",
        enforce_sg_rules=enforce_sg_rules,
    )
    events = FakeEvents()
    rec = KuryrLoadBalancerReconciler(
        FakeKube(klbs, services),  # type: ignore[arg-type]
        klbs,
        services,
        octavia,
        neutron,
        settings,
        events,
    )
    return World(cloud, klbs, services, rec, events)


def spec_for(
    ips: list[str], *, lb_type: str = "ClusterIP", lb_ip: str = "", provider: str = "ovn"
) -> dict[str, Any]:
    svc = {
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "clusterIP": "10.96.0.10",
            "type": lb_type,
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            ],
            **({"loadBalancerIP": lb_ip} if lb_ip else {}),
        },
    }
    slices = [
        {
            "metadata": {"name": "web-1"},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
            ],
        }
    ]
    settings = m.ServiceLbSettings(provider, "p1", "svc-sub", "10.96.0.0/12")
    return m.klb_spec(svc, slices, settings)[0]


def members_by_port(cloud: FakeCloud) -> dict[int, set[tuple[str, int, str]]]:
    out: dict[int, set[tuple[str, int, str]]] = {}
    for li in cloud.listeners.values():
        out[li["protocol_port"]] = {
            (mb["address"], mb["protocol_port"], mb.get("subnet_id", ""))
            for mb in cloud.members[li["default_pool_id"]]
        }
    return out


async def test_converges_to_one_lb_with_a_listener_and_pool_per_port_and_ready_members() -> None:
    w = make_world(spec_for(["10.20.0.5", "10.20.0.6"]))
    await w.converge()
    [lb] = w.cloud.lbs.values()
    assert lb["vip_address"] == "10.96.0.10"
    assert lb["vip_subnet_id"] == "svc-sub"
    assert set(lb["tags"]) >= {"kuryr.cluster:c1", f"kuryr.owner:{SVC_UID}"}
    assert members_by_port(w.cloud) == {
        80: {("10.20.0.5", 8080, "pod-sub"), ("10.20.0.6", 8080, "pod-sub")},
        53: {("10.20.0.5", 5353, "pod-sub"), ("10.20.0.6", 5353, "pod-sub")},
    }
    status = w.klb()["status"]
    assert status["loadbalancer"]["id"] == lb["id"]
    assert len(status["listeners"]) == len(status["pools"]) == 2
    assert len(status["members"]) == 4
    assert status["conditions"][0]["status"] == "True"

    puts = w.cloud.member_puts
    await w.converge()  # nothing changed: no write
    assert w.cloud.member_puts == puts and len(w.cloud.lbs) == 1


async def test_endpoint_change_is_one_batch_update_per_pool() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    await w.converge()
    puts = w.cloud.member_puts
    w.klbs.put({**w.klb(), "spec": spec_for(["10.20.0.7", "10.20.0.8", "10.20.0.9"])})
    await w.converge()
    assert w.cloud.member_puts - puts == 2  # one per pool, whatever the number of endpoints
    assert {a for a, _, _ in members_by_port(w.cloud)[80]} == {
        "10.20.0.7",
        "10.20.0.8",
        "10.20.0.9",
    }


async def test_a_batch_update_waits_for_the_previous_ones_removals_to_be_reported() -> None:
    """Endpoints that go and come back while Octavia still lists them (the crash test's
    kill-and-change loop, CI failure of 2026-11-28): the batch update reuses their rows and
    the provider's late report deletes them; the reconciler waits for the list to say what
    it sent and sends it again when a member was lost."""
    w = make_world(spec_for(["10.20.0.5", "10.20.0.6"]))
    await w.converge()
    w.cloud.late_member_deletes = 8  # listings (of any pool) before the report
    w.klbs.put({**w.klb(), "spec": spec_for(["10.20.0.7"])})
    await w.converge()
    w.klbs.put({**w.klb(), "spec": spec_for(["10.20.0.5", "10.20.0.6"])})
    await w.converge()
    w.cloud._provider_reports(1000)  # every late report has arrived
    want = {("10.20.0.5", "pod-sub"), ("10.20.0.6", "pod-sub")}
    got = {port: {(a, s) for a, _, s in ms} for port, ms in members_by_port(w.cloud).items()}
    assert got == {80: want, 53: want}
    assert sorted(m["ip"] for m in w.klb()["status"]["members"]) == [
        "10.20.0.5",
        "10.20.0.5",
        "10.20.0.6",
        "10.20.0.6",
    ]


async def test_a_member_list_that_differs_after_the_update_is_updated_again() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    await w.converge()
    w.klbs.put({**w.klb(), "spec": spec_for(["10.20.0.6"])})
    w.cloud.stale_report_drops = {"10.20.0.6"}  # a stale report deletes the new rows
    with pytest.raises(TemporaryError, match=r"lost members 10\.20\.0\.6:8080"):
        await w.rec.reconcile("ns/web")
    await w.converge()
    assert {a for a, _, _ in members_by_port(w.cloud)[80]} == {"10.20.0.6"}


async def test_a_crash_after_create_leaves_one_lb_and_a_second_one_is_removed() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    w.cloud.pending_reads = 1000  # the create lands, then "the controller dies" while waiting
    with pytest.raises(LbPending):
        await w.rec.reconcile("ns/web")
    w.cloud.pending_reads = 1
    first = next(iter(w.cloud.lbs))
    w.cloud._pending[first] = 0  # Octavia finishes the create meanwhile
    # A second one of the same owner (e.g. a create whose answer was lost, sent again).
    dup = copy.deepcopy(w.cloud.lbs[first])
    dup.update(id="lb-dup", created_at="2026-01-02T00:00:00", provisioning_status="ACTIVE")
    w.cloud.lbs["lb-dup"] = dup
    await w.converge()
    assert w.klb()["status"]["loadbalancer"]["id"] == first
    assert w.cloud.lbs["lb-dup"]["provisioning_status"] == "PENDING_DELETE"
    for _ in range(3):  # later passes, while Octavia finishes the delete
        await w.converge()
    assert list(w.cloud.lbs) == [first]


async def test_an_lb_in_error_is_replaced() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    await w.converge()
    [old] = list(w.cloud.lbs)
    w.cloud.lbs[old]["provisioning_status"] = "ERROR"
    await w.converge()
    await w.converge()  # Octavia finished deleting the old one meanwhile
    assert old not in w.cloud.lbs and len(w.cloud.lbs) == 1
    assert members_by_port(w.cloud)[80] == {("10.20.0.5", 8080, "pod-sub")}


async def test_removed_port_removes_its_listener_and_pool() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    await w.converge()
    spec = spec_for(["10.20.0.5"])
    spec["ports"] = [p for p in spec["ports"] if p["protocol"] == "TCP"]
    w.klbs.put({**w.klb(), "spec": spec})
    await w.converge()
    assert [li["protocol_port"] for li in w.cloud.listeners.values()] == [80]
    assert len(w.cloud.pools) == 1


async def test_load_balancer_type_gets_one_floating_ip_into_the_service_status() -> None:
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer"))
    await w.converge()
    await w.converge()
    [fip] = w.cloud.fips.values()
    [lb] = w.cloud.lbs.values()
    assert fip["port_id"] == lb["vip_port_id"]
    assert "kuryr.cluster:c1" in fip["tags"]
    svc = w.services.get("ns/web")
    assert svc is not None
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": fip["floating_ip_address"]}]
    # Back to ClusterIP: our floating IP goes, the ingress is emptied.
    w.klbs.put({**w.klb(), "spec": spec_for(["10.20.0.5"])})
    await w.converge()
    assert not w.cloud.fips
    svc = w.services.get("ns/web")
    assert svc is not None and not svc["status"]["loadBalancer"]


async def test_a_users_floating_ip_is_used_and_only_disassociated_on_release() -> None:
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer", lb_ip="172.24.4.50"))
    w.cloud.fips["user"] = {
        "id": "user",
        "floating_ip_address": "172.24.4.50",
        "port_id": None,
        "tags": [],
    }
    await w.converge()
    [lb] = w.cloud.lbs.values()
    assert w.cloud.fips["user"]["port_id"] == lb["vip_port_id"]
    assert w.klb()["status"]["service_pub_ip_info"]["alloc_method"] == "user"
    deleting = w.klb()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    w.klbs.put(deleting)
    await w.converge()
    assert not w.cloud.lbs
    assert w.cloud.fips["user"]["port_id"] is None  # still the user's
    assert m.KLB_FINALIZER not in (w.klb()["metadata"].get("finalizers") or [])


async def test_a_floating_ip_in_use_elsewhere_is_a_clear_permanent_error() -> None:
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer", lb_ip="172.24.4.50"))
    w.cloud.fips["user"] = {
        "id": "user",
        "floating_ip_address": "172.24.4.50",
        "port_id": "other",
        "tags": [],
    }
    with pytest.raises(PermanentError, match="172.24.4.50.*in use by port other"):
        for _ in range(10):
            try:
                await w.rec.reconcile("ns/web")
            except LbPending:
                continue
    cond = w.klb()["status"]["conditions"][0]
    assert cond["status"] == "False" and "in use" in cond["message"]
    assert "LoadBalancerNotReady" in w.events.reasons("ns/web")


async def test_octavia_down_is_temporary_with_a_condition_and_converges_when_back() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    w.cloud.down = True
    with pytest.raises(TemporaryError):
        await w.rec.reconcile("ns/web")
    assert w.klb()["status"]["conditions"][0]["reason"] == "OctaviaUnavailable"
    w.cloud.down = False
    await w.converge()
    assert len(w.cloud.lbs) == 1
    assert w.klb()["status"]["conditions"][0]["status"] == "True"


async def test_release_deletes_the_lb_and_our_floating_ip() -> None:
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer"))
    await w.converge()
    assert w.cloud.fips and w.cloud.lbs
    await w.rec.release(SVC_UID)
    assert not w.cloud.lbs and not w.cloud.fips and not w.cloud.pools and not w.cloud.listeners
    assert objects.name(w.klb()) == "web"


async def test_release_does_not_delete_twice_when_octavia_briefly_says_active() -> None:
    """Only an LB that stays ACTIVE/ERROR after a delete gets the delete again: sent at
    once, the second one raced the first in the OVN provider and left the LB in ERROR
    after the controller had seen it gone (sandbox, svc-crash test, 2026-11-28)."""
    w = make_world(spec_for(["10.20.0.5"]))
    await w.converge()
    w.cloud.stale_active_on_delete = True
    await w.rec.release(SVC_UID)
    for _ in range(5):  # Octavia keeps working after the controller has moved on
        w.cloud("GET", "/lbaas/loadbalancers")
    assert not w.cloud.lbs, w.cloud.lbs


async def test_octavia_calls_are_exported_as_metrics() -> None:
    w = make_world(spec_for(["10.20.0.5"]))
    await w.converge()
    registry = CollectorRegistry()
    registry.register(OctaviaCollector(w.rec._octavia.stats))
    text = generate_latest(registry).decode()
    assert 'kuryr_octavia_calls_total{op="create_loadbalancer"} 1.0' in text
    assert 'kuryr_octavia_call_seconds_total{op="replace_members"}' in text


# ---- loadBalancerSourceRanges ----------------------------------------------------------


def public_service(w: World, *ranges: str) -> None:
    """The Service of the world becomes ``type: LoadBalancer`` with these ranges."""
    svc = w.services.get("ns/web")
    assert svc is not None
    spec = {
        "type": "LoadBalancer",
        **({"loadBalancerSourceRanges": list(ranges)} if ranges else {}),
    }
    w.services.put({**svc, "spec": spec})


def acls(cloud: FakeCloud) -> dict[int, list[str] | None]:
    return {li["protocol_port"]: li.get("allowed_cidrs") for li in cloud.listeners.values()}


def conditions(w: World) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in w.klb()["status"]["conditions"]}


async def test_source_ranges_are_every_listeners_allowed_cidrs_where_the_provider_filters() -> None:
    """amphora (unit-tested only: the sandbox has the ovn provider): the ranges plus the
    cluster's own networks (pods, service subnet, the VIP) on every listener; a change is
    applied, no change writes nothing, ranges removed open the listeners again."""
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer", provider="amphora"))
    public_service(w, "203.0.113.7/24", "198.51.100.9/32")
    await w.converge()
    internal = ["10.20.0.0/20", "10.96.0.0/12"]  # the VIP 10.96.0.10 is inside the latter
    want = ["10.20.0.0/20", "10.96.0.0/12", "198.51.100.9/32", "203.0.113.0/24"]
    assert acls(w.cloud) == {80: want, 53: want}
    cond = conditions(w)["SourceRangesEnforced"]
    assert cond["status"] == "True", cond
    assert "203.0.113.0/24" in cond["message"] and "NOT" not in cond["message"]
    assert all(li["allowed_cidrs"] == want for li in w.klb()["status"]["listeners"])
    assert not [e for e in w.events.emitted if e[2] == "SourceRangesNotEnforced"]

    before = copy.deepcopy(w.cloud.listeners)
    await w.converge()  # nothing changed: no listener update (each one is an LB update)
    assert w.cloud.listeners == before

    public_service(w, "192.0.2.0/24")
    await w.converge()
    assert acls(w.cloud) == {
        80: sorted([*internal, "192.0.2.0/24"]),
        53: sorted([*internal, "192.0.2.0/24"]),
    }

    public_service(w)  # ranges gone: every source again, and no claim left behind
    await w.converge()
    assert acls(w.cloud) == {80: None, 53: None}
    assert "SourceRangesEnforced" not in conditions(w)


async def test_ovn_refusing_allowed_cidrs_says_not_enforced_and_never_claims_otherwise() -> None:
    """The ovn provider answers 501 to listener allowed_cidrs (seen on the sandbox): the LB
    still works (Ready), the KuryrLoadBalancer says the ranges are NOT enforced with
    Octavia's answer, the Service gets a Warning Event, the listeners stay as they were."""
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer"))
    public_service(w, "192.0.2.0/24")
    await w.converge()
    await w.converge()  # a later pass says the same
    conds = conditions(w)
    assert conds["Ready"]["status"] == "True"
    ranges = conds["SourceRangesEnforced"]
    assert (ranges["status"], ranges["reason"]) == ("False", "ProviderUnsupported")
    assert "192.0.2.0/24" in ranges["message"] and "NOT enforced" in ranges["message"]
    assert "does not support allowed_cidrs" in ranges["message"]
    assert acls(w.cloud) == {80: None, 53: None}
    assert all("allowed_cidrs" not in li for li in w.klb()["status"]["listeners"])
    warnings = {(k, t, r) for k, t, r, _ in w.events.emitted}
    assert ("ns/web", "Warning", "SourceRangesNotEnforced") in warnings
    assert w.services.get("ns/web")["status"]["loadBalancer"]["ingress"]  # type: ignore[index]

    public_service(w)  # ranges removed: nothing is claimed any more
    await w.converge()
    assert "SourceRangesEnforced" not in conditions(w)


async def test_a_failed_pass_keeps_the_not_enforced_condition() -> None:
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer"))
    public_service(w, "192.0.2.0/24")
    await w.converge()
    w.cloud.down = True
    with pytest.raises(TemporaryError):
        await w.rec.reconcile("ns/web")
    conds = conditions(w)
    assert conds["Ready"]["status"] == "False"
    assert conds["SourceRangesEnforced"]["status"] == "False"


async def test_a_source_range_that_is_not_a_cidr_is_a_clear_error_before_anything_is_made() -> None:
    w = make_world(spec_for(["10.20.0.5"], lb_type="LoadBalancer", provider="amphora"))
    public_service(w, "192.0.2.0/24", "office")
    with pytest.raises(PermanentError, match="'office'"):
        await w.rec.reconcile("ns/web")
    assert not w.cloud.lbs and not w.cloud.fips
    ready = conditions(w)["Ready"]
    assert ready["status"] == "False" and "loadBalancerSourceRanges" in ready["message"]
    assert ("ns/web", "Warning", "LoadBalancerNotReady") in {
        (k, t, r) for k, t, r, _ in w.events.emitted
    }


# ---- [octavia_defaults] enforce_sg_rules -----------------------------------------------


def rule(sg: str, protocol: str | None, port: int | None, prefix: str | None) -> dict[str, Any]:
    return {
        "security_group_id": sg,
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": protocol,
        "port_range_min": port,
        "port_range_max": port,
        "remote_ip_prefix": prefix,
        "remote_group_id": None,
    }


async def test_enforce_sg_rules_narrows_amphora_listeners_to_what_the_members_groups_admit() -> (
    None
):
    """amphora hides the client's address from the backends, so (upstream's meaning) the
    members' own groups are enforced at the LB: their sources for the member's port become
    the listener's allowed_cidrs, narrowed by the source ranges. Unit-tested only."""
    w = make_world(
        spec_for(["10.20.0.5", "10.20.0.6"], lb_type="LoadBalancer", provider="amphora"),
        enforce_sg_rules=True,
    )
    w.cloud.port_groups = {"10.20.0.5": ["np-a"], "10.20.0.6": ["np-b"]}
    w.cloud.sg_rules = [
        rule("np-a", "tcp", 8080, "10.20.3.0/24"),
        rule("np-a", "tcp", 9999, "10.99.0.0/16"),  # another port: not this listener's
        rule("np-b", "tcp", None, "192.0.2.0/24"),
        rule("np-b", "udp", 5353, "10.20.4.0/24"),
    ]
    await w.converge()
    assert acls(w.cloud) == {80: ["10.20.3.0/24", "192.0.2.0/24"], 53: ["10.20.4.0/24"]}

    public_service(w, "192.0.2.128/25")  # both apply: a client must pass the two
    await w.converge()
    assert acls(w.cloud) == {80: ["10.20.3.0/24", "192.0.2.128/25"], 53: ["10.20.4.0/24"]}

    # A member whose group admits any source (no NetworkPolicy): the listener is open
    # to what the ranges allow, nothing narrower.
    w.cloud.sg_rules.append(rule("np-a", "tcp", None, None))  # TCP from anywhere
    public_service(w)
    await w.converge()
    assert acls(w.cloud) == {80: None, 53: ["10.20.4.0/24"]}


async def test_enforce_sg_rules_does_nothing_with_the_ovn_provider() -> None:
    """ovn keeps the client's address: the backends' groups filter it themselves, so the
    members' groups are not needed (the LB converges while Neutron cannot list them)."""
    w = make_world(spec_for(["10.20.0.5"]), enforce_sg_rules=True)
    w.cloud.groups_down = True
    await w.converge(passes=1)
    assert conditions(w)["Ready"]["status"] == "True"
    assert acls(w.cloud) == {80: None, 53: None}
    assert "SourceRangesEnforced" not in conditions(w)
