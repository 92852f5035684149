"""Bad input against the real Neutron: a pod subnet Neutron does not know stops the
start naming the option; a subnet with no free address leaves the extra pods Failed with
Neutron's reason on the KuryrPort and as a Warning Event on the pod."""

from __future__ import annotations

import pytest

from fixtures.sandbox import NeutronTracker
from functional.controller.conftest import World
from functional.controller.harness import allocated, wait_for

pytestmark = pytest.mark.functional


def test_an_unknown_pod_subnet_refuses_to_start_naming_the_option(world: World) -> None:
    bogus = "00000000-0000-4000-8000-000000000000"
    ctl = world.start_controller(pod_subnet=bogus)
    assert ctl.proc is not None
    assert ctl.proc.wait(120) == 2
    log = ctl.log.read_text()
    assert f"[neutron_defaults] pod_subnet = {bogus}: no such subnet in Neutron" in log


def test_an_exhausted_subnet_is_reported_with_neutrons_reason(
    world: World, neutron: NeutronTracker
) -> None:
    net = neutron.network(name="kuryr-ctl-tiny")
    subnet = neutron.subnet(net.id, "10.99.0.0/29")  # 5 addresses for ports
    ctl = world.start_controller(pool=False, pod_subnet=subnet.id)
    ctl.wait_role("leader")
    names = [f"tiny-{i}" for i in range(7)]
    for n in names:
        world.kube.create_pod(n, world.node)

    def failed() -> list[dict[str, object]]:
        return [
            k for k in world.kube.kuryrports() if (k.get("status") or {}).get("state") == "Failed"
        ]

    wait_for(
        "5 allocated and 2 failed",
        lambda: sum(allocated(k) for k in world.kube.kuryrports()) == 5 and len(failed()) == 2,
    )
    for kp in failed():
        cond = next(c for c in kp["status"]["conditions"] if c["type"] == "Allocated")  # type: ignore[index, union-attr]
        assert cond["status"] == "False" and cond["reason"] == "NeutronError"
        assert "IP" in cond["message"] or "address" in cond["message"], cond["message"]
    warnings = [e for e in world.kube.events() if e["reason"] == "PortAllocationFailed"]
    assert {e["involvedObject"]["name"] for e in warnings} == {
        k["metadata"]["name"]
        for k in failed()  # type: ignore[index]
    }
    assert all(e["type"] == "Warning" for e in warnings)
    assert ctl.alive(), "a Neutron refusal is not a crash"
    for n in names:
        world.kube.delete_pod(n)
    wait_for("the pods to be gone", lambda: world.kube.pods() == [])
    wait_for("every port deleted", lambda: world.ports.all() == [])
