"""Tell the controller that a pod's ADD succeeded (for its latency histogram), and tell
the pod's owner when its attachment was lost and plugged again (:class:`RepairReporter`).

After a successful ADD the daemon writes the annotation
:data:`~kuryr_k8s.model.kuryrport.PLUGGED_ANNOTATION` on the pod's KuryrPort (a merge patch
of the main resource, never its status, which only the controller writes): the wall time
at which the interface was ready (``ovn-installed`` or VIF active), the node and how long
ADD took. It runs in the background, after ADD has answered the runtime, so it costs the
pod nothing; a failed write is logged and counted, never retried into a burst.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from prometheus_client import Counter

from kuryr_k8s.cni.binding import Attachment
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.events import EventKind, EventRecorder
from kuryr_k8s.k8s.resources import KURYRPORTS, PODS
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.model.kuryrport import PLUGGED_ANNOTATION
from kuryr_k8s.model.vif import Vif

LOG = logging.getLogger(__name__)


class PluggedReporter:
    def __init__(self, client: KubeClient, node: str) -> None:
        self._client = client
        self._node = node
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def report(self, att: Attachment, add_seconds: float) -> None:
        """Schedule the annotation write for ``att``'s pod (ADD just succeeded)."""
        value = json.dumps(
            {
                "at": round(time.time(), 6),
                "node": self._node,
                "container": att.container_id,
                "addSeconds": round(add_seconds, 6),
            },
            separators=(",", ":"),
        )
        task = asyncio.create_task(self._write(att, value), name=f"plugged {att.pod_key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, att: Attachment, value: str) -> None:
        patch = {"metadata": {"annotations": {PLUGGED_ANNOTATION: value}}}
        try:
            await self._client.patch(KURYRPORTS, att.pod_name, patch, att.pod_namespace)
        except KuryrError as exc:
            self.failures += 1
            LOG.warning("could not report ADD success of %s: %s", att.pod_key, exc)

    async def close(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)


class RepairReporter:
    """What the daemon tells about a re-plug (``service.RepairListener``): a Warning Event
    ``PortDown`` on the pod when its attachment is found lost, a Normal ``PortRecovered``
    once it is plugged again (one of each per loss), and ``kuryr_cni_replugs_total``."""

    def __init__(self, client: KubeClient, events: EventRecorder, counter: Counter) -> None:
        self._client = client
        self._events = events
        self._counter = counter
        self._tasks: set[asyncio.Task[None]] = set()

    def lost(self, att: Attachment, vif: Vif, why: str) -> None:
        message = (
            f"port {vif.port_id} ({vif.host_ifname}) stopped carrying traffic: {why}; the "
            f"kuryr daemon is plugging it again with the same addresses (if this repeats, "
            f"look for what deletes the pod's interfaces on the node)"
        )
        self._emit(att, "Warning", "PortDown", message)

    def replugged(self, att: Attachment, vif: Vif) -> None:
        self._counter.labels(vif.vif_type, "replugged").inc()
        self._emit(att, "Normal", "PortRecovered", f"port {vif.port_id} plugged again")

    def failed(self, att: Attachment, vif: Vif, error: str) -> None:
        self._counter.labels(vif.vif_type, "failed").inc()

    def _emit(self, att: Attachment, kind: EventKind, reason: str, message: str) -> None:
        task = asyncio.create_task(self._write(att, kind, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, att: Attachment, kind: EventKind, reason: str, message: str) -> None:
        try:
            pod = await self._client.get(PODS, att.pod_name, att.pod_namespace)
        except KuryrError as exc:
            LOG.warning("no %s event for %s: cannot read the pod: %s", reason, att.pod_key, exc)
            return
        await self._events.emit(pod, reason, message, type=kind)

    async def close(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
