"""DEL of a pod upstream kuryr-kubernetes plugged, after our takeover: its attachment has
no stamp of ours, so the daemon finds it through the pod's adopted VIF, and removes only
what the driver proves to be that port's."""

from __future__ import annotations

import dataclasses

import pytest

from kuryr_k8s.cni.binding import Attachment, Drivers, Plugged
from kuryr_k8s.cni.daemon.service import CniService, ServiceSettings
from kuryr_k8s.model.vif import Vif
from unit.cni.fakes import FakeDriver, FakeVifs, make_vif

pytestmark = pytest.mark.unit

UPSTREAM_VETH = "tap5f1e2d3c-4b"


class HostWithUpstream(FakeDriver):
    """``host`` as FakeDriver's, plus upstream's devices (unstamped: not in ``plugged()``)
    as host_ifname -> port id, with the driver's safety rule: only the VIF's own port."""

    def __init__(self) -> None:
        super().__init__(cluster_id="cluster-a")
        self.upstream: dict[str, str] = {}

    def unplug_adopted(self, att: Attachment, vif: Vif) -> bool:
        if self.upstream.get(vif.host_ifname) != vif.port_id:
            return False
        del self.upstream[vif.host_ifname]
        return True


def _del(container: str = "c-upstream") -> dict[str, object]:
    return {
        "command": "DEL",
        "containerId": container,
        "netns": "",
        "ifname": "eth0",
        "args": {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "pod-a"},
        "path": "",
        "config": {"cniVersion": "1.0.0", "name": "kuryr"},
    }


def _service(vif: Vif) -> tuple[CniService, HostWithUpstream]:
    vifs, driver = FakeVifs(), HostWithUpstream()
    vifs.put("ns/pod-a", vif)
    settings = ServiceSettings(vif_timeout=0.3, ready_timeout=0.3, poll_interval=0.01)
    return CniService(vifs, Drivers([driver]), settings, cluster_id="cluster-a"), driver


async def test_del_removes_upstreams_device_named_by_the_adopted_vif() -> None:
    vif = dataclasses.replace(make_vif(), host_name=UPSTREAM_VETH, adopted=True)
    service, driver = _service(vif)
    driver.upstream = {UPSTREAM_VETH: vif.port_id, "tap-other": "another-port"}
    assert await service.handle(_del()) is None
    assert driver.upstream == {"tap-other": "another-port"}
    assert await service.handle(_del()) is None  # idempotent


async def test_del_leaves_a_device_that_is_not_the_vifs_port() -> None:
    vif = dataclasses.replace(make_vif(), host_name=UPSTREAM_VETH, adopted=True)
    service, driver = _service(vif)
    driver.upstream = {UPSTREAM_VETH: "another-port"}
    assert await service.handle(_del()) is None
    assert driver.upstream == {UPSTREAM_VETH: "another-port"}


async def test_vif_not_adopted_means_no_unstamped_device_is_touched() -> None:
    vif = make_vif()
    service, driver = _service(vif)
    driver.upstream = {vif.host_ifname: vif.port_id}
    driver.host["tap-mine"] = Plugged("c-mine", "eth0", "tap-mine", cluster="cluster-a")
    assert await service.handle(_del()) is None
    assert driver.upstream == {vif.host_ifname: vif.port_id}
    assert "tap-mine" in driver.host
