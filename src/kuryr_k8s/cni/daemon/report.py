"""Tell the controller that a pod's ADD succeeded (for its latency histogram).

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

from kuryr_k8s.cni.binding import Attachment
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.resources import KURYRPORTS
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.model.kuryrport import PLUGGED_ANNOTATION

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
