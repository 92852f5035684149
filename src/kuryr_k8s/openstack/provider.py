"""Owner bookkeeping shared by both port providers, and the plain (pool-less) provider.

Ownership lives in Neutron, twice: ``device_id`` = the pod uid (set with an ``If-Match``
revision constraint when a free port is claimed, so two claimers cannot both win) and the
tag ``kuryr.owner:<uid>`` (what the reconciler and humans look at). :func:`find_owned`
looks a pod's port up by ``device_id`` within our cluster tag, which also finds a port
whose tags were not flipped yet because the controller died in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.openstack.addresses import AddressBudget
from kuryr_k8s.openstack.batching import CreateBatcher
from kuryr_k8s.openstack.neutron import Neutron, PortSpec
from kuryr_k8s.openstack.ownership import Ledger, load_ledger
from kuryr_k8s.openstack.ports import (
    CLUSTER_TAG_PREFIX,
    OWNER_TAG_PREFIX,
    POOL_TAG_PREFIX,
    TRUNK_TAG_PREFIX,
    NeutronPort,
    PortRequest,
)

LOG = logging.getLogger(__name__)

LiveRefs = Callable[[], Awaitable[Mapping[str, str]]]
"""Port id -> pod uid for every port a KuryrPort's status names (deleting ones too): the
authority on who owns a port (``docs/design/pool-ownership.md``). Must raise rather than
answer from a cache that has not synced yet."""


async def no_refs() -> Mapping[str, str]:
    """For providers used without KuryrPorts (tests, tools): nothing is referenced."""
    return {}


PoolKey = tuple[str, str, str, tuple[str, ...]]
"""(node, project id, network id, sorted security group ids)."""


@dataclass(frozen=True)
class PortTagging:
    """Which tags our ports carry."""

    cluster_id: str
    resource_tags: tuple[str, ...] = ()
    """``[neutron_defaults] resource_tags``: extra tags on every port."""

    @property
    def cluster_tag(self) -> str:
        return CLUSTER_TAG_PREFIX + self.cluster_id

    def in_use(self, owner_uid: str, trunk_id: str = "") -> tuple[str, ...]:
        """Tags of a port in use; ports made for a trunk keep ``kuryr.trunk:<id>``."""
        return (
            self.cluster_tag,
            OWNER_TAG_PREFIX + owner_uid,
            *_trunk(trunk_id),
            *self.resource_tags,
        )

    def free(self, key: PoolKey, trunk_id: str = "") -> tuple[str, ...]:
        return (
            self.cluster_tag,
            POOL_TAG_PREFIX + pool_digest(key),
            *_trunk(trunk_id),
            *self.resource_tags,
        )


def _trunk(trunk_id: str) -> tuple[str, ...]:
    return (TRUNK_TAG_PREFIX + trunk_id,) if trunk_id else ()


def pool_digest(key: PoolKey) -> str:
    """A short, stable name of a pool key for the ``kuryr.pool:`` tag."""
    node, project, network, sgs = key
    text = "\n".join((node, project, network, *sgs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pool_key_of(port: NeutronPort) -> PoolKey:
    return (port.binding_host_id, port.project_id, port.network_id, port.security_groups)


def spec_for(
    request: PortRequest, tags: tuple[str, ...], *, owner_uid: str = "", name: str = ""
) -> PortSpec:
    return PortSpec(
        network_id=request.network_id,
        subnet_id=request.subnet_id,
        project_id=request.project_id,
        security_groups=request.security_groups,
        host=request.node,
        tags=tags,
        name=name,
        device_id=owner_uid,
    )


async def find_owned(neutron: Neutron, tagging: PortTagging, owner_uid: str) -> NeutronPort | None:
    """The port of ``owner_uid`` in our cluster, if any.

    Should there ever be more than one (nothing we do makes two), the oldest wins and the
    others are left to garbage collection once their owner is gone."""
    ports = await neutron.list_ports(tags=[tagging.cluster_tag], device_id=owner_uid)
    if not ports:
        return None
    ports.sort(key=lambda p: (p.created_at is None, p.created_at, p.id))
    if len(ports) > 1:
        LOG.warning(
            "owner %s has %d ports %s; using %s",
            owner_uid,
            len(ports),
            [p.id for p in ports],
            ports[0].id,
        )
    return ports[0]


async def ensure_owned(
    neutron: Neutron,
    tagging: PortTagging,
    port: NeutronPort,
    request: PortRequest,
    owner_uid: str,
    name: str,
) -> NeutronPort:
    """Make an owned port look exactly as requested (name, SGs, owner and tags).

    Finishes a claim that a crash interrupted; a no-op (no call) when all is in place."""
    if (
        port.name != name
        or port.security_groups != request.security_groups
        or port.device_id != owner_uid
    ):
        port = await neutron.update_port(
            port.id, name=name, security_groups=request.security_groups, device_id=owner_uid
        )
    wanted = tagging.in_use(owner_uid, request.trunk_id)
    if set(port.tags) != set(wanted):
        port = await neutron.set_tags(port, wanted)
    return port


class OwnerLocks:
    """One asyncio lock per owner uid, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, owner_uid: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(owner_uid, (asyncio.Lock(), 0))
        self._locks[owner_uid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[owner_uid]
            if users <= 1:
                del self._locks[owner_uid]
            else:
                self._locks[owner_uid] = (lock, users - 1)


class PlainPortProvider:
    """Pool disabled (``[kubernetes] vif_pool_driver = noop``): a port is created when a pod
    needs one (already marked with its owner, bound to the node) and deleted on release.

    The owner look-up is the :class:`~kuryr_k8s.openstack.ownership.Ledger`, loaded at
    :meth:`start` from one list of our ports and the KuryrPorts' references, so a pod
    costs one ``POST`` and one ``DELETE``, no look-up ``GET``; the ``POST`` of concurrent pods
    is one bulk request where the subnet has room for it
    (:class:`~kuryr_k8s.openstack.batching.CreateBatcher`)."""

    def __init__(
        self,
        neutron: Neutron,
        tagging: PortTagging,
        *,
        live_owners: Callable[[], Awaitable[Collection[str]]] | None = None,
        live_refs: LiveRefs = no_refs,
        budget: AddressBudget | None = None,
    ) -> None:
        self.neutron = neutron
        self.tagging = tagging
        self._owners = OwnerLocks()
        self._live_owners = live_owners
        self._live_refs = live_refs
        self.ledger = Ledger()
        self._ready = False
        self.creates = CreateBatcher(neutron, budget=budget, on_created=self._created)

    def _created(self, spec: PortSpec, port: NeutronPort) -> None:
        """Every port made for an owner is in the ledger, even if its acquire was cancelled
        while the create was in flight (the next acquire finds it)."""
        self.ledger.assign(spec.device_id, port)

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Load the ledger: ports named by KuryrPorts, then ports marked with a live owner
        that names none (a create whose answer a predecessor never recorded)."""
        ports = await self.neutron.list_ports(tags=[self.tagging.cluster_tag])
        refs = await self._live_refs()
        live = set(await self._live_owners()) if self._live_owners is not None else set()
        self.ledger.clear()
        load_ledger([p for p in ports if not p.trunk_id], refs, live, self.ledger.assign)
        self._ready = True

    async def stop(self) -> None:
        """Wait for the creates already sent to Neutron (their ports reach the ledger)."""
        await self.creates.close()
        self._ready = False

    def _check_ready(self) -> None:
        if not self._ready:
            raise ResourceNotReady("the port ledger is being loaded from Neutron", delay=1.0)

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            port = self.ledger.port_of(owner_uid)
            if port is not None:
                if tuple(sorted(port.security_groups)) != tuple(sorted(request.security_groups)):
                    port = await self.neutron.update_port(
                        port.id, security_groups=request.security_groups
                    )
                    self.ledger.update(port)
                return port
            spec = spec_for(request, self.tagging.in_use(owner_uid), owner_uid=owner_uid, name=name)
            # concurrent acquires share bulk POSTs where the subnet has room
            # (docs/design/pool-ownership.md, decision 11)
            return await self.creates.create(spec)

    async def release(self, port_id: str, owner_uid: str) -> None:
        self._check_ready()
        async with self._owners.hold(owner_uid):
            owner = self.ledger.owner_of(port_id)
            if owner is None:  # a create of a predecessor that landed after our start?
                seen = await self.neutron.get_port(port_id)
                if (
                    seen is not None
                    and seen.owner_uid == owner_uid
                    and self.tagging.cluster_tag in seen.tags
                    and not seen.trunk_id
                ):
                    await self.neutron.delete_port(port_id)
                return
            if owner != owner_uid:
                return
            await self.neutron.delete_port(port_id)
            self.ledger.unassign(port_id)

    async def get(self, port_id: str) -> NeutronPort | None:
        return await self.neutron.get_port(port_id)

    async def find(self, owner_uid: str) -> NeutronPort | None:
        """The owner's port, if it has one (the ledger); never creates one."""
        return self.ledger.port_of(owner_uid)

    def owns(self, port_id: str) -> bool:
        return self.ledger.owner_of(port_id) is not None

    async def known(self, port_id: str, owner_uid: str) -> NeutronPort | None:
        """``port_id`` if it is ``owner_uid``'s (ledger; a port unknown here is read once
        and adopted if Neutron marks it with this owner), else None."""
        owner = self.ledger.owner_of(port_id)
        if owner is not None:
            return self.ledger.port_of(owner) if owner == owner_uid else None
        if self.ledger.port_of(owner_uid) is not None:
            return None
        port = await self.neutron.get_port(port_id)
        if (
            port is None
            or port.trunk_id
            or self.tagging.cluster_tag not in port.tags
            or port.owner_uid != owner_uid
        ):
            return None
        self.ledger.assign(owner_uid, port)
        return port

    def lost(self, port_id: str) -> None:
        self.ledger.unassign(port_id)
