"""Pieces of the isolated Services tests (``test_services_crash.py``,
``test_source_ranges.py``): a controller of our own serving only Services, and
netns on the pod subnet standing in for pods (the plumbing our CNI does)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.controller.harness import ControllerProcess, free_port
from kuryr_k8s.sandbox.kuryr_components import services_only_conf
from kuryr_k8s.sandbox.openstack import hostplug

LOG_DIR = Path("/tmp/kuryr-services-e2e")


def services_controller(
    sb: Sandbox, kubeconfig: Path, workdir: Path, cluster_id: str
) -> ControllerProcess:
    """A controller (not started) with only the Service handlers and its own cluster id,
    its kuryr.conf in ``workdir``, its log under :data:`LOG_DIR`."""
    health = free_port()
    (workdir / "kuryr.conf").write_text(services_only_conf(sb.ctx, sb.topo, cluster_id, health))
    log = LOG_DIR / cluster_id / "controller.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return ControllerProcess(workdir / "kuryr.conf", kubeconfig, log, health)


def pod_netns(
    sb: Sandbox,
    neutron: NeutronTracker,
    netns_factory: Callable[..., hostplug.Plugged],
    name: str,
) -> tuple[Any, hostplug.Plugged]:
    """A port on the pod subnet with the default group, plugged into a netns, ACTIVE."""
    port = neutron.port(
        sb.topo.net1_id,
        name=name,
        device_owner="compute:test",
        binding_host_id=sb.settings.hostname,
        security_group_ids=[sb.topo.default_sg_id],
    )
    plugged = netns_factory(port, sb.conn.network.get_subnet(sb.topo.subnet1_id))
    neutron.wait_port_status(port.id, "ACTIVE")
    return port, plugged
