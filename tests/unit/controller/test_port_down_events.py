"""Port-down Events of the KuryrPort reconciler (issue 15), over the pooled provider and
the batched status watcher of ``test_kuryrport_ledger.py`` (its ``setup`` fixture)."""

from __future__ import annotations

import pytest

from unit.controller.test_kuryrport_ledger import KEY, Setup, setup  # noqa: F401
from unit.controller.test_reconcilers import condition

pytestmark = pytest.mark.unit


async def test_an_active_port_that_goes_down_warns_once_and_recovers(
    setup: Setup,  # noqa: F811
) -> None:
    """Issue 15: Neutron/OVN reports a running pod's port DOWN (its attachment vanished):
    a Warning Event and an ``Active`` condition saying so, a Normal Event when it is back;
    one of each per transition however often the key is reconciled."""
    await setup.k8s.add_pod("web")
    await setup.k8s.converge(KEY)
    pid = setup.port_of("web")
    setup.cloud.fake.ports[pid]["status"] = "ACTIVE"
    await setup.statuses.poll_once()
    await setup.k8s.converge(KEY)
    assert setup.statuses.watching == 1, "an ACTIVE port is still watched (lazily)"

    setup.cloud.fake.ports[pid]["status"] = "DOWN"
    assert await setup.statuses.poll_once() == 1
    for _ in range(3):
        await setup.k8s.converge(KEY)
    kp = setup.k8s.kp("web")
    assert kp is not None and kp["status"]["state"] == "Allocated"
    active = condition(kp, "Active")
    assert (active["status"], active["reason"]) == ("False", "PortWentDown")
    warnings = [e for e in setup.k8s.events.emitted if e[2] == "PortDown"]
    assert len(warnings) == 1 and warnings[0][1] == "Warning" and pid in warnings[0][3]

    setup.cloud.fake.ports[pid]["status"] = "ACTIVE"
    assert await setup.statuses.poll_once() == 1
    for _ in range(3):
        await setup.k8s.converge(KEY)
    kp = setup.k8s.kp("web")
    assert kp is not None and kp["status"]["state"] == "Active"
    reasons = setup.k8s.events.reasons(KEY)
    assert reasons.count("PortDown") == 1 and reasons.count("PortRecovered") == 1
    assert reasons.index("PortDown") < reasons.index("PortRecovered")
