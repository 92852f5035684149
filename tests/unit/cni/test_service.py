"""The daemon's request logic over fakes: what ends up plugged, and which CNI code answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kuryr_k8s.cni import spec
from kuryr_k8s.cni.binding import Drivers, Plugged
from kuryr_k8s.cni.daemon.service import CniService, ServiceSettings
from kuryr_k8s.cni.errors import HostError, to_cni_error
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


def make(**kw: Any) -> tuple[CniService, FakeVifs, FakeDriver]:
    vifs, driver = FakeVifs(**kw), FakeDriver()
    return CniService(vifs, Drivers([driver]), FAST), vifs, driver


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
        driver.host[f"tap-{cid}"] = Plugged(cid, "eth0", f"tap-{cid}", netns, "ns/p")
    req = body("GC", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    req["config"]["cniVersion"] = "1.1.0"
    assert await service.handle(req) is None
    assert list(driver.host) == ["tap-keep"]


async def test_reconcile_keeps_live_pods_and_removes_the_rest(tmp_path: Path, netns: str) -> None:
    service, vifs, driver = make()
    vifs.put("ns/alive", make_vif())
    driver.host = {
        "tap-alive": Plugged("c1", "eth0", "tap-alive", netns, "ns/alive"),
        "tap-no-netns": Plugged("c2", "eth0", "tap-no-netns", str(tmp_path / "x"), "ns/alive"),
        "tap-no-pod": Plugged("c3", "eth0", "tap-no-pod", netns, "ns/deleted"),
        "tap-half": Plugged("c4", "eth0", "tap-half"),
    }
    removed = await service.reconcile()
    assert sorted(removed) == ["tap-half", "tap-no-netns", "tap-no-pod"]
    assert list(driver.host) == ["tap-alive"]


async def test_reconcile_before_sync_only_trusts_the_netns(netns: str) -> None:
    service, _, driver = make(synced=False)
    driver.host = {"tap-x": Plugged("c1", "eth0", "tap-x", netns, "ns/unknown")}
    assert await service.reconcile() == []


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
