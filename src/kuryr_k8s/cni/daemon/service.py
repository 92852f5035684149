"""What the daemon does for each CNI command, and the start-up reconcile of host state.

``ADD``: wait for the pod's VIF in the KuryrPort cache, plug it with the driver of its
``vifType``, wait until traffic can flow, answer the result. ``DEL``: unplug whatever this
(container, ifname) has; nothing is fine. ``CHECK``: compare host state with the VIF and
``prevResult``. ``STATUS``: can we plug? ``GC``: unplug what of this network is not in
the valid list.

**Ownership** (``docs/design/cni.md``): every attachment is stamped with the daemon's
cluster id and the CNI network name. Reconcile touches only attachments with our cluster
id, GC only those with our cluster id *and* the GC's network; attachments of another
cluster are never touched. Unstamped (legacy) attachments are still removed by a ``DEL``
naming their container, and by reconcile when they are provably dead (veth and netns both
gone), never by GC nor because our cache does not know their pod. Removing running
attachments is guarded (:meth:`CniService._guard`): on a cache that is not synced or is
empty, or when more than a small share of our live attachments would go, nothing live is
removed and what would have been is logged with the reason.

**Re-plug** (:meth:`CniService.repair`, run periodically): an attachment this daemon
plugged whose host side vanished while its pod's netns still exists is plugged again with
the same VIF (the runtime never calls ADD again for a running pod).

Requests for the same container are serialised (re-plug too); different containers run
in parallel. Host work runs in threads (netlink and OVSDB calls block).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kuryr_k8s.cni import spec
from kuryr_k8s.cni.binding import Attachment, BindingDriver, Drivers, Plugged
from kuryr_k8s.cni.daemon.vifs import VifSource
from kuryr_k8s.cni.errors import (
    HostError,
    InvalidRequest,
    UnknownContainer,
    UnsupportedVif,
    VifTimeout,
)
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.model.vif import Vif

LOG = logging.getLogger(__name__)
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""What the CNI spec allows as a network name (it is stamped on host interfaces)."""


@dataclass(frozen=True)
class ServiceSettings:
    vif_timeout: float = 60.0
    """Seconds ADD waits for the pod's VIF to appear in its KuryrPort (upstream:
    ``[cni_daemon] vif_annotation_timeout``)."""
    ready_timeout: float = 60.0
    """Seconds ADD waits, once plugged, for ``ovn-installed`` (or the VIF's ``active``)."""
    poll_interval: float = 0.02
    """How often the readiness of a plugged port is polled."""
    unplug_floor: int = 2
    """Reconcile and GC may always remove this many live attachments at once..."""
    unplug_share: float = 0.25
    """...or this share of our live attachments, whichever is larger; a larger removal
    is suspicious (a wrong cache, a foreign request) and is only logged."""


Sleep = Callable[[float], Awaitable[None]]


class ReadyPoller:
    """Asks the drivers whether plugged attachments can carry traffic, every waiting ADD
    in one round (one ``ready_many`` per driver), a round every ``interval`` while any
    waits. One poll per ADD (each listing three OVS tables through the one OVSDB
    connection, on the default 6-thread pool, every 20 ms) made a burst of 200 ADDs
    spend its time polling, with the plugs queued behind the polls. The rounds run on a
    thread of their own."""

    def __init__(self, interval: float, sleep: Sleep) -> None:
        self._interval = interval
        self._sleep = sleep
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kuryr-ready")
        """Its own thread: on the shared pool the rounds queued behind the plugs they
        wait for (a burst of 200: ovn-installed seen up to 15 s late)."""
        self._next: list[tuple[BindingDriver, Attachment, Vif, asyncio.Future[bool | None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def ask(self, driver: BindingDriver, att: Attachment, vif: Vif) -> bool | None:
        """The answer of the next round (at once when no round is running)."""
        fut: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._next.append((driver, att, vif, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rounds())
        return await fut

    async def _rounds(self) -> None:
        while self._next:
            batch, self._next = self._next, []
            by_driver: dict[int, list[tuple[BindingDriver, Attachment, Vif, Any]]] = {}
            for item in batch:
                by_driver.setdefault(id(item[0]), []).append(item)
            for items in by_driver.values():
                try:
                    answers = await asyncio.get_running_loop().run_in_executor(
                        self._thread,
                        items[0][0].ready_many,
                        [(att, vif) for _, att, vif, _ in items],
                    )
                except Exception as exc:
                    for *_, fut in items:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (*_, fut), answer in zip(items, answers, strict=True):
                    if not fut.done():  # a waiter that gave up (its ADD was cancelled)
                        fut.set_result(answer)
            await self._sleep(self._interval)  # meanwhile the not-ready ask again


class RepairListener(Protocol):
    """Told about re-plugs (the daemon: Events on the pod and a metric; tests: a list)."""

    def lost(self, att: Attachment, vif: Vif, why: str) -> None:
        """The attachment stopped carrying traffic (once per loss)."""

    def replugged(self, att: Attachment, vif: Vif) -> None:
        """It was plugged again."""

    def failed(self, att: Attachment, vif: Vif, error: str) -> None:
        """Plugging it again failed (retried on the next pass)."""


@dataclass(frozen=True)
class _Record:
    """An attachment this daemon plugged (ADD) or found stamped as ours (reconcile)."""

    att: Attachment
    port_id: str
    plugged: tuple[BindingDriver, Plugged] | None = None
    """What DEL unplugs without listing every attachment of the host (``None``: list)."""


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
        cluster_id: str = "",
        repairs: RepairListener | None = None,
    ) -> None:
        self.vifs = vifs
        self._on_added = on_added
        """Told (attachment, seconds ADD took) after each successful ADD (not awaited)."""
        self.drivers = drivers
        self.settings = settings or ServiceSettings()
        self.cluster_id = cluster_id
        """Ours: what reconcile, GC and re-plug may touch (the drivers stamp it)."""
        self._repairs = repairs
        self._sleep = sleep
        self._ready = ReadyPoller(self.settings.poll_interval, sleep)
        self._locks: dict[str, _KeyLock] = {}
        self._records: dict[tuple[str, str], _Record] = {}
        """What we plugged, by (container, ifname): what :meth:`repair` looks after."""
        self._down: set[tuple[str, str]] = set()
        """Attachments found lost and not plugged again yet (one ``lost`` per loss)."""

    def _mine(self, plugged: Plugged) -> bool:
        return plugged.cluster == self.cluster_id

    @contextlib.asynccontextmanager
    async def _container(self, container_id: str) -> AsyncIterator[None]:
        """Hold the container's lock (requests and re-plugs of one container in turn)."""
        key = self._locks.setdefault(container_id, _KeyLock())
        key.users += 1
        try:
            async with key.lock:
                yield
        finally:
            key.users -= 1
            if not key.users:
                del self._locks[container_id]

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
        async with self._container(att.container_id):
            if command == "ADD":
                return await self.add(att, req["cniVersion"])
            if command == "DEL":
                await self.delete(att)
                return None
            await self.check(att, req["config"])
            return None

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
        for key, record in list(self._records.items()):
            if record.port_id == vif.port_id:  # an older sandbox of the pod: replaced
                self._forget(*key)
        self._records[(att.container_id, att.ifname)] = _Record(
            att,
            vif.port_id,
            (driver, Plugged(att.container_id, att.ifname, vif.host_ifname, att.netns)),
        )
        if self._on_added is not None:
            self._on_added(att, time.monotonic() - started)
        return spec.convert_result(result(att, vif), cni_version)

    async def _wait_ready(self, driver: BindingDriver, att: Attachment, vif: Vif) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while True:
            ready = await self._ready.ask(driver, att, vif)
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

    def _names(self, plugged: Plugged, att: Attachment) -> bool:
        """``plugged`` is this request's attachment: same (container, ifname) — an ifname
        is unique in a container whatever the network — and not another cluster's."""
        if (plugged.container_id, plugged.ifname) != (att.container_id, att.ifname):
            return False
        return plugged.cluster is None or self._mine(plugged)  # legacy: the id is all we have

    def _forget(self, container_id: str, ifname: str) -> None:
        self._records.pop((container_id, ifname), None)
        self._down.discard((container_id, ifname))

    async def delete(self, att: Attachment) -> None:
        record = self._records.get((att.container_id, att.ifname))
        self._forget(att.container_id, att.ifname)
        if record is not None and record.plugged is not None:
            # Plugged (or found) by this daemon: unplug it by name. Listing every
            # attachment of the host for each DEL made a teardown of 200 pods take minutes.
            driver, plugged = record.plugged
            LOG.info("DEL %s %s: unplugging %s", att.pod_key, att.ifname, plugged.host_ifname)
            await asyncio.to_thread(driver.unplug, plugged)
            return
        found = False
        for driver, plugged in await asyncio.to_thread(self.drivers.plugged):
            if self._names(plugged, att):
                LOG.info("DEL %s %s: unplugging %s", att.pod_key, att.ifname, plugged.host_ifname)
                await asyncio.to_thread(driver.unplug, plugged)
                found = True
        if not found:
            await self._delete_adopted(att)

    async def _delete_adopted(self, att: Attachment) -> None:
        """DEL of a pod upstream kuryr-kubernetes plugged: nothing of it is stamped, so its
        adopted VIF (``controller/takeover.py``) names the device; the driver removes it only
        if it is provably that port's (``OvsBinding.unplug_adopted``)."""
        vif = self.vifs.current_vif(att.pod_namespace, att.pod_name, att.ifname)
        if vif is None or not vif.adopted:
            return
        with contextlib.suppress(UnsupportedVif):
            unplug = getattr(self.drivers.for_vif(vif), "unplug_adopted", None)
            if unplug is not None and await asyncio.to_thread(unplug, att, vif):
                LOG.info(
                    "DEL %s %s: unplugged %s (plugged by upstream kuryr-kubernetes)",
                    att.pod_key,
                    att.ifname,
                    vif.host_ifname,
                )

    async def check(self, att: Attachment, config: dict[str, Any]) -> None:
        mine = [p for _, p in await asyncio.to_thread(self.drivers.plugged) if self._names(p, att)]
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
        """Unplug our attachments of this network that the runtime no longer lists."""
        network = str(config.get("name") or "")
        items = config.get("cni.dev/valid-attachments", config.get("cni.dev/attachments")) or []
        valid = {(i["containerID"], i["ifname"]) for i in items}
        found = await asyncio.to_thread(self.drivers.plugged)
        ours = [(d, p) for d, p in found if self._mine(p) and p.network == network]
        legacy = [p for _, p in found if p.cluster is None]
        if legacy:
            LOG.info(
                "GC of network %s: leaving %d unstamped attachment(s) alone (%s): only DEL "
                "removes those",
                network or "?",
                len(legacy),
                ", ".join(p.host_ifname for p in legacy),
            )
        stale = [(d, p) for d, p in ours if (p.container_id, p.ifname) not in valid]
        live = [p for _, p in ours if _live(p)]
        why = self._guard([p for _, p in stale if _live(p)], live, cache_matters=False, what="GC")
        for driver, plugged in stale:
            if why and _live(plugged):
                continue
            LOG.info("GC: unplugging %s (%s)", plugged.host_ifname, plugged.container_id)
            self._forget(plugged.container_id, plugged.ifname)
            await asyncio.to_thread(driver.unplug, plugged)

    def _guard(
        self, removing: list[Plugged], live: list[Plugged], *, cache_matters: bool, what: str
    ) -> str:
        """Why removing these live attachments is refused ("" when it is not); logs them."""
        if not removing:
            return ""
        why = ""
        if cache_matters and not self.vifs.synced:
            why = "the KuryrPort cache has not synced"
        elif cache_matters and self.vifs.known_pods == 0:
            why = "the KuryrPort cache is empty (a wrong or fresh cluster, or a wrong node name?)"
        else:
            allowed = max(self.settings.unplug_floor, int(self.settings.unplug_share * len(live)))
            if len(removing) > allowed:
                why = (
                    f"it would remove {len(removing)} of {len(live)} live attachments "
                    f"(at most {allowed} at once)"
                )
        if why:
            for p in removing:
                LOG.warning(
                    "%s: NOT unplugging %s (pod %s, container %s, netns %s): %s; remove it with "
                    "DEL, or fix the cache and restart the daemon",
                    what,
                    p.host_ifname,
                    p.pod_key or "?",
                    p.container_id[:12] or "?",
                    p.netns or "?",
                    why,
                )
        return why

    async def reconcile(self) -> list[str]:
        """At start: unplug our attachments whose netns or pod is gone; returns what went.

        Only attachments stamped with our cluster id count; another cluster's are never
        touched, unstamped ones only when provably dead (veth and netns gone). Attachments
        whose pod is known and whose namespace exists are kept (and looked after by
        :meth:`repair`), so running pods keep their traffic. Removing live attachments
        (the veth is there) is refused by :meth:`_guard` on an unsynced or empty cache or
        when too many would go; the rest of reconcile still happens.
        """
        removed = []
        found = await asyncio.to_thread(self.drivers.plugged)
        ours = [(d, p) for d, p in found if self._mine(p)]
        dead = [(d, p) for d, p in found if p.cluster in (None, self.cluster_id) and _dead(p)]
        stale: list[tuple[BindingDriver, Plugged, str]] = []
        for driver, plugged in ours:
            if _dead(plugged):
                continue
            if not plugged.netns_exists():
                stale.append((driver, plugged, "its netns is gone"))
            elif not self.vifs.has_pod(plugged.pod_key):
                stale.append((driver, plugged, "its pod has no KuryrPort"))
            else:
                self._records[(plugged.container_id, plugged.ifname)] = _Record(
                    plugged.attachment(), plugged.port_id, (driver, plugged)
                )
        others = sorted(
            {str(p.cluster) for _, p in found if p.cluster not in (None, self.cluster_id)}
        )
        if others:
            LOG.info("reconcile: leaving attachments of cluster(s) %s alone", ", ".join(others))
        live = [p for _, p in ours if not _dead(p)]
        why = self._guard([p for _, p, _ in stale], live, cache_matters=True, what="reconcile")
        todo = [(d, p, "its veth and netns are gone") for d, p in dead]
        todo += [] if why else stale
        for driver, plugged, reason in todo:
            LOG.info(
                "reconcile: unplugging %s (pod %s, netns %s): %s",
                plugged.host_ifname,
                plugged.pod_key or "?",
                plugged.netns or "?",
                reason,
            )
            self._forget(plugged.container_id, plugged.ifname)
            await asyncio.to_thread(driver.unplug, plugged)
            removed.append(plugged.host_ifname)
        return removed

    async def repair(self) -> list[str]:
        """Plug again our attachments whose host side vanished while their pod's netns is
        still there and its KuryrPort still names the same port; returns what was
        re-plugged. Level-triggered and idempotent: call it periodically."""
        done = []
        for key, record in list(self._records.items()):
            async with self._container(key[0]):
                if self._records.get(key) is not record:
                    continue  # DEL (or a new ADD) came first
                try:
                    if replugged := await self._repair_one(key, record.att, record.port_id):
                        done.append(replugged)
                except KuryrError as exc:  # one attachment's trouble never stops the pass
                    LOG.error("re-plug check of %s failed: %s", record.att.pod_key, exc)
        return done

    async def _repair_one(self, key: tuple[str, str], att: Attachment, port_id: str) -> str:
        """The host ifname plugged again, "" when nothing was (or could be) done."""
        if not await asyncio.to_thread(Path(att.netns).exists):
            return ""  # the pod is going: DEL will come
        vif = self.vifs.current_vif(att.pod_namespace, att.pod_name, att.ifname)
        if vif is None or vif.port_id != port_id:
            return ""  # the pod has another port now (or none): not ours to redo
        driver = self.drivers.for_vif(vif)
        why = await asyncio.to_thread(driver.lost, att, vif)
        if why is None:
            return ""
        if key not in self._down:
            self._down.add(key)
            LOG.warning(
                "pod %s: port %s lost its attachment (%s): plugging it again",
                att.pod_key,
                vif.port_id,
                why,
            )
            if self._repairs is not None:
                self._repairs.lost(att, vif, why)
        try:
            await asyncio.to_thread(driver.plug, att, vif)
        except KuryrError as exc:
            LOG.error("pod %s: re-plugging port %s failed: %s", att.pod_key, vif.port_id, exc)
            if self._repairs is not None:
                self._repairs.failed(att, vif, str(exc))
            return ""
        self._down.discard(key)
        LOG.info("pod %s: port %s plugged again", att.pod_key, vif.port_id)
        if self._repairs is not None:
            self._repairs.replugged(att, vif)
        return vif.host_ifname


def _live(plugged: Plugged) -> bool:
    """Its veth/device is there: a pod may be using it."""
    return plugged.host_link


def _dead(plugged: Plugged) -> bool:
    """Provably carries nothing: the veth is gone and so is the netns."""
    return not plugged.host_link and not plugged.netns_exists()


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
    if req["command"] == "ADD" and not _NETWORK_NAME.fullmatch(
        str(req["config"].get("name") or "")
    ):
        raise InvalidRequest(
            f"network name {req['config'].get('name')!r} is not a CNI network name (a letter or "
            "digit, then letters, digits, '_', '.' or '-'): fix the network configuration",
            spec.INVALID_NETWORK_CONFIG,
        )
    return Attachment(
        container_id=str(fields["containerId"]),
        ifname=str(fields["ifname"]),
        netns=str(fields["netns"]),
        pod_namespace=str(namespace),
        pod_name=str(name),
        pod_uid=str(args.get("K8S_POD_UID", "")),
        network=str(req["config"].get("name") or ""),
    )
