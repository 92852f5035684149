"""``kuryr daemon``: settings, and the composition root that wires the daemon together.

Start order: KuryrPort informer (wait for its first list, bounded) → reconcile host state
→ serve. Requests are therefore never answered from an empty cache, and attachments of
pods that went away while the daemon was down are removed before new ones are made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kuryr_k8s.cni.binding import BindingDriver, Drivers
from kuryr_k8s.cni.daemon.report import PluggedReporter
from kuryr_k8s.cni.daemon.server import DaemonServer, Metrics
from kuryr_k8s.cni.daemon.service import CniService, ServiceSettings
from kuryr_k8s.cni.daemon.vifs import ApiPods, KuryrPortVifs, node_informer
from kuryr_k8s.cni.host import vlan
from kuryr_k8s.cni.host.ovs import Ovsdb
from kuryr_k8s.cni.ovs_binding import OvsBinding
from kuryr_k8s.cni.vlan_binding import VlanBinding
from kuryr_k8s.cni.wire import DEFAULT_SOCKET
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.config import KubeSettings, load_incluster, load_kubeconfig
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError, KuryrError

LOG = logging.getLogger(__name__)
SECTION = "cni_daemon"


@dataclass(frozen=True)
class DaemonSettings:
    node_name: str = field(default_factory=socket.gethostname)
    """This node's name: only KuryrPorts labelled ``kuryr.openstack.org/nodeName=<it>``
    are watched. With OVN it must equal the chassis hostname the ports are bound to."""
    socket_path: Path = Path(DEFAULT_SOCKET)
    """Unix socket of the CNI API (the conflist's ``daemonSocket``)."""
    metrics_address: str | None = "127.0.0.1:8091"
    """``host:port`` for /healthz, /readyz and /metrics; empty disables it."""
    ovsdb_connection: str = "unix:/run/openvswitch/db.sock"
    """The local Open_vSwitch database (``unix:`` or ``tcp:``). Empty: this node binds no
    ``ovs`` VIFs (a VM worker that only has nested pods)."""
    link_iface: str | None = None
    """``[binding] link_iface`` (upstream name): the VM's NIC that carries the trunk, for
    ``vlan`` VIFs. None: the NIC of the IPv4 default route."""
    bridge: str = "br-int"
    """Integration bridge used when a VIF names none."""
    kubeconfig: Path | None = None
    """Kubeconfig; none means in-cluster service-account configuration."""
    sync_timeout: float = 30.0
    """Seconds to wait at start for the first KuryrPort list before serving anyway."""
    service: ServiceSettings = field(default_factory=ServiceSettings)

    @classmethod
    def from_config(cls, conf: ConfigFile) -> DaemonSettings:
        default = cls()
        metrics = conf.get_str(SECTION, "metrics_address", default.metrics_address or "")
        kubeconfig = conf.get_str("kubernetes", "kubeconfig", "")
        settings = cls(
            node_name=conf.get_str(SECTION, "node_name", default.node_name),
            socket_path=Path(conf.get_str(SECTION, "socket_path", str(default.socket_path))),
            metrics_address=metrics or None,
            ovsdb_connection=conf.get_str(SECTION, "ovsdb_connection", default.ovsdb_connection),
            bridge=conf.get_str(SECTION, "bridge", default.bridge),
            link_iface=conf.get_str("binding", "link_iface") or None,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            sync_timeout=conf.get_float(SECTION, "sync_timeout", default.sync_timeout),
            service=ServiceSettings(
                vif_timeout=conf.get_float(SECTION, "vif_annotation_timeout", 60.0),
                ready_timeout=conf.get_float(SECTION, "ready_timeout", 60.0),
            ),
        )
        conf.tolerate("binding", "driver")
        conf.reject_unknown()
        return settings


def node_drivers(settings: DaemonSettings, ovsdb: Ovsdb | None) -> list[BindingDriver]:
    """The binding drivers this node can run, picked from what it has: ``ovs`` when an
    OVSDB connection is configured, ``vlan`` when the kernel can make 802.1Q devices (a VM
    worker). A VIF of a kind the node cannot bind is answered with CNI error 100."""
    drivers: list[BindingDriver] = []
    if ovsdb is not None:
        drivers.append(OvsBinding(ovsdb, settings.node_name, default_bridge=settings.bridge))
    if vlan.vlan_supported() or settings.link_iface:
        drivers.append(VlanBinding(settings.node_name, link_iface=settings.link_iface))
    if not drivers:
        raise ConfigError(
            "this node can bind nothing: [cni_daemon] ovsdb_connection is empty and the "
            "kernel has no 8021q (VLAN) support; set ovsdb_connection for side-by-side pods, "
            "or load 8021q on a VM worker"
        )
    return drivers


def kube_settings(settings: DaemonSettings) -> KubeSettings:
    if settings.kubeconfig is not None:
        return load_kubeconfig(settings.kubeconfig)
    return load_incluster()


async def run(settings: DaemonSettings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; cleans up its connections and sockets."""
    ovsdb = Ovsdb(settings.ovsdb_connection) if settings.ovsdb_connection else None
    drivers = Drivers(node_drivers(settings, ovsdb))
    client = KubeClient.from_settings(kube_settings(settings))
    informer = node_informer(client, settings.node_name)
    vifs = KuryrPortVifs(informer, ApiPods(client))
    reporter = PluggedReporter(client, settings.node_name)
    service = CniService(vifs, drivers, settings.service, on_added=reporter.report)

    def ready() -> str | None:
        if not informer.synced:
            return "KuryrPort cache not synced"
        problems = [p for d in drivers.all() if (p := d.healthy())]
        return "; ".join(problems) or None

    server = DaemonServer(service, Metrics(), ready)
    watch = asyncio.create_task(informer.run(), name="kuryrport-informer")
    try:
        try:
            await asyncio.wait_for(informer.wait_synced(), settings.sync_timeout)
        except TimeoutError:
            LOG.warning("KuryrPort list not done in %gs; serving anyway", settings.sync_timeout)
        try:
            removed = await service.reconcile()
            LOG.info("reconciled host state: removed %d stale attachment(s)", len(removed))
        except KuryrError as exc:  # e.g. OVSDB down: serve anyway, /readyz says why
            LOG.error("could not reconcile host state at start: %s", exc)
        await server.start(settings.socket_path, settings.metrics_address)
        LOG.info(
            "kuryr-daemon for node %s listening on %s", settings.node_name, settings.socket_path
        )
        await stop.wait()
    finally:
        await server.stop()
        await reporter.close()
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await client.aclose()
        if ovsdb is not None:
            await asyncio.to_thread(ovsdb.close)
        settings.socket_path.unlink(missing_ok=True)
