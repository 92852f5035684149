"""What the daemon does for each CNI command, and the start-up reconcile of host state.

``ADD``: wait for the pod's VIF in the KuryrPort cache, plug it with the driver of its
``vifType``, wait until traffic can flow, answer the result. ``DEL``: unplug whatever this
(container, ifname) has; nothing is fine. ``CHECK``: compare host state with the VIF and
``prevResult``. ``STATUS``: can we plug? ``GC``: unplug what is not in the valid list.

Requests for the same container are serialised; different containers run in parallel.
Host work runs in threads (netlink and OVSDB calls block).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kuryr_k8s.cni import spec
from kuryr_k8s.cni.binding import Attachment, BindingDriver, Drivers, Plugged
from kuryr_k8s.cni.daemon.vifs import VifSource
from kuryr_k8s.cni.errors import HostError, InvalidRequest, UnknownContainer, VifTimeout
from kuryr_k8s.model.vif import Vif

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    vif_timeout: float = 60.0
    """Seconds ADD waits for the pod's VIF to appear in its KuryrPort (upstream:
    ``[cni_daemon] vif_annotation_timeout``)."""
    ready_timeout: float = 60.0
    """Seconds ADD waits, once plugged, for ``ovn-installed`` (or the VIF's ``active``)."""
    poll_interval: float = 0.02
    """How often the readiness of a plugged port is polled."""


Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _KeyLock:
    """A per-container lock, dropped when its last user is done."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class CniService:
    def __init__(
        self,
        vifs: VifSource,
        drivers: Drivers,
        settings: ServiceSettings | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        on_added: Callable[[Attachment, float], None] | None = None,
    ) -> None:
        self.vifs = vifs
        self._on_added = on_added
        """Told (attachment, seconds ADD took) after each successful ADD (not awaited)."""
        self.drivers = drivers
        self.settings = settings or ServiceSettings()
        self._sleep = sleep
        self._locks: dict[str, _KeyLock] = {}

    async def handle(self, body: Any) -> dict[str, Any] | None:
        """Run one request of the wire protocol; raises our errors or :class:`spec.CniError`."""
        req = _request(body)
        command = req["command"]
        if command == "STATUS":
            await self.status()
            return None
        if command == "GC":
            await self.gc(req["config"])
            return None
        att = _attachment(req)
        key = self._locks.setdefault(att.container_id, _KeyLock())
        key.users += 1
        try:
            async with key.lock:
                if command == "ADD":
                    return await self.add(att, req["cniVersion"])
                if command == "DEL":
                    await self.delete(att)
                    return None
                await self.check(att, req["config"])
                return None
        finally:
            key.users -= 1
            if not key.users:
                del self._locks[att.container_id]

    async def add(self, att: Attachment, cni_version: str) -> dict[str, Any]:
        started = time.monotonic()
        if not await asyncio.to_thread(Path(att.netns).exists):
            raise UnknownContainer(f"network namespace {att.netns} does not exist")
        vif = await self.vifs.wait_vif(
            att.pod_namespace, att.pod_name, att.ifname, att.pod_uid, self.settings.vif_timeout
        )
        driver = self.drivers.for_vif(vif)
        await asyncio.to_thread(driver.plug, att, vif)
        try:
            await self._wait_ready(driver, att, vif)
        except BaseException:
            await asyncio.to_thread(
                driver.unplug, Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns)
            )
            raise
        if self._on_added is not None:
            self._on_added(att, time.monotonic() - started)
        return spec.convert_result(result(att, vif), cni_version)

    async def _wait_ready(self, driver: BindingDriver, att: Attachment, vif: Vif) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while True:
            ready = await asyncio.to_thread(driver.ready, att, vif)
            if ready is None:
                current = self.vifs.current_vif(att.pod_namespace, att.pod_name, att.ifname)
                ready = bool(current and current.active)
            if ready:
                return
            if time.monotonic() >= deadline:
                raise VifTimeout(
                    f"pod {att.pod_key}: port {vif.port_id} plugged, but OVN did not mark it "
                    f"ovn-installed (nor did its VIF become active) within "
                    f"{self.settings.ready_timeout:g} s"
                )
            await self._sleep(self.settings.poll_interval)

    async def delete(self, att: Attachment) -> None:
        for driver, plugged in await asyncio.to_thread(self.drivers.plugged):
            if (plugged.container_id, plugged.ifname) == (att.container_id, att.ifname):
                LOG.info("DEL %s %s: unplugging %s", att.pod_key, att.ifname, plugged.host_ifname)
                await asyncio.to_thread(driver.unplug, plugged)

    async def check(self, att: Attachment, config: dict[str, Any]) -> None:
        mine = [
            p
            for _, p in await asyncio.to_thread(self.drivers.plugged)
            if (p.container_id, p.ifname) == (att.container_id, att.ifname)
        ]
        if not mine:
            raise HostError(f"container {att.container_id} has no {att.ifname} plugged here")
        vif = self.vifs.current_vif(att.pod_namespace, att.pod_name, att.ifname)
        if vif is None:
            raise HostError(f"pod {att.pod_key} has no VIF for {att.ifname} in its KuryrPort")
        problems = _compare_prev_result(att, vif, config.get("prevResult") or {})
        problems += await asyncio.to_thread(self.drivers.for_vif(vif).check, att, vif)
        if problems:
            raise HostError("; ".join(problems))

    async def status(self) -> None:
        problems = [p for d in self.drivers.all() if (p := await asyncio.to_thread(d.healthy))]
        if not self.vifs.synced:
            problems.append("the KuryrPort cache has not synced with the Kubernetes API yet")
        if problems:
            raise spec.CniError(
                spec.PLUGIN_NOT_AVAILABLE, "kuryr is not ready", "; ".join(problems)
            )

    async def gc(self, config: dict[str, Any]) -> None:
        items = config.get("cni.dev/valid-attachments", config.get("cni.dev/attachments")) or []
        valid = {(i["containerID"], i["ifname"]) for i in items}
        for driver, plugged in await asyncio.to_thread(self.drivers.plugged):
            if (plugged.container_id, plugged.ifname) not in valid:
                LOG.info("GC: unplugging %s (%s)", plugged.host_ifname, plugged.container_id)
                await asyncio.to_thread(driver.unplug, plugged)

    async def reconcile(self) -> list[str]:
        """At start: unplug attachments whose netns or pod is gone; returns what went.

        Attachments whose pod is known and whose namespace exists are left untouched, so
        running pods keep their traffic. When the cache has not synced, only the netns test
        applies (a missing KuryrPort proves nothing then).
        """
        removed = []
        for driver, plugged in await asyncio.to_thread(self.drivers.plugged):
            pod_gone = self.vifs.synced and not self.vifs.has_pod(plugged.pod_key)
            if plugged.netns_exists() and not pod_gone:
                continue
            LOG.info(
                "reconcile: unplugging %s (pod %s, netns %s)",
                plugged.host_ifname,
                plugged.pod_key or "?",
                plugged.netns or "?",
            )
            await asyncio.to_thread(driver.unplug, plugged)
            removed.append(plugged.host_ifname)
        return removed


def result(att: Attachment, vif: Vif) -> dict[str, Any]:
    """The ADD result in the 1.x shape (``spec.convert_result`` renders older versions)."""
    ips = []
    for ip in vif.ips:
        entry: dict[str, Any] = {"address": ip.interface, "interface": 0}
        if ip.gateway:
            entry["gateway"] = ip.gateway
        ips.append(entry)
    routes = [{"dst": r.destination, "gw": r.gateway} for r in vif.routes]
    for ip in vif.ips:
        if ip.gateway:
            routes.insert(0, {"dst": "0.0.0.0/0" if ip.version == 4 else "::/0", "gw": ip.gateway})
    dns: dict[str, Any] = {"nameservers": list(vif.dns_nameservers)} if vif.dns_nameservers else {}
    return {
        "interfaces": [
            {"name": att.ifname, "mac": vif.mac_address, "mtu": vif.mtu, "sandbox": att.netns}
        ],
        "ips": ips,
        "routes": routes,
        "dns": dns,
    }


def _compare_prev_result(att: Attachment, vif: Vif, prev: dict[str, Any]) -> list[str]:
    problems = []
    for iface in prev.get("interfaces") or []:
        if (
            isinstance(iface, dict)
            and iface.get("name") == att.ifname
            and str(iface.get("mac", "")).lower() != vif.mac_address
        ):
            problems.append(f"prevResult MAC {iface.get('mac')} is not the VIF's")
    want = {ip.interface for ip in vif.ips}
    for ip in prev.get("ips") or []:
        if isinstance(ip, dict) and ip.get("address") not in want:
            problems.append(f"prevResult address {ip.get('address')} is not the VIF's")
    return problems


def _request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request must be a JSON object", spec.DECODE_FAILURE)
    command = body.get("command")
    if command not in spec.COMMANDS or command == "VERSION":
        raise InvalidRequest(f"unknown command {command!r}")
    config = body.get("config")
    if not isinstance(config, dict):
        raise InvalidRequest("config must be an object", spec.INVALID_NETWORK_CONFIG)
    out = dict(body)
    out["cniVersion"] = spec.check_version(config.get("cniVersion"))
    if command == "GC":
        items = config.get("cni.dev/valid-attachments", config.get("cni.dev/attachments"))
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("containerID"), str) and "ifname" in i
            for i in items
        ):
            raise InvalidRequest("GC needs cni.dev/valid-attachments", spec.INVALID_NETWORK_CONFIG)
    return out


def _attachment(req: dict[str, Any]) -> Attachment:
    fields = {k: req.get(k) for k in ("containerId", "ifname", "netns")}
    if not all(isinstance(v, str) for v in fields.values()):
        raise InvalidRequest("containerId, ifname and netns must be strings")
    if not fields["containerId"] or not fields["ifname"]:
        raise InvalidRequest("containerId and ifname are required")
    args = req.get("args") or {}
    if not isinstance(args, dict):
        raise InvalidRequest("args must be an object")
    namespace, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    if req["command"] in ("ADD", "CHECK"):
        if not fields["netns"]:
            raise InvalidRequest("CNI_NETNS is required")
        if not namespace or not name:
            raise InvalidRequest("CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME")
    return Attachment(
        container_id=str(fields["containerId"]),
        ifname=str(fields["ifname"]),
        netns=str(fields["netns"]),
        pod_namespace=str(namespace),
        pod_name=str(name),
        pod_uid=str(args.get("K8S_POD_UID", "")),
    )
