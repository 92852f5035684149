"""``kuryr daemon``: settings, and the composition root that wires the daemon together.

Start order: KuryrPort informer (wait for its first list, bounded) → reconcile host state
→ serve, and re-plug lost attachments every ``repair_interval`` seconds. Requests are
therefore never answered from an empty cache, and attachments of pods that went away
while the daemon was down are removed before new ones are made (only this cluster's:
``docs/design/cni.md``, "Ownership").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kuryr_k8s.cni.binding import BindingDriver, Drivers
from kuryr_k8s.cni.daemon.report import PluggedReporter, RepairReporter
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
from kuryr_k8s.k8s.events import EventRecorder
from kuryr_k8s.model.config import ConfigFile
from kuryr_k8s.model.errors import ConfigError, KuryrError

LOG = logging.getLogger(__name__)
SECTION = "cni_daemon"
DEFAULT_CLUSTER_ID = "default"
"""The cluster id of a daemon whose kuryr.conf has no ``[neutron_defaults] cluster_id``."""
_CLUSTER_ID = re.compile(r"[A-Za-z0-9_.:/@+=-]+")


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
    cluster_id: str = DEFAULT_CLUSTER_ID
    """``[neutron_defaults] cluster_id`` (the controller's): stamped on every attachment
    this daemon makes; reconcile, GC and re-plug touch only attachments carrying it, so
    two clusters' daemons can share a host. One word (no spaces)."""
    repair_interval: float = 10.0
    """Seconds between two passes looking for lost attachments to re-plug (0: never)."""
    service: ServiceSettings = field(default_factory=ServiceSettings)

    @classmethod
    def from_config(cls, conf: ConfigFile) -> DaemonSettings:
        default = cls()
        metrics = conf.get_str(SECTION, "metrics_address", default.metrics_address or "")
        kubeconfig = conf.get_str("kubernetes", "kubeconfig", "")
        cluster_id = conf.get_str("neutron_defaults", "cluster_id", "") or DEFAULT_CLUSTER_ID
        if not _CLUSTER_ID.fullmatch(cluster_id):
            raise ConfigError(
                f"{conf.source}: [neutron_defaults] cluster_id = {cluster_id!r}: the daemon "
                "stamps it on host interfaces as one word: use letters, digits and _.:/@+=-"
            )
        settings = cls(
            node_name=conf.get_str(SECTION, "node_name", default.node_name),
            socket_path=Path(conf.get_str(SECTION, "socket_path", str(default.socket_path))),
            metrics_address=metrics or None,
            ovsdb_connection=conf.get_str(SECTION, "ovsdb_connection", default.ovsdb_connection),
            bridge=conf.get_str(SECTION, "bridge", default.bridge),
            link_iface=conf.get_str("binding", "link_iface") or None,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            sync_timeout=conf.get_float(SECTION, "sync_timeout", default.sync_timeout),
            cluster_id=cluster_id,
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
        drivers.append(
            OvsBinding(
                ovsdb,
                settings.node_name,
                default_bridge=settings.bridge,
                cluster_id=settings.cluster_id,
            )
        )
    if vlan.vlan_supported() or settings.link_iface:
        drivers.append(
            VlanBinding(
                settings.node_name, link_iface=settings.link_iface, cluster_id=settings.cluster_id
            )
        )
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


HOST_THREADS = 32
"""Threads for host work (netlink, OVSDB, netns). A plug spends most of its time blocked
in the kernel or waiting for ovs-vswitchd, not on the CPU; with asyncio's default pool
(6 threads on 2 cores) a burst of 200 ADDs plugged ~11 ports a second, and OVS port adds
waiting together are committed together (``Ovsdb.ensure_port``)."""


async def run(settings: DaemonSettings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; cleans up its connections and sockets."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=HOST_THREADS, thread_name_prefix="kuryr-host")
    )
    ovsdb = Ovsdb(settings.ovsdb_connection) if settings.ovsdb_connection else None
    drivers = Drivers(node_drivers(settings, ovsdb))
    client = KubeClient.from_settings(kube_settings(settings))
    informer = node_informer(client, settings.node_name)
    vifs = KuryrPortVifs(informer, ApiPods(client))
    reporter = PluggedReporter(client, settings.node_name)
    metrics = Metrics()
    repairs = RepairReporter(
        client, EventRecorder(client, "kuryr-daemon", host=settings.node_name), metrics.replugs
    )
    service = CniService(
        vifs,
        drivers,
        settings.service,
        on_added=reporter.report,
        cluster_id=settings.cluster_id,
        repairs=repairs,
    )
    if settings.cluster_id == DEFAULT_CLUSTER_ID:
        LOG.warning(
            "no [neutron_defaults] cluster_id: stamping attachments with cluster id %r; "
            "set it (as the controller's) when several clusters share this host",
            DEFAULT_CLUSTER_ID,
        )

    def ready() -> str | None:
        if not informer.synced:
            return "KuryrPort cache not synced"
        problems = [p for d in drivers.all() if (p := d.healthy())]
        return "; ".join(problems) or None

    server = DaemonServer(service, metrics, ready)
    watch = asyncio.create_task(informer.run(), name="kuryrport-informer")
    repair: asyncio.Task[None] | None = None
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
        if settings.repair_interval > 0:
            repair = asyncio.create_task(
                _repair_loop(service, settings.repair_interval), name="re-plug"
            )
        await server.start(settings.socket_path, settings.metrics_address)
        LOG.info(
            "kuryr-daemon for node %s listening on %s", settings.node_name, settings.socket_path
        )
        await stop.wait()
    finally:
        if repair is not None:
            repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repair
        await server.stop()
        await reporter.close()
        await repairs.close()
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await client.aclose()
        if ovsdb is not None:
            await asyncio.to_thread(ovsdb.close)
        settings.socket_path.unlink(missing_ok=True)


async def _repair_loop(service: CniService, interval: float) -> None:
    """Re-plug lost attachments every ``interval`` seconds; a failed pass is logged."""
    while True:
        await asyncio.sleep(interval)
        try:
            await service.repair()
        except KuryrError as exc:
            LOG.error("re-plug pass failed: %s", exc)
