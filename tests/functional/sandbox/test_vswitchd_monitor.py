"""A crashed ovs-vswitchd comes back by itself, and traffic with it.

OVS 3.1.0's userspace conntrack can abort ovs-vswitchd (``conntrack.c:1063`` assertion,
docs/design/network-policy.md, "Known data-plane issues"). The sandbox runs it under
``--monitor`` as Debian's ``ovs-ctl`` does; this test aborts the daemon the way the
assertion does (SIGABRT) and checks that the monitor starts it again in place: the same
monitor, the bridges' tap devices and ``br-ex``'s address kept, and pods on br-int talking
again once ovn-controller has reinstalled the flows."""

from __future__ import annotations

import os
import signal

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.traffic import ping, tcp_echo
from kuryr_k8s.sandbox.openstack.services import OvsVswitchd
from kuryr_k8s.sandbox.process import run, wait_until

pytestmark = pytest.mark.functional


def _addresses(dev: str) -> list[str]:
    out = run(["ip", "-o", "-4", "addr", "show", "dev", dev], check=False).stdout
    return sorted(line.split()[3] for line in out.splitlines())


def test_aborted_vswitchd_is_restarted_in_place_and_traffic_flows_again(
    neutron: NeutronTracker, sandbox: Sandbox, netns_factory: object
) -> None:
    subnet = neutron.conn.network.get_subnet(sandbox.topo.subnet1_id)
    ports = [
        neutron.port(
            sandbox.topo.net1_id,
            name=f"kt-monitor-{n}",
            device_owner="compute:kuryr",
            binding_host_id=sandbox.settings.hostname,
            security_group_ids=[sandbox.topo.default_sg_id],
        )
        for n in "ab"
    ]
    a, b = (netns_factory(p, subnet) for p in ports)  # type: ignore[operator]
    for p in ports:
        neutron.wait_port_status(p.id, "ACTIVE")  # type: ignore[attr-defined]
    assert ping(a.netns, b.ip).returncode == 0

    vswitchd = OvsVswitchd(sandbox.ctx)
    daemon, monitors = vswitchd.pid(), vswitchd.monitor_pids()
    assert daemon is not None
    assert monitors, (
        "this sandbox's ovs-vswitchd runs without its --monitor parent (started by an older "
        "kuryr): run `kuryr sandbox down` and `kuryr sandbox up`"
    )
    br_ex = _addresses("br-ex")

    os.kill(daemon, signal.SIGABRT)  # what the conntrack assertion does

    wait_until(
        lambda: vswitchd.pid() not in (None, daemon), timeout=60, what="ovs-vswitchd restarted"
    )
    assert vswitchd.monitor_pids() == monitors
    assert _addresses("br-ex") == br_ex
    # ovn-controller reconnects and reinstalls br-int's flows: traffic flows again
    wait_until(lambda: ping(a.netns, b.ip, count=1).returncode == 0, timeout=120, what="ping")
    assert tcp_echo(b.netns, b.ip, a.netns, payload="after-restart") == "echo:after-restart"
