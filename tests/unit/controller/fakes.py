"""Fakes behind our own interfaces: a PortProvider over an in-memory Neutron, and an
event sink. They keep state; tests assert on it."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from kuryr_k8s.k8s import objects
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.openstack.ports import (
    CLUSTER_TAG_PREFIX,
    OWNER_TAG_PREFIX,
    TRUNK_TAG_PREFIX,
    FixedIp,
    NeutronPort,
    PortRequest,
)

SUBNET_ID = "5b1d0c3e-0000-4000-8000-000000000001"
NETWORK_ID = "5b1d0c3e-0000-4000-8000-000000000002"


@dataclass
class FakePorts:
    """An in-memory PortProvider: ``acquire`` is idempotent by owner tag, like the real ones."""

    cluster: str = "test"
    ports: dict[str, NeutronPort] = field(default_factory=dict)
    faults: list[KuryrError] = field(default_factory=list)
    """Raised by the next ``acquire`` calls, in order."""
    refusal: KuryrError | None = None
    """Raised by every ``acquire`` while set (e.g. quota exhausted)."""
    calls: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    """When set, ``acquire`` waits for it (a slow Neutron)."""
    _ips: Any = field(default_factory=lambda: itertools.count(10))

    def owned_by(self, uid: str) -> list[NeutronPort]:
        return [p for p in self.ports.values() if OWNER_TAG_PREFIX + uid in p.tags]

    def make(self, node: str, tags: tuple[str, ...], status: str = "DOWN") -> NeutronPort:
        n = next(self._ips)
        port = NeutronPort(
            id=str(uuid.uuid4()),
            mac_address=f"fa:16:3e:00:00:{n:02x}",
            network_id=NETWORK_ID,
            fixed_ips=(FixedIp(SUBNET_ID, f"10.20.0.{n}"),),
            status=status,
            binding_host_id=node,
            security_groups=("sg1",),
            tags=(CLUSTER_TAG_PREFIX + self.cluster, *tags),
            device_id=next(
                (t[len(OWNER_TAG_PREFIX) :] for t in tags if t.startswith(OWNER_TAG_PREFIX)), ""
            ),
        )
        self.ports[port.id] = port
        return port

    async def acquire(self, request: PortRequest, owner_uid: str, name: str) -> NeutronPort:
        self.calls.append(f"acquire {owner_uid}")
        if self.gate is not None:
            await self.gate.wait()
        if self.faults:
            raise self.faults.pop(0)
        if self.refusal is not None:
            raise self.refusal
        owned = self.owned_by(owner_uid)
        if owned:
            return owned[0]
        if request.trunk_id:  # a subport: unbound, VLAN id from "the trunk"
            port = self.make(
                "", (OWNER_TAG_PREFIX + owner_uid, TRUNK_TAG_PREFIX + request.trunk_id)
            )
            vlans = {p.vlan_id for p in self.ports.values()}
            port = replace(port, vlan_id=min(set(range(1, 4095)) - vlans))
            self.ports[port.id] = port
            return port
        return self.make(request.node, (OWNER_TAG_PREFIX + owner_uid,))

    async def release(self, port_id: str, owner_uid: str) -> None:
        self.calls.append(f"release {port_id}")
        port = self.ports.get(port_id)
        if port is not None and OWNER_TAG_PREFIX + owner_uid in port.tags:
            del self.ports[port_id]

    async def get(self, port_id: str) -> NeutronPort | None:
        self.calls.append(f"get {port_id}")
        return self.ports.get(port_id)

    async def find(self, owner_uid: str) -> NeutronPort | None:
        self.calls.append(f"find {owner_uid}")
        owned = self.owned_by(owner_uid)
        return owned[0] if owned else None

    async def known(self, port_id: str, owner_uid: str) -> NeutronPort | None:
        self.calls.append(f"known {port_id}")
        port = self.ports.get(port_id)
        return port if port is not None and OWNER_TAG_PREFIX + owner_uid in port.tags else None

    def lost(self, port_id: str) -> None:
        self.calls.append(f"lost {port_id}")
        self.ports.pop(port_id, None)

    def set_status(self, port_id: str, status: str) -> None:
        self.ports[port_id] = replace(self.ports[port_id], status=status)


@dataclass
class FakeEvents:
    emitted: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(object key, type, reason, message)."""

    async def emit(self, obj: Any, reason: str, message: str, *, type: Any = "Normal") -> None:
        self.emitted.append((objects.key(obj), str(type), reason, message))

    def reasons(self, key: str) -> list[str]:
        return [r for k, _, r, _ in self.emitted if k == key]
