"""Mixed clusters: one provider facade over the bare-metal ports and the trunk subports.

``acquire`` goes by ``request.trunk_id`` (set by the KuryrPort reconciler from the node
resolution); ``release`` reads the port and goes by its ``kuryr.trunk:`` tag, so a port
is always returned to the provider that made it. With ``pod_vif_driver = nested-vlan``
there is no bare-metal provider: every node must resolve to a trunk.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from kuryr_k8s.controller.poolset import PoolSet
from kuryr_k8s.controller.subports import SubportProvider
from kuryr_k8s.model.errors import PermanentError
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.ports import NeutronPort, PortRequest
from kuryr_k8s.openstack.provider import PoolKey


class BareMetalPorts(Protocol):
    """The bare-metal provider (pooled or plain) as this facade uses it."""

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort: ...

    async def release(self, port_id: str, owner_uid: str) -> None: ...

    async def find(self, owner_uid: str) -> NeutronPort | None: ...

    def owns(self, port_id: str) -> bool: ...

    async def known(self, port_id: str, owner_uid: str) -> NeutronPort | None: ...

    def lost(self, port_id: str) -> None: ...


class TargetedPorts:
    def __init__(
        self, neutron: Neutron, bare: BareMetalPorts | None, nested: SubportProvider
    ) -> None:
        self.neutron = neutron
        self.bare = bare
        self.nested = nested

    @property
    def ready(self) -> bool:
        return self.nested.ready and (self.bare is None or self.bare.ready)

    async def start(self) -> None:
        if self.bare is not None:
            await self.bare.start()
        await self.nested.start()

    async def stop(self) -> None:
        steps = [self.nested.stop()]
        if self.bare is not None:
            steps.append(self.bare.stop())
        await asyncio.gather(*steps)

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        if request.trunk_id:
            return await self.nested.acquire(request, owner_uid, name)
        if self.bare is None:
            raise PermanentError(
                f"node {request.node} is not a VM on a trunk and pod_vif_driver = nested-vlan "
                "has no bare-metal ports (use pod_vif_driver = mixed)"
            )
        return await self.bare.acquire(request, owner_uid, name)

    async def release(self, port_id: str, owner_uid: str) -> None:
        if self.bare is not None and self.bare.owns(port_id):
            await self.bare.release(port_id, owner_uid)
            return
        port = await self.neutron.get_port(port_id)
        if port is None:
            return
        if port.trunk_id or self.bare is None:
            await self.nested.release(port_id, owner_uid)
        else:
            await self.bare.release(port_id, owner_uid)

    async def get(self, port_id: str) -> NeutronPort | None:
        """The port; a trunk port with its ``vlan_id`` from the trunk."""
        return await self.nested.get(port_id)

    async def find(self, owner_uid: str) -> NeutronPort | None:
        """The owner's port of either kind (the bare-metal ledger, else Neutron)."""
        if self.bare is not None:
            port = await self.bare.find(owner_uid)
            if port is not None:
                return port
        port = await self.nested.find(owner_uid)
        if port is not None and self.bare is not None and self.bare.owns(port.id):
            return None  # the bare ledger holds it for another owner (or free): stale marks
        return port

    def owns(self, port_id: str) -> bool:
        return self.bare is not None and self.bare.owns(port_id)

    async def known(self, port_id: str, owner_uid: str) -> NeutronPort | None:
        if self.bare is not None and self.bare.owns(port_id):
            return await self.bare.known(port_id, owner_uid)
        port = await self.nested.known(port_id, owner_uid)
        if port is None and self.bare is not None:
            return await self.bare.known(port_id, owner_uid)
        return port

    def lost(self, port_id: str) -> None:
        if self.bare is not None:
            self.bare.lost(port_id)
        self.nested.lost(port_id)

    def sizes(self) -> dict[PoolKey, int]:
        """Free ports per pool of both providers (the nested keys start with a trunk id)."""
        sizes = dict(self.nested.sizes())
        if isinstance(self.bare, PoolSet):  # the plain provider has no pools
            sizes.update(self.bare.sizes())
        return sizes
