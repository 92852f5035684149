"""The daemon's request logic over fakes: what ends up plugged, and which CNI code answers."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from kuryr_k8s.cni import spec
from kuryr_k8s.cni.binding import Attachment, Drivers, Plugged
from kuryr_k8s.cni.daemon.service import CniService, ServiceSettings
from kuryr_k8s.cni.errors import HostError, to_cni_error
from kuryr_k8s.model.vif import Vif
from unit.cni.fakes import FakeDriver, FakeVifs, make_vif

pytestmark = pytest.mark.unit

FAST = ServiceSettings(vif_timeout=0.3, ready_timeout=0.3, poll_interval=0.01)


@pytest.fixture
def netns(tmp_path: Path) -> str:
    path = tmp_path / "netns"
    path.write_text("")
    return str(path)


def body(command: str, netns: str = "", container: str = "c1", **config: Any) -> dict[str, Any]:
    return {
        "command": command,
        "containerId": container,
        "netns": netns,
        "ifname": "eth0",
        "args": {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "pod-a"},
        "path": "",
        "config": {"cniVersion": "1.0.0", "name": "kuryr", **config},
    }


CLUSTER = "cluster-a"


def make(**kw: Any) -> tuple[CniService, FakeVifs, FakeDriver]:
    vifs, driver = FakeVifs(**kw), FakeDriver(cluster_id=CLUSTER)
    return CniService(vifs, Drivers([driver]), FAST, cluster_id=CLUSTER), vifs, driver


def gc_body(valid: list[dict[str, str]]) -> dict[str, Any]:
    req = body("GC")
    req["config"].update({"cniVersion": "1.1.0", "cni.dev/valid-attachments": valid})
    return req


def ours(cid: str, netns: str = "", pod: str = "ns/p", *, network: str = "kuryr") -> Plugged:
    """An attachment stamped with our cluster id, as the drivers report it."""
    return Plugged(cid, "eth0", f"tap-{cid}", netns, pod, cluster=CLUSTER, network=network)


async def code_of(service: CniService, req: dict[str, Any]) -> int:
    with pytest.raises(Exception) as info:
        await service.handle(req)
    return to_cni_error(info.value).code


async def test_add_waits_for_the_vif_then_plugs_and_answers_the_result(netns: str) -> None:
    service, vifs, driver = make()
    vif = make_vif()
    task = asyncio.create_task(service.handle(body("ADD", netns)))
    await asyncio.sleep(0.05)
    assert not task.done() and driver.host == {}
    vifs.put("ns/pod-a", vif)
    result = await task
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": vif.mac_address, "sandbox": netns}],
        "ips": [{"address": "10.20.0.5/24", "interface": 0, "gateway": "10.20.0.1"}],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.20.0.1"},
            {"dst": "10.30.0.0/16", "gw": "10.20.0.254"},
        ],
        "dns": {},
    }
    assert driver.host[vif.host_ifname].container_id == "c1"


async def test_result_for_old_versions_carries_ip_version(netns: str) -> None:
    service, vifs, _ = make()
    vifs.put("ns/pod-a", make_vif())
    req = body("ADD", netns)
    req["config"]["cniVersion"] = "0.3.1"
    result = await service.handle(req)
    assert result is not None and result["ips"][0]["version"] == "4"


async def test_vif_that_never_arrives_is_try_again_later_with_nothing_plugged(
    netns: str,
) -> None:
    service, _, driver = make()
    assert await code_of(service, body("ADD", netns)) == spec.TRY_AGAIN_LATER
    assert driver.host == {}


async def test_unknown_pod_is_container_unknown(netns: str) -> None:
    service, _, driver = make(pods=set())
    assert await code_of(service, body("ADD", netns)) == spec.UNKNOWN_CONTAINER
    assert driver.host == {}


async def test_missing_netns_is_container_unknown(tmp_path: Path) -> None:
    service, vifs, driver = make()
    vifs.put("ns/pod-a", make_vif())
    assert await code_of(service, body("ADD", str(tmp_path / "gone"))) == spec.UNKNOWN_CONTAINER
    assert driver.host == {}


async def test_vlan_vif_is_unsupported_here_with_nothing_plugged(netns: str) -> None:
    service, vifs, driver = make()
    vifs.put("ns/pod-a", make_vif(vif_type="vlan"))
    assert await code_of(service, body("ADD", netns)) == spec.UNSUPPORTED_VIF
    assert driver.host == {}


async def test_port_never_ready_unplugs_and_says_try_again(netns: str) -> None:
    service, vifs, driver = make()
    driver.ready_value = False
    vifs.put("ns/pod-a", make_vif())
    assert await code_of(service, body("ADD", netns)) == spec.TRY_AGAIN_LATER
    assert driver.host == {}


async def test_without_ovn_readiness_falls_back_to_the_vif_being_active(netns: str) -> None:
    service, vifs, driver = make()
    driver.ready_value = None
    vifs.put("ns/pod-a", make_vif(active=False))
    assert await code_of(service, body("ADD", netns)) == spec.TRY_AGAIN_LATER
    vifs.put("ns/pod-a", make_vif(active=True))
    assert await service.handle(body("ADD", netns)) is not None
    assert len(driver.host) == 1


async def test_host_failure_is_a_permanent_error(netns: str) -> None:
    service, vifs, driver = make()
    driver.fail_plug = HostError("netlink said no")
    vifs.put("ns/pod-a", make_vif())
    assert await code_of(service, body("ADD", netns)) == 102


async def test_del_is_idempotent_and_ignores_other_containers(netns: str) -> None:
    service, vifs, driver = make()
    vifs.put("ns/pod-a", make_vif())
    await service.handle(body("ADD", netns))
    assert await service.handle(body("DEL", container="someone-else")) is None
    assert len(driver.host) == 1
    assert await service.handle(body("DEL", container="c1")) is None
    assert await service.handle(body("DEL", container="c1")) is None
    assert driver.host == {}


async def test_check_passes_then_fails_when_the_interface_is_gone(netns: str) -> None:
    service, vifs, driver = make()
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    result = await service.handle(body("ADD", netns))
    assert await service.handle(body("CHECK", netns, prevResult=result)) is None
    bad = {"ips": [{"address": "10.99.0.1/24"}], "interfaces": []}
    assert await code_of(service, body("CHECK", netns, prevResult=bad)) == 102
    driver.host.clear()
    assert await code_of(service, body("CHECK", netns, prevResult=result)) == 102


async def test_status_reports_plugin_not_available_until_ready() -> None:
    service, vifs, driver = make(synced=False)
    req = body("STATUS")
    req["config"]["cniVersion"] = "1.1.0"
    assert await code_of(service, req) == spec.PLUGIN_NOT_AVAILABLE
    vifs.synced = True
    driver.health = "bridge br-int does not exist"
    assert await code_of(service, req) == spec.PLUGIN_NOT_AVAILABLE
    driver.health = None
    assert await service.handle(req) is None


async def test_gc_unplugs_only_attachments_not_in_the_valid_list(netns: str) -> None:
    service, _, driver = make()
    for cid in ("keep", "drop"):
        driver.host[f"tap-{cid}"] = ours(cid, netns)
    assert await service.handle(gc_body([{"containerID": "keep", "ifname": "eth0"}])) is None
    assert list(driver.host) == ["tap-keep"]


async def test_gc_touches_only_our_cluster_and_its_own_network(netns: str) -> None:
    service, _, driver = make()
    driver.host = {
        "tap-mine": ours("mine", netns),
        "tap-other-net": ours("other-net", netns, network="macvlan-net"),
        "tap-other-cluster": Plugged(
            "theirs", "eth0", "tap-other-cluster", netns, "ns/p", cluster="b", network="kuryr"
        ),
        "tap-legacy": Plugged("legacy", "eth0", "tap-legacy", netns, "ns/p"),
    }
    await service.handle(gc_body([]))
    assert sorted(driver.host) == ["tap-legacy", "tap-other-cluster", "tap-other-net"]


async def test_gc_refuses_to_unplug_most_running_pods_at_once(netns: str) -> None:
    service, _, driver = make()
    driver.host = {f"tap-c{i}": ours(f"c{i}", netns) for i in range(10)}
    await service.handle(gc_body([]))
    assert len(driver.host) == 10, "an empty valid list for 10 running pods is suspicious"
    await service.handle(gc_body([{"containerID": f"c{i}", "ifname": "eth0"} for i in range(8)]))
    assert sorted(driver.host) == [f"tap-c{i}" for i in range(8)]


async def test_del_leaves_another_clusters_attachment_of_the_same_container(netns: str) -> None:
    service, _, driver = make()
    driver.host = {
        "tap-theirs": Plugged("c1", "eth0", "tap-theirs", netns, "ns/p", cluster="b"),
        "tap-c1": ours("c1", netns),
    }
    await service.handle(body("DEL", container="c1"))
    assert list(driver.host) == ["tap-theirs"]


async def test_reconcile_keeps_live_pods_and_removes_the_rest(tmp_path: Path, netns: str) -> None:
    service, vifs, driver = make()
    vifs.put("ns/alive", make_vif())
    gone = str(tmp_path / "x")
    driver.host = {
        "tap-c1": ours("c1", netns, "ns/alive"),
        "tap-c2": ours("c2", gone, "ns/alive"),
        "tap-c3": ours("c3", netns, "ns/deleted"),
        "tap-c5": dataclasses.replace(ours("c5", gone), host_link=False),
    }
    removed = await service.reconcile()
    assert sorted(removed) == ["tap-c2", "tap-c3", "tap-c5"]
    assert list(driver.host) == ["tap-c1"]


async def test_reconcile_never_touches_another_clusters_pods(netns: str, tmp_path: Path) -> None:
    """The bug of issue 14: a second cluster's daemon unplugged the first one's pods."""
    service, vifs, driver = make()
    vifs.put("ns/mine", make_vif())
    theirs = {
        f"tap-{i}": Plugged(f"t{i}", "eth0", f"tap-{i}", netns, f"ns/theirs-{i}", cluster="b")
        for i in range(3)
    }
    dead_theirs = Plugged("t9", "eth0", "tap-9", str(tmp_path / "x"), "ns/t", cluster="b")
    driver.host = {**theirs, "tap-9": dataclasses.replace(dead_theirs, host_link=False)}
    driver.host["tap-mine"] = ours("mine", netns, "ns/mine")
    assert await service.reconcile() == []
    assert sorted(driver.host) == sorted([*theirs, "tap-9", "tap-mine"])


async def test_reconcile_removes_unstamped_attachments_only_when_dead(
    netns: str, tmp_path: Path
) -> None:
    service, vifs, driver = make()
    vifs.put("ns/mine", make_vif())
    gone = str(tmp_path / "x")
    driver.host = {
        "tap-legacy-live": Plugged("l1", "eth0", "tap-legacy-live", netns, "ns/unknown"),
        "tap-legacy-half": Plugged("l2", "eth0", "tap-legacy-half"),
        "tap-legacy-dead": Plugged("l3", "eth0", "tap-legacy-dead", gone, "ns/x", host_link=False),
    }
    assert await service.reconcile() == ["tap-legacy-dead"]
    assert sorted(driver.host) == ["tap-legacy-half", "tap-legacy-live"]


async def test_reconcile_before_sync_only_removes_the_provably_dead(
    netns: str, tmp_path: Path
) -> None:
    service, _, driver = make(synced=False)
    dead = dataclasses.replace(ours("dead", str(tmp_path / "x")), host_link=False)
    driver.host = {"tap-x": ours("x", netns, "ns/unknown"), "tap-dead": dead}
    assert await service.reconcile() == ["tap-dead"]
    assert list(driver.host) == ["tap-x"]


async def test_reconcile_on_an_empty_cache_unplugs_no_running_pod(netns: str) -> None:
    service, _, driver = make()
    driver.host = {"tap-x": ours("x", netns, "ns/unknown")}
    assert await service.reconcile() == []
    assert list(driver.host) == ["tap-x"]


async def test_reconcile_refuses_to_unplug_more_than_a_small_share(netns: str) -> None:
    service, vifs, driver = make()
    vifs.put("ns/p0", make_vif())
    driver.host = {f"tap-c{i}": ours(f"c{i}", netns, f"ns/p{i}") for i in range(10)}
    assert await service.reconcile() == [], "9 of 10 running pods unknown: suspicious"
    assert len(driver.host) == 10
    for i in range(1, 8):
        vifs.put(f"ns/p{i}", make_vif())
    assert sorted(await service.reconcile()) == ["tap-c8", "tap-c9"]


class Repairs:
    """A RepairListener that keeps what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    def lost(self, att: Attachment, vif: Vif, why: str) -> None:
        self.told.append(("lost", att.pod_key))

    def replugged(self, att: Attachment, vif: Vif) -> None:
        self.told.append(("replugged", att.pod_key))

    def failed(self, att: Attachment, vif: Vif, error: str) -> None:
        self.told.append(("failed", att.pod_key))


def with_repairs(**kw: Any) -> tuple[CniService, FakeVifs, FakeDriver, Repairs]:
    vifs, driver, repairs = FakeVifs(**kw), FakeDriver(cluster_id=CLUSTER), Repairs()
    service = CniService(vifs, Drivers([driver]), FAST, cluster_id=CLUSTER, repairs=repairs)
    return service, vifs, driver, repairs


async def test_a_lost_attachment_is_plugged_again_once(netns: str) -> None:
    service, vifs, driver, repairs = with_repairs()
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    await service.handle(body("ADD", netns))
    plugged = driver.host[vif.host_ifname]
    assert await service.repair() == [] and repairs.told == []
    driver.host.clear()  # somebody deleted the veth
    assert await service.repair() == [vif.host_ifname]
    assert driver.host == {vif.host_ifname: plugged}, "same container, netns, port, stamps"
    assert repairs.told == [("lost", "ns/pod-a"), ("replugged", "ns/pod-a")]
    assert await service.repair() == []
    assert len(repairs.told) == 2


async def test_a_failing_replug_is_retried_and_reported_lost_once(netns: str) -> None:
    service, vifs, driver, repairs = with_repairs()
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    await service.handle(body("ADD", netns))
    driver.host.clear()
    driver.fail_plug = HostError("bridge br-int does not exist")
    assert await service.repair() == [] and await service.repair() == []
    assert repairs.told == [("lost", "ns/pod-a"), ("failed", "ns/pod-a"), ("failed", "ns/pod-a")]
    driver.fail_plug = None
    assert await service.repair() == [vif.host_ifname]
    assert repairs.told[-1] == ("replugged", "ns/pod-a")


async def test_no_replug_after_del_nor_when_the_pod_is_going(tmp_path: Path) -> None:
    service, vifs, driver, repairs = with_repairs()
    ns_file = tmp_path / "pod-netns"
    ns_file.write_text("")
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    await service.handle(body("ADD", str(ns_file)))
    driver.host.clear()
    ns_file.unlink()  # the runtime removed the pod's netns: DEL will come
    assert await service.repair() == []
    ns_file.write_text("")
    vifs.put("ns/pod-a", make_vif())  # the pod has another port now
    assert await service.repair() == []
    vifs.put("ns/pod-a", vif)
    await service.handle(body("DEL"))
    assert await service.repair() == [] and driver.host == {} and repairs.told == []


async def test_reconcile_hands_our_running_attachments_to_repair(netns: str) -> None:
    """After a restart the daemon still re-plugs what it plugged before."""
    service, vifs, driver, repairs = with_repairs()
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    driver.host[vif.host_ifname] = Plugged(
        "c1", "eth0", vif.host_ifname, netns, "ns/pod-a", vif.port_id, cluster=CLUSTER
    )
    assert await service.reconcile() == []
    driver.host.clear()
    assert await service.repair() == [vif.host_ifname]
    assert repairs.told == [("lost", "ns/pod-a"), ("replugged", "ns/pod-a")]


@pytest.mark.parametrize(
    ("req", "code"),
    [
        ("not an object", spec.DECODE_FAILURE),
        ({"command": "VERSION", "config": {}}, spec.INVALID_ENVIRONMENT),
        ({"command": "ADD", "config": "x"}, spec.INVALID_NETWORK_CONFIG),
        ({"command": "ADD", "config": {"cniVersion": "9.9.9"}}, spec.INCOMPATIBLE_VERSION),
        ({"command": "ADD", "config": {"cniVersion": "1.0.0"}}, spec.INVALID_ENVIRONMENT),
        ({"command": "GC", "config": {"cniVersion": "1.1.0"}}, spec.INVALID_NETWORK_CONFIG),
    ],
)
async def test_daemon_revalidates_requests(req: Any, code: int) -> None:
    service, _, driver = make()
    assert await code_of(service, req) == code
    assert driver.host == {}


async def test_requests_for_one_container_are_serialised(netns: str) -> None:
    service, vifs, driver = make()
    add = asyncio.create_task(service.handle(body("ADD", netns)))
    await asyncio.sleep(0.02)  # ADD is waiting for its VIF, holding the container's lock
    delete = asyncio.create_task(service.handle(body("DEL")))
    await asyncio.sleep(0.02)
    assert not delete.done()
    vifs.put("ns/pod-a", make_vif())
    await add
    await delete
    assert driver.host == {}, "DEL ran after ADD, so nothing stays plugged"
    assert service._locks == {}


async def test_one_attachment_that_cannot_be_checked_does_not_stop_the_pass(
    tmp_path: Path,
) -> None:
    service, vifs, driver, repairs = with_repairs()
    pods = {}
    for name in ("pod-a", "pod-b"):
        ns_file = tmp_path / name
        ns_file.write_text("")
        vif = make_vif()
        vifs.put(f"ns/{name}", vif)
        req = body("ADD", str(ns_file), container=name)
        req["args"]["K8S_POD_NAME"] = name
        await service.handle(req)
        pods[name] = vif
    driver.host.clear()
    # pod-a's VIF now asks for a driver this node does not have: its check fails
    vifs.put("ns/pod-a", dataclasses.replace(pods["pod-a"], vif_type="vlan"))
    assert await service.repair() == [pods["pod-b"].host_ifname]
    assert repairs.told == [("lost", "ns/pod-b"), ("replugged", "ns/pod-b")]


async def test_a_newer_sandbox_of_the_pod_is_not_undone_by_replug(tmp_path: Path) -> None:
    """A second ADD of the pod (a new sandbox) took its port: the old container's record
    must not plug the port back into the old sandbox."""
    service, vifs, driver, repairs = with_repairs()
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    old_ns, new_ns = tmp_path / "old", tmp_path / "new"
    old_ns.write_text("")
    new_ns.write_text("")
    await service.handle(body("ADD", str(old_ns), container="old"))
    await service.handle(body("ADD", str(new_ns), container="new"))
    await service.handle(body("DEL", container="new"))
    assert await service.repair() == [] and driver.host == {} and repairs.told == []


async def test_add_refuses_a_network_name_the_spec_does_not_allow(netns: str) -> None:
    service, vifs, driver = make()
    vifs.put("ns/pod-a", make_vif())
    for name in ("two words", "-x", ""):
        req = body("ADD", netns)
        req["config"]["name"] = name
        assert await code_of(service, req) == spec.INVALID_NETWORK_CONFIG
    assert driver.host == {}


def start_adds(
    tmp_path: Path, service: CniService, vifs: FakeVifs, n: int
) -> list[asyncio.Task[dict[str, Any] | None]]:
    """ADDs of pods pod-0..pod-n-1 (each with its netns and VIF), all started at once."""
    tasks = []
    for i in range(n):
        ns = tmp_path / f"netns-{i}"
        ns.write_text("")
        vifs.put(f"ns/pod-{i}", make_vif())
        req = body("ADD", str(ns), container=f"c{i}")
        req["args"]["K8S_POD_NAME"] = f"pod-{i}"
        tasks.append(asyncio.create_task(service.handle(req)))
    return tasks


async def test_concurrent_adds_are_polled_for_readiness_together(tmp_path: Path) -> None:
    """A burst: 30 ADDs waiting for ovn-installed cost one host look-up per round, not one
    each (30 polls every 20 ms starved the plugs of a real burst of 200)."""
    vifs, driver = FakeVifs(), FakeDriver(cluster_id=CLUSTER)
    service = CniService(vifs, Drivers([driver]), ServiceSettings(poll_interval=0.05))
    driver.ready_value = False
    adds = start_adds(tmp_path, service, vifs, 30)
    while len(driver.host) < 30:  # noqa: ASYNC110 - the fake driver has no event
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # a few rounds while none is ready
    driver.ready_value = True
    results = await asyncio.wait_for(asyncio.gather(*adds), 10)
    assert all(r is not None for r in results) and len(driver.host) == 30
    assert max(driver.ready_calls) == 30  # everyone waiting was asked in one look-up
    assert len(driver.ready_calls) < 30  # rounds, not a look-up per ADD


async def test_a_cancelled_add_leaves_the_readiness_rounds_of_others_working(
    tmp_path: Path,
) -> None:
    vifs, driver = FakeVifs(), FakeDriver(cluster_id=CLUSTER)
    service = CniService(vifs, Drivers([driver]), ServiceSettings(poll_interval=0.02))
    driver.ready_value = False
    tasks = start_adds(tmp_path, service, vifs, 2)
    while len(driver.host) < 2:  # noqa: ASYNC110 - the fake driver has no event
        await asyncio.sleep(0.01)
    tasks[0].cancel()
    await asyncio.sleep(0.1)
    driver.ready_value = True
    assert await asyncio.wait_for(tasks[1], 5) is not None
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]


async def test_del_of_what_this_daemon_plugged_needs_no_host_listing(tmp_path: Path) -> None:
    """A teardown of 200 pods listed every attachment of the host once per DEL (minutes);
    a DEL of an attachment this daemon plugged goes straight to it."""
    vifs, driver = FakeVifs(), FakeDriver(cluster_id=CLUSTER)
    service = CniService(vifs, Drivers([driver]), FAST, cluster_id=CLUSTER)
    await asyncio.wait_for(asyncio.gather(*start_adds(tmp_path, service, vifs, 3)), 10)
    assert len(driver.host) == 3

    def no_listing() -> list[Plugged]:
        raise AssertionError("DEL listed the host's attachments")

    driver.plugged = no_listing  # type: ignore[method-assign]
    req = body("DEL", str(tmp_path / "netns-1"), container="c1")
    req["args"]["K8S_POD_NAME"] = "pod-1"
    assert await service.handle(req) is None
    assert len(driver.host) == 2
    del driver.plugged  # a repeated DEL (no record any more) looks at the host: still fine
    assert await service.handle(req) is None
    assert len(driver.host) == 2
