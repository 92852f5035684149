"""Fakes behind the CNI daemon's own interfaces: a VIF source and a binding driver.

The fake driver keeps "host state" in a dict, so tests assert on what is plugged, not on
which calls were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

from kuryr_k8s.cni.binding import Attachment, Plugged
from kuryr_k8s.cni.errors import UnknownContainer, VifTimeout
from kuryr_k8s.model.vif import Vif


def make_vif(
    *,
    vif_type: str = "ovs",
    active: bool = True,
    ip: str = "10.20.0.5",
    mac: str = "fa:16:3e:00:00:05",
) -> Vif:
    port_id = str(uuid.uuid4())
    return Vif.from_dict(
        {
            "vifType": vif_type,
            "portId": port_id,
            "macAddress": mac,
            "networkId": str(uuid.uuid4()),
            "mtu": 1442,
            "active": active,
            "bridge": "br-int",
            "vlanId": 101,
            "ips": [
                {
                    "address": ip,
                    "prefixLength": 24,
                    "cidr": "10.20.0.0/24",
                    "subnetId": str(uuid.uuid4()),
                    "gateway": "10.20.0.1",
                }
            ],
            "routes": [{"destination": "10.30.0.0/16", "gateway": "10.20.0.254"}],
        }
    )


class FakeVifs:
    """VIFs by pod key; ``put`` wakes waiters, like the informer does."""

    def __init__(self, *, synced: bool = True, pods: set[str] | None = None) -> None:
        self.vifs: dict[str, Vif] = {}
        self.synced = synced
        self.pods = pods
        """Pods the API knows (``None``: cannot tell)."""
        self._changed = asyncio.Event()

    def put(self, key: str, vif: Vif) -> None:
        self.vifs[key] = vif
        self._changed.set()

    async def wait_vif(
        self,
        namespace: str,
        name: str,
        ifname: str,
        pod_uid: str,
        timeout: float,  # noqa: ASYNC109
    ) -> Vif:
        key = f"{namespace}/{name}"
        if key not in self.vifs and self.pods is not None and key not in self.pods:
            raise UnknownContainer(f"pod {key} does not exist")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while key not in self.vifs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise VifTimeout(f"pod {key}: no VIF after {timeout:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.vifs[key]

    def current_vif(self, namespace: str, name: str, ifname: str) -> Vif | None:
        return self.vifs.get(f"{namespace}/{name}")

    def has_pod(self, pod_key: str) -> bool:
        return pod_key in self.vifs

    @property
    def known_pods(self) -> int:
        return len(self.vifs)


class FakeDriver:
    """Host state as a dict host_ifname → Plugged; ``fail_plug``/``ready_after`` steer it."""

    def __init__(self, vif_type: str = "ovs", *, cluster_id: str = "") -> None:
        self.vif_type = vif_type
        self.cluster_id = cluster_id
        """Stamped on what it plugs, as the real drivers do."""
        self.host: dict[str, Plugged] = {}
        self.fail_plug: Exception | None = None
        self.ready_value: bool | None = True
        self.ready_calls: list[int] = []
        """How many attachments each readiness look-up asked about."""
        self.health: str | None = None

    def plug(self, att: Attachment, vif: Vif) -> None:
        if self.fail_plug is not None:
            raise self.fail_plug
        self.host[vif.host_ifname] = Plugged(
            att.container_id,
            att.ifname,
            vif.host_ifname,
            att.netns,
            att.pod_key,
            vif.port_id,
            cluster=self.cluster_id,
            network=att.network,
        )

    def unplug(self, plugged: Plugged) -> None:
        self.host.pop(plugged.host_ifname, None)

    def plugged(self) -> list[Plugged]:
        return list(self.host.values())

    def check(self, att: Attachment, vif: Vif) -> list[str]:
        if vif.host_ifname not in self.host:
            return [f"{vif.host_ifname} is missing"]
        return []

    def lost(self, att: Attachment, vif: Vif) -> str | None:
        return None if vif.host_ifname in self.host else f"{vif.host_ifname} is gone"

    def ready_many(self, items: Sequence[tuple[Attachment, Vif]]) -> list[bool | None]:
        self.ready_calls.append(len(items))
        return [self.ready_value] * len(items)

    def healthy(self) -> str | None:
        return self.health
