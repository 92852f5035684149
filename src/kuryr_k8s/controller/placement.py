"""Where a pod's port goes: the one seam between "which network and SGs" and the ports.

The KuryrPort reconciler asks a :class:`PodPlacement` for the pod's network (project,
network, subnet(s), MTU: a :class:`~kuryr_k8s.controller.kuryrports.PodNetwork`) and its
security groups; the port provider then hands out a port of the pool keyed by exactly that
(node or trunk, project, network, sorted SGs). See ``docs/design/pool-ownership.md``
(decision 10).

* :class:`StaticPlacement` (default, ``[kubernetes] pod_subnets_driver = default`` and
  ``pod_security_groups_driver = default``): the ``[neutron_defaults]`` network and SGs,
  resolved once at start.
* Namespace networks (``KuryrNetwork``) and NetworkPolicy SGs (``KuryrNetworkPolicy``)
  implement the same Protocol. A placement that cannot answer *yet* (the namespace's
  network is being created, a policy's SG is not there yet) raises
  :class:`~kuryr_k8s.model.errors.ResourceNotReady`; the KuryrPort waits (no port is
  taken), so a pod is never wired with the wrong network or without its policy SGs.
* ``vif_network(port)`` maps a port back to the network description the VIF needs
  (subnets for CIDR and gateway, MTU), for ports the ledger already holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from kuryr_k8s.k8s.objects import Obj

if TYPE_CHECKING:
    from kuryr_k8s.controller.kuryrports import PodNetwork


class PodPlacement(Protocol):
    async def network_for(self, pod: Obj) -> PodNetwork:
        """The network (and subnets, MTU) the pod's port must be on."""
        ...

    async def security_groups_for(self, pod: Obj, network: PodNetwork) -> tuple[str, ...]:
        """The sorted SG ids the pod's port must carry, now."""
        ...


class StaticPlacement:
    """Every pod on the ``[neutron_defaults]`` network with its SGs."""

    def __init__(self, network: PodNetwork) -> None:
        self.network = network

    async def network_for(self, pod: Obj) -> PodNetwork:
        return self.network

    async def security_groups_for(self, pod: Obj, network: PodNetwork) -> tuple[str, ...]:
        return tuple(sorted(network.security_groups))
