"""Nested pods: Neutron ports attached as VLAN subports of the trunk of the pod's VM.

The :class:`~kuryr_k8s.openstack.ports.PortProvider` for requests with a ``trunk_id``
(``docs/design/nested.md``, decisions 3-9). One class, two modes, as the bare-metal side:

* **pooled** (``[kubernetes] vif_pool_driver = neutron``): pools keyed
  ``(trunk, project, network, sorted SGs)`` of ports that are *already attached*, so a
  pooled subport is ACTIVE as soon as its VM is plugged and a warm acquire is one
  ``If-Match`` claim;
* **pool-less** (``noop``): create + attach per pod, detach + delete on release.

Rules:

* **Every port made for a trunk carries ``kuryr.trunk:<trunk id>``** (attached or not),
  besides ``kuryr.cluster:`` and ``kuryr.pool:``/``kuryr.owner:``; subports are created
  unbound (no ``binding:host_id``): the trunk binds them.
* **VLAN ids come from the trunk.** Per trunk one ``asyncio.Lock``; under it an
  allocation reads ``get_subports``, picks the lowest free ids in 1..4094 and sends one
  ``add_subports`` for the whole batch. Another writer shows up as
  :class:`~kuryr_k8s.openstack.neutron.VlanConflict`: re-read, pick again, at most
  :data:`VLAN_ATTEMPTS` times. Nothing about VLAN ids is kept across calls.
* **A port with a ``device_id`` cannot be attached** (Neutron: 409 ``PortInUse``). So a
  batch is created with no ``device_id``; the waiting pod's port already carries its
  ``kuryr.owner:`` tag and name, is attached with the rest in one call, and is then
  claimed (``device_id`` = pod uid under ``If-Match``). The owner look-up is by
  ``device_id``, then by the owner tag, so a crash between create and claim loses
  nothing: the owner's next ``acquire`` finds the port, attaches it if needed and claims it.
* **Nothing left behind**: if the attach fails, the ports just created are detached (if
  the failure hid a success) and deleted before the error is raised.
* **Release**: below ``ports_pool_max`` free → reset (``If-Match``: ``device_id``, name,
  SGs) and back to its pool, still attached, same VLAN; else (or pool-less, or the trunk
  gone) ``remove_subports`` then ``DELETE``.
* **Rebuild** (``start()``, before :attr:`ready`): one list of our trunk-tagged ports, one
  ``GET /trunks`` (sub_ports included): owned by a live pod → in use; free and a subport of
  its trunk → that trunk's pool (tags repaired); free and unattached → attached (one call
  per trunk) into the pool, or deleted if the trunk is gone; owned by a dead pod → GC's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from kuryr_k8s.controller.poolset import (
    CLAIM_ATTEMPTS,
    MAX_BULK,
    LiveOwners,
    Pool,
    PoolSet,
    changed_sgs,
    reset_port,
)
from kuryr_k8s.controller.settings import VifPoolSettings
from kuryr_k8s.model.errors import KuryrError, PermanentError, ResourceNotReady, TemporaryError
from kuryr_k8s.openstack.addresses import AddressBudget
from kuryr_k8s.openstack.neutron import (
    Neutron,
    NeutronNotFound,
    PortIsSubport,
    RevisionConflict,
    SubPort,
    TrunkNotFound,
    VlanConflict,
)
from kuryr_k8s.openstack.ports import OWNER_TAG_PREFIX, SUBPORT_OWNER, NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import (
    OwnerLocks,
    PoolKey,
    PortTagging,
    ensure_owned,
    find_owned,
    spec_for,
)

LOG = logging.getLogger(__name__)

VLAN_ATTEMPTS = 5
"""``add_subports`` tries per batch when another writer takes the VLAN ids we picked."""
VLAN_MIN, VLAN_MAX = 1, 4094


def subport_key(port: NeutronPort) -> PoolKey:
    """The pool a trunk-tagged port belongs to: (trunk, project, network, SGs)."""
    return (port.trunk_id, port.project_id, port.network_id, port.security_groups)


def free_vlans(used: Iterable[int], count: int) -> list[int]:
    """The ``count`` lowest VLAN ids not in ``used``."""
    taken = set(used)
    picked: list[int] = []
    for vlan in range(VLAN_MIN, VLAN_MAX + 1):
        if len(picked) == count:
            break
        if vlan not in taken:
            picked.append(vlan)
    return picked


def _tag_owner(port: NeutronPort) -> str:
    for tag in port.tags:
        if tag.startswith(OWNER_TAG_PREFIX):
            return tag[len(OWNER_TAG_PREFIX) :]
    return ""


class SubportProvider(PoolSet):
    """Ports for nested pods; see the module docstring. ``on_trunk_gone(trunk_id)`` is told
    when Neutron says a trunk does not exist (the node resolver drops its cache entry)."""

    nested = True

    def __init__(
        self,
        neutron: Neutron,
        tagging: PortTagging,
        settings: VifPoolSettings,
        live_owners: LiveOwners,
        *,
        on_trunk_gone: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(settings)
        self.neutron = neutron
        self.budget = AddressBudget(neutron)
        """Sizes every bulk so it never runs the subnet dry (``openstack/addresses.py``)."""
        self.tagging = tagging
        self.pooled = settings.enabled
        self._live_owners = live_owners
        self._on_trunk_gone = on_trunk_gone
        self._trunk_locks: dict[str, asyncio.Lock] = {}
        self._busy: Counter[str] = Counter()
        """Trunk id -> creates/attaches in flight (their ports may be unattached yet)."""
        self._owners = OwnerLocks()
        self._ready = not self.pooled

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        if not self.pooled:
            return
        await self.rebuild()
        self._start_maintenance("subport-pools")

    async def stop(self) -> None:
        if not self.pooled:
            return
        self._ready = False
        await self._cancel_background()

    async def rebuild(self) -> None:
        """Forget the in-memory pools and rebuild them from Neutron and the live owners."""
        self._ready = False
        ports = [
            p for p in await self.neutron.list_ports(tags=[self.tagging.cluster_tag]) if p.trunk_id
        ]
        live = set(await self._live_owners())
        trunks = {
            t.id: t for t in await self.neutron.list_trunks(sorted({p.trunk_id for p in ports}))
        }
        self._pools.clear()
        self._origin.clear()
        unattached: dict[str, list[NeutronPort]] = {}
        counts = {"free": 0, "in use": 0, "orphans": 0, "deleted": 0}
        for port in ports:
            owner = port.owner_uid
            if owner and owner in live:
                self._origin[port.id] = subport_key(port)
                counts["in use"] += 1
                continue
            if port.device_id:
                counts["orphans"] += 1  # owner gone: garbage collection deletes it
                continue
            trunk = trunks.get(port.trunk_id)
            if trunk is None:
                await self._detach_and_delete(port)
                counts["deleted"] += 1
                continue
            key = subport_key(port)
            ready: NeutronPort | None = port
            if set(port.tags) != set(self.tagging.free(key, port.trunk_id)) or port.name:
                ready = await self._reset(port, key)
            if ready is None or not ready.fixed_ips:
                continue
            vlan = trunk.vlan_of(port.id)
            if vlan is None:
                unattached.setdefault(port.trunk_id, []).append(ready)
                continue
            pool = self._pool_for(key, ready.fixed_ips[0].subnet_id)
            pool.free.append(dataclasses.replace(ready, vlan_id=vlan))
            counts["free"] += 1
        for trunk_id, loose in unattached.items():
            try:
                attached = await self._attach_fresh(trunk_id, loose)
            except KuryrError as exc:
                LOG.warning(
                    "could not attach %d free ports to trunk %s: %s", len(loose), trunk_id, exc
                )
                continue
            for port in attached:
                self._pool_for(subport_key(port), port.fixed_ips[0].subnet_id).free.append(port)
                counts["free"] += 1
        LOG.info(
            "subport pools rebuilt: %d free in %d pools, %d in use, %d orphans left to GC, "
            "%d deleted (trunk gone)",
            counts["free"],
            len(self._pools),
            counts["in use"],
            counts["orphans"],
            counts["deleted"],
        )
        self._ready = True

    # ---- the PortProvider contract ------------------------------------------------------

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        if not request.trunk_id:
            raise PermanentError(f"subport provider asked for a port without a trunk ({request})")
        self._check_ready()
        async with self._owners.hold(owner_uid):
            port = await self.find(owner_uid)
            if port is not None:
                adopted = await self._adopt(port, request, owner_uid, name)
                if adopted is not None:
                    self._origin.setdefault(adopted.id, request.pool_key)
                    return adopted
            if not self.pooled:
                mine, *_ = await self._create_attached(request, 1, owner=(owner_uid, name))
                claimed = await self._claim(mine, request, owner_uid, name)
                if claimed is None:
                    raise TemporaryError(f"new subport {mine.id} changed under us", delay=1.0)
                return claimed
            return await self._acquire_from_pool(request, owner_uid, name)

    async def release(self, port_id: str, owner_uid: str) -> None:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            port = await self.neutron.get_port(port_id)
            if port is None or port.owner_uid != owner_uid:
                self._origin.pop(port_id, None)
                return
            key = self._origin.pop(port_id, None) or subport_key(port)
            if self.pooled and port.fixed_ips and port.trunk_id:
                pool = self._pool_for(key, port.fixed_ips[0].subnet_id)
                maximum = self.settings.ports_pool_max
                if not maximum or len(pool.free) < maximum:
                    vlan = await self._vlan_of(port.trunk_id, port.id)
                    if vlan is not None:
                        reset = await self._reset(port, key)
                        if reset is not None:
                            pool.free.append(dataclasses.replace(reset, vlan_id=vlan))
                        return
            await self._detach_and_delete(port)

    async def get(self, port_id: str) -> NeutronPort | None:
        """The port, with ``vlan_id`` from its trunk's sub-port list (None if detached)."""
        port = await self.neutron.get_port(port_id)
        if port is None or not port.trunk_id:
            return port
        return dataclasses.replace(port, vlan_id=await self._vlan_of(port.trunk_id, port.id))

    async def find(self, owner_uid: str) -> NeutronPort | None:
        """The owner's port: by ``device_id``, else by the ``kuryr.owner:`` tag (a port
        created for the owner whose claim a crash interrupted). Never creates one."""
        port = await find_owned(self.neutron, self.tagging, owner_uid)
        if port is not None:
            return port
        tagged = await self.neutron.list_ports(
            tags=[self.tagging.cluster_tag, OWNER_TAG_PREFIX + owner_uid]
        )
        tagged = [p for p in tagged if p.device_id in ("", owner_uid)]
        tagged.sort(key=lambda p: (p.created_at is None, p.created_at, p.id))
        return tagged[0] if tagged else None

    async def known(self, port_id: str, owner_uid: str) -> NeutronPort | None:
        """``port_id`` (with its VLAN) if Neutron marks it as ``owner_uid``'s, else None.
        Subports keep Neutron as the authority (their claim is an ``If-Match`` write, as
        attaching is a write anyway: ``pool-ownership.md``)."""
        port = await self.get(port_id)
        return port if port is not None and port.device_id == owner_uid else None

    def lost(self, port_id: str) -> None:
        self.forget(port_id)

    # ---- for metrics and GC -------------------------------------------------------------

    def forget_trunk(self, trunk_id: str) -> list[str]:
        """Drop the pools of a trunk that is gone (or whose node is); their free port ids."""
        self._trunk_locks.pop(trunk_id, None)
        return self._forget_pools(trunk_id)

    async def warm(self, request: PortRequest) -> int:
        """Fill the trunk's pool to ``ports_pool_min`` now; returns its free count."""
        self._check_ready()
        pool = self._pool_for(request.pool_key, request.subnet_id)
        await self._refill(pool, wait_quiet=False)
        return len(pool.free)

    # ---- internals: claims --------------------------------------------------------------

    def _check_ready(self) -> None:
        if not self._ready:
            raise ResourceNotReady("subport pools are being rebuilt from Neutron", delay=1.0)

    async def _adopt(
        self, port: NeutronPort, request: PortRequest, owner_uid: str, name: str
    ) -> NeutronPort | None:
        """The owner already has ``port``: make sure it is attached to the requested trunk
        and fully claimed. None if it is of another (gone) trunk: it is deleted."""
        if port.trunk_id != request.trunk_id:
            if not port.trunk_id:
                raise PermanentError(
                    f"pod {owner_uid} owns port {port.id}, made for a bare-metal node, but "
                    f"its node is now a VM on trunk {request.trunk_id}: delete the pod"
                )
            LOG.warning(
                "owner's port %s was made for trunk %s, the node is on trunk %s now: replaced",
                port.id,
                port.trunk_id,
                request.trunk_id,
            )
            await self._detach_and_delete(port)
            return None
        vlan = await self._vlan_of(request.trunk_id, port.id, must_exist=True)
        if vlan is None:
            if port.device_id:  # Neutron will not attach a port with a device_id
                port = await self.neutron.update_port(
                    port.id, if_revision=port.revision_number, device_id=""
                )
            [port] = await self._attach_fresh(request.trunk_id, [port])
            vlan = port.vlan_id
        if port.device_id != owner_uid:
            claimed = await self._claim(
                dataclasses.replace(port, vlan_id=vlan), request, owner_uid, name
            )
            if claimed is None:
                raise TemporaryError(
                    f"port {port.id} changed under us while adopting it", delay=1.0
                )
            return claimed
        port = await ensure_owned(self.neutron, self.tagging, port, request, owner_uid, name)
        return dataclasses.replace(port, vlan_id=vlan)

    async def _claim_candidate(
        self,
        pool: Pool,
        candidate: NeutronPort,
        made_for_owner: bool,
        request: PortRequest,
        owner_uid: str,
        name: str,
    ) -> NeutronPort | None:
        """Claim a pooled subport (or the one made for the owner); one that is no longer
        attached (its trunk was deleted, or a human detached it) is attached again, or
        deleted if its trunk is gone (TrunkNotFound raised)."""
        try:
            claimed = await self._claim(candidate, request, owner_uid, name)
        except KuryrError:
            if not made_for_owner:
                pool.free.appendleft(candidate)
            raise
        if claimed is None or claimed.device_owner == SUBPORT_OWNER:
            return claimed
        try:
            return await self._adopt(claimed, request, owner_uid, name)
        except TrunkNotFound:
            await self._detach_and_delete(claimed)  # useless without its trunk
            raise

    async def _claim(
        self, port: NeutronPort, request: PortRequest, owner_uid: str, name: str
    ) -> NeutronPort | None:
        """``device_id`` = owner under ``If-Match`` (re-read on 412), then the tags. None if
        the port is somebody else's now or gone."""
        current = port
        for _ in range(CLAIM_ATTEMPTS):
            if current.device_id not in ("", owner_uid) or _tag_owner(current) not in (
                "",
                owner_uid,
            ):
                LOG.warning("subport %s was taken outside this pool; dropped", port.id)
                return None
            try:
                claimed = await self.neutron.update_port(
                    port.id,
                    if_revision=current.revision_number,
                    device_id=owner_uid,
                    name=name,
                    security_groups=changed_sgs(current.security_groups, request.security_groups),
                )
            except RevisionConflict:
                fresh = await self.neutron.get_port(port.id)
                if fresh is None:
                    return None
                current = fresh
                continue
            except NeutronNotFound:
                LOG.warning("subport %s is gone; dropped", port.id)
                return None
            wanted = self.tagging.in_use(owner_uid, request.trunk_id)
            if set(claimed.tags) != set(wanted):
                claimed = await self.neutron.set_tags(claimed, wanted)
            return dataclasses.replace(claimed, vlan_id=port.vlan_id)
        LOG.warning("subport %s kept changing under us", port.id)
        return None

    async def _reset(self, port: NeutronPort, key: PoolKey) -> NeutronPort | None:
        return await reset_port(self.neutron, port, key[3], self.tagging.free(key, key[0]))

    # ---- internals: create, attach, detach ----------------------------------------------

    async def _create(
        self, pool: Pool, count: int, owners: list[tuple[str, str]] | None = None
    ) -> list[NeutronPort]:
        return await self._create_attached(pool.request, count, owners[0] if owners else None)

    async def _discard(self, port: NeutronPort) -> None:
        await self._detach_and_delete(port)

    async def _create_attached(
        self, request: PortRequest, count: int, owner: tuple[str, str] | None = None
    ) -> list[NeutronPort]:
        """``count`` new ports attached to the request's trunk (one bulk create, one
        ``add_subports``), ``vlan_id`` set; with ``owner`` = (uid, name) the first one
        carries the owner's tag and name (not its ``device_id``: see the module doc).
        On failure the ports are detached and deleted before the error is raised."""
        key = request.pool_key
        node_less = dataclasses.replace(request, node="")
        with self._working_on(request.trunk_id):
            wanted = max(1, min(count, MAX_BULK))
            # never a bulk that could run the subnet dry (it would leak: addresses.py)
            async with self.budget.bulk(request.network_id, request.subnet_id, wanted) as n:
                specs = [spec_for(node_less, self.tagging.free(key, request.trunk_id))] * n
                if owner is not None:
                    uid, name = owner
                    specs[0] = spec_for(
                        node_less, self.tagging.in_use(uid, request.trunk_id), name=name
                    )
                created = await self.neutron.create_ports(specs)
            try:
                attached = await self._attach_fresh(request.trunk_id, created)
            except BaseException:
                await self._cleanup(request.trunk_id, created)
                raise
        LOG.info(
            "created %d subports on trunk %s (VLAN %s)",
            len(attached),
            request.trunk_id,
            ",".join(str(p.vlan_id) for p in attached),
        )
        return attached

    async def _cleanup(self, trunk_id: str, ports: Sequence[NeutronPort]) -> None:
        for port in ports:
            try:
                with contextlib.suppress(NeutronNotFound):
                    await self.neutron.detach(trunk_id, port.id)
                await self.neutron.delete_port(port.id)
            except KuryrError as exc:  # tagged: the rebuild or GC finds it
                LOG.warning(
                    "could not delete new subport %s after a failed attach: %s", port.id, exc
                )

    def busy_trunks(self) -> set[str]:
        """Trunks with a create or attach in flight: garbage collection leaves their
        unattached ports alone (they are being attached)."""
        return {trunk for trunk, n in self._busy.items() if n > 0}

    @contextlib.contextmanager
    def _working_on(self, trunk_id: str) -> Iterator[None]:
        self._busy[trunk_id] += 1
        try:
            yield
        finally:
            self._busy[trunk_id] -= 1
            if self._busy[trunk_id] <= 0:
                del self._busy[trunk_id]

    async def _attach_fresh(self, trunk_id: str, ports: Sequence[NeutronPort]) -> list[NeutronPort]:
        """Attach ``ports`` and return them re-read (revisions after the attach) with their
        VLAN ids, in the same order."""
        with self._working_on(trunk_id):
            return await self._attach_and_read(trunk_id, ports)

    async def _attach_and_read(
        self, trunk_id: str, ports: Sequence[NeutronPort]
    ) -> list[NeutronPort]:
        vlans = await self._attach(trunk_id, [p.id for p in ports])
        fresh = {p.id: p for p in await self.neutron.list_ports(id=[p.id for p in ports])}
        return [dataclasses.replace(fresh.get(p.id, p), vlan_id=vlans[p.id]) for p in ports]

    async def _attach(self, trunk_id: str, port_ids: Sequence[str]) -> dict[str, int]:
        """Attach the ports to the trunk with VLAN ids free on it: port id -> VLAN id."""
        lock = self._trunk_locks.setdefault(trunk_id, asyncio.Lock())
        async with lock:
            last: KuryrError | None = None
            for _ in range(VLAN_ATTEMPTS):
                try:
                    have = {
                        s.port_id: s.segmentation_id
                        for s in await self.neutron.get_subports(trunk_id)
                    }
                    todo = [pid for pid in port_ids if pid not in have]
                    if not todo:
                        return {pid: have[pid] for pid in port_ids}
                    vlans = free_vlans(have.values(), len(todo))
                    if len(vlans) < len(todo):
                        raise PermanentError(
                            f"trunk {trunk_id} has no free VLAN id left for {len(todo)} more "
                            f"subports ({len(have)} attached)"
                        )
                    after = await self.neutron.add_subports(
                        trunk_id,
                        [SubPort(pid, vlan) for pid, vlan in zip(todo, vlans, strict=True)],
                    )
                except TrunkNotFound:
                    self._trunk_gone(trunk_id)
                    raise
                except NeutronNotFound as exc:  # a port deleted under us (GC, a human)
                    raise TemporaryError(
                        f"attach to trunk {trunk_id}: {exc}; trying again with new ports",
                        delay=1.0,
                    ) from exc
                except (VlanConflict, PortIsSubport) as exc:
                    # Another writer took an id, or an earlier call whose answer we lost
                    # attached a port already: read the trunk again and pick again.
                    LOG.info("attach to trunk %s: %s; retrying", trunk_id, exc)
                    last = exc
                    continue
                have = {s.port_id: s.segmentation_id for s in after}
                if all(pid in have for pid in port_ids):
                    return {pid: have[pid] for pid in port_ids}
            raise TemporaryError(
                f"could not attach {len(port_ids)} ports to trunk {trunk_id} after "
                f"{VLAN_ATTEMPTS} tries: {last}",
                delay=1.0,
            )

    def _trunk_gone(self, trunk_id: str) -> None:
        """Neutron says the trunk does not exist: tell the node resolver, drop its pools
        and delete their free ports (ours, unattached now) in the background."""
        if self._on_trunk_gone is not None:
            self._on_trunk_gone(trunk_id)
        dropped = self.forget_trunk(trunk_id)
        if dropped:
            LOG.warning("trunk %s is gone: deleting its %d free subports", trunk_id, len(dropped))
            self._in_background(self._delete_quietly(dropped), f"trunk {trunk_id} gone")

    async def _delete_quietly(self, port_ids: Sequence[str]) -> None:
        for port_id in port_ids:
            try:
                await self.neutron.delete_port(port_id)
            except KuryrError as exc:  # garbage collection gets it later
                LOG.warning("could not delete free subport %s: %s", port_id, exc)

    async def _vlan_of(
        self, trunk_id: str, port_id: str, *, must_exist: bool = False
    ) -> int | None:
        """The port's VLAN id on the trunk, None if not attached (or the trunk is gone,
        unless ``must_exist``: then TrunkNotFound)."""
        try:
            subports = await self.neutron.get_subports(trunk_id)
        except TrunkNotFound:
            self._trunk_gone(trunk_id)
            if must_exist:
                raise
            return None
        return next((s.segmentation_id for s in subports if s.port_id == port_id), None)

    async def _detach_and_delete(self, port: NeutronPort) -> None:
        if port.trunk_id:
            await self.neutron.detach(port.trunk_id, port.id)
        await self.neutron.delete_port(port.id)
