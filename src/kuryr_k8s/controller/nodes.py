"""Which kind of node a pod is on: bare metal (``ovs`` VIFs) or a VM on a trunk (``vlan``).

Resolved from data, not configuration (``docs/design/nested.md`` decision 1): the node's
``InternalIP`` addresses; an address inside one of ``[pod_vif_nested]
worker_nodes_subnets`` → the Neutron port holding it on that subnet → that port's
``trunk_details.trunk_id``. Positive results are cached per (node, address) for
:data:`CACHE_SECONDS`; failures are not cached (the resync retries them, and the fix is a
person creating the trunk).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.model.errors import PermanentError, ResourceNotReady
from kuryr_k8s.openstack.neutron import Neutron, NeutronSubnet

LOG = logging.getLogger(__name__)

CACHE_SECONDS = 60.0


class NodeNotNested(PermanentError):
    """The node should be a VM on a trunk (or, in ``nested-vlan`` mode, must be) but
    Neutron says otherwise. The message names the node, the address, the port and the fix."""


@dataclass(frozen=True)
class BareMetal:
    node: str


@dataclass(frozen=True)
class TrunkTarget:
    node: str
    trunk_id: str
    parent_port_id: str
    node_ip: str


NodeTarget = BareMetal | TrunkTarget
NodeLookup = Callable[[str], Obj | None]
"""A Node by name from the informer cache (``Store.get``)."""


def internal_ips(node: Obj) -> list[str]:
    addresses = ((node.get("status") or {}).get("addresses")) or []
    return [
        str(a.get("address"))
        for a in addresses
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address")
    ]


def _in(address: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(address) in net
    except ValueError:  # a malformed Node address is in no subnet
        return False


class NodeResolver:
    """``resolve(node name)`` → :class:`BareMetal` or :class:`TrunkTarget`.

    ``require_trunk`` (``pod_vif_driver = nested-vlan``): a node whose addresses are in no
    worker-nodes subnet is an error instead of bare metal (upstream behaviour)."""

    def __init__(
        self,
        neutron: Neutron,
        worker_subnets: Sequence[NeutronSubnet],
        nodes: NodeLookup,
        *,
        require_trunk: bool,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._neutron = neutron
        self._subnets = [(s, ipaddress.ip_network(s.cidr)) for s in worker_subnets]
        self._nodes = nodes
        self._require_trunk = require_trunk
        self._clock = clock
        self._ttl = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, TrunkTarget]] = {}

    async def resolve(self, node_name: str) -> NodeTarget:
        node = self._nodes(node_name)
        if node is None:
            raise ResourceNotReady(
                f"node {node_name} is not in the Node cache (yet): cannot tell whether it is "
                "a VM on a trunk",
                delay=2.0,
            )
        addresses = internal_ips(node)
        in_worker = [
            (ip, subnet) for ip in addresses for subnet, net in self._subnets if _in(ip, net)
        ]
        if not in_worker:
            if not self._require_trunk:
                return BareMetal(node_name)
            subnets = ", ".join(f"{s.id} ({s.cidr})" for s, _ in self._subnets)
            raise NodeNotNested(
                f"node {node_name}: InternalIP(s) {', '.join(addresses) or '(none)'} are in "
                f"none of [pod_vif_nested] worker_nodes_subnets ({subnets}); with "
                "pod_vif_driver = nested-vlan every node must be a VM on one of them (use "
                "pod_vif_driver = mixed for bare-metal nodes, or add the node's subnet)"
            )
        ip, subnet = in_worker[0]
        now = self._clock()
        cached = self._cache.get((node_name, ip))
        if cached is not None and cached[0] > now:
            return cached[1]
        ports = await self._neutron.ports_with_ip(subnet.id, ip)
        if not ports:
            raise NodeNotNested(
                f"node {node_name}: no Neutron port holds its address {ip} on worker-nodes "
                f"subnet {subnet.id} ({subnet.cidr}); a nested node must be a VM whose port "
                "has that address (check the node's InternalIP)"
            )
        port = ports[0]
        if not port.trunk_parent_of:
            raise NodeNotNested(
                f"node {node_name}: its port {port.id} (address {ip} on subnet {subnet.id}) "
                "is not the parent port of a trunk, so pods on it cannot get VLAN subports; "
                f"create one: openstack network trunk create --parent-port {port.id} "
                f"trunk-{node_name}"
            )
        target = TrunkTarget(node_name, port.trunk_parent_of, port.id, ip)
        self._cache[(node_name, ip)] = (now + self._ttl, target)
        return target

    def forget_trunk(self, trunk_id: str) -> None:
        """Drop cached targets on this trunk (an attach found it gone)."""
        for key in [k for k, (_, t) in self._cache.items() if t.trunk_id == trunk_id]:
            del self._cache[key]

    def cached_trunks(self) -> set[str]:
        """Trunk ids of unexpired cached targets."""
        now = self._clock()
        return {t.trunk_id for expiry, t in self._cache.values() if expiry > now}
