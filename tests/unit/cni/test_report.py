"""The daemon's report of ADD success (``PluggedReporter``, ``CniService(on_added=...)``):
an annotation on the pod's KuryrPort, written after ADD answered, never its status."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kuryr_k8s.cni.binding import Attachment, Drivers
from kuryr_k8s.cni.daemon.report import PluggedReporter, RepairReporter
from kuryr_k8s.cni.daemon.server import Metrics
from kuryr_k8s.cni.daemon.service import CniService
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.events import EventRecorder
from kuryr_k8s.model.kuryrport import PLUGGED_ANNOTATION
from unit.cni.fakes import FakeDriver, FakeVifs, make_vif
from unit.cni.test_service import FAST, body
from unit.k8s.fakeapi import FakeApi

pytestmark = pytest.mark.unit

KPS = "/apis/openstack.org/v1/kuryrports"


@pytest.fixture
def netns(tmp_path: Path) -> str:
    path = tmp_path / "netns"
    path.write_text("")
    return str(path)


@pytest.fixture
def api() -> FakeApi:
    api = FakeApi()
    api.seed(
        KPS,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrPort",
            "metadata": {"name": "pod-a", "namespace": "ns"},
            "spec": {"podUid": "u1", "podNodeName": "node1"},
            "status": {"state": "Active"},
        },
    )
    return api


@pytest.fixture
async def client(api: FakeApi) -> AsyncIterator[KubeClient]:
    async with api.client() as c:
        yield c


def stored(api: FakeApi, name: str = "pod-a") -> dict[str, Any]:
    return api.objects[KPS][("ns", name)]


def reported(api: FakeApi) -> dict[str, Any] | None:
    raw = stored(api)["metadata"].get("annotations", {}).get(PLUGGED_ANNOTATION)
    return None if raw is None else dict(json.loads(raw))


async def test_a_successful_add_is_reported_on_the_kuryrport(
    api: FakeApi, client: KubeClient, netns: str
) -> None:
    reporter = PluggedReporter(client, "node1")
    vifs, driver = FakeVifs(), FakeDriver()
    service = CniService(vifs, Drivers([driver]), FAST, on_added=reporter.report)
    vifs.put("ns/pod-a", make_vif())
    status_before = stored(api)["status"]
    before = time.time()
    result = await service.handle(body("ADD", netns, container="c7"))
    after = time.time()
    assert result is not None and result["interfaces"][0]["name"] == "eth0"
    await reporter.close()
    report = reported(api)
    assert report is not None
    assert (report["node"], report["container"]) == ("node1", "c7")
    assert before <= report["at"] <= after + 1e-6  # sub-second wall time
    assert 0 <= report["addSeconds"] <= after - before + 1e-6
    assert stored(api)["status"] == status_before  # the status is the controller's
    assert reporter.failures == 0


async def test_a_failed_add_is_not_reported(api: FakeApi, client: KubeClient, netns: str) -> None:
    reporter = PluggedReporter(client, "node1")
    vifs, driver = FakeVifs(), FakeDriver()
    driver.fail_plug = OSError("no veth for you")
    service = CniService(vifs, Drivers([driver]), FAST, on_added=reporter.report)
    vifs.put("ns/pod-a", make_vif())
    with pytest.raises(Exception, match="no veth"):
        await service.handle(body("ADD", netns))
    await reporter.close()
    assert reported(api) is None


async def test_a_report_that_cannot_be_written_is_counted_not_raised(
    api: FakeApi, client: KubeClient
) -> None:
    reporter = PluggedReporter(client, "node1")
    reporter.report(Attachment("c1", "eth0", "/x", "ns", "no-such-pod"), 0.25)  # not awaited
    await reporter.close()
    assert reporter.failures == 1  # no KuryrPort: nothing to annotate
    api.fail_next(503, "ServiceUnavailable")
    reporter.report(Attachment("c2", "eth0", "/x", "ns", "pod-a"), 0.5)
    await reporter.close()
    assert reporter.failures == 2 and reported(api) is None  # never retried into a burst
    reporter.report(Attachment("c3", "eth0", "/x", "ns", "pod-a"), 0.5)
    await reporter.close()
    assert reporter.failures == 2
    assert (reported(api) or {}).get("container") == "c3"


async def test_a_replug_is_told_on_the_pod_and_counted(
    api: FakeApi, client: KubeClient, netns: str
) -> None:
    api.seed(
        "/api/v1/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-a", "namespace": "ns"}},
    )
    metrics = Metrics()
    repairs = RepairReporter(client, EventRecorder(client, "kuryr-daemon"), metrics.replugs)
    vifs, driver = FakeVifs(), FakeDriver()
    service = CniService(vifs, Drivers([driver]), FAST, repairs=repairs)
    vif = make_vif()
    vifs.put("ns/pod-a", vif)
    await service.handle(body("ADD", netns))
    driver.host.clear()
    await service.repair()
    await service.repair()  # nothing lost any more: nothing told
    await repairs.close()
    events = sorted(
        api.objects.get("/api/v1/events", {}).values(), key=lambda e: e["metadata"]["name"]
    )
    told = [(e["type"], e["reason"], e["involvedObject"]["name"]) for e in events]
    assert told == [("Warning", "PortDown", "pod-a"), ("Normal", "PortRecovered", "pod-a")]
    assert vif.port_id in events[0]["message"]
    replugs = metrics.registry.get_sample_value(
        "kuryr_cni_replugs_total", {"vif_type": "ovs", "outcome": "replugged"}
    )
    assert replugs == 1
