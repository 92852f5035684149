"""The KuryrLoadBalancer reconciler: exactly one Octavia load balancer per KuryrLoadBalancer.

For a key ``namespace/name``, level-triggered (no create/update/delete branches: each
pass reads Octavia and converges):

* **live**: the LB tagged ``kuryr.cluster:<id>`` + ``kuryr.owner:<Service uid>`` is found
  (or created with VIP = the Service's clusterIP on the service subnet; a second one, left
  by a crash between create and status write, is deleted); then, waiting for ``ACTIVE``
  after every change, one listener + pool per (protocol, port), members = the ready
  endpoints (Octavia's batch member update, one call per pool that changed), extra
  listeners/pools deleted; for ``type: LoadBalancer`` a floating IP on the external
  network on the VIP port (``loadBalancerIP`` honoured), written to the Service's
  ``status.loadBalancer.ingress``. The status lists the LB, listeners, pools, members and
  the public IP (upstream's fields) and a ``Ready`` condition.
* ``loadBalancerSourceRanges`` of a ``type: LoadBalancer`` Service become every
  listener's ``allowed_cidrs`` (the ranges plus the cluster's own subnets: the VIP is the
  clusterIP too). A provider that cannot filter (the ovn provider answers 501) leaves
  them NOT enforced: condition ``SourceRangesEnforced=False`` naming Octavia's answer and
  a Warning Event on the Service; never silently open.
* ``[octavia_defaults] enforce_sg_rules`` (upstream's meaning, for a provider that hides
  the client's address from the backends, amphora): each listener's ``allowed_cidrs`` are
  narrowed to the sources the members' own security groups admit to their port (Octavia
  writes them as rules on the VIP port's group). No effect with the ovn provider: it
  keeps the client's address, so the backends' groups filter it themselves.
* **gone** (being deleted): our floating IPs are deleted (a user's is disassociated), the
  LB is cascade-deleted and waited for, then the finalizer goes.

An LB in ``PENDING_*`` is polled with a growing delay and requeued (never blocks a worker
for long); an LB in ``ERROR`` is deleted and made again. Failures become a ``Ready=False``
condition and a Warning Event on the Service, and are retried with backoff.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kuryr_k8s.controller import logs
from kuryr_k8s.controller.engine import Result
from kuryr_k8s.controller.finalizers import add_finalizer, remove_finalizer
from kuryr_k8s.controller.kuryrports import EventSink, condition, merge_conditions
from kuryr_k8s.controller.services import owner_uid
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.informer import Store
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import KURYRLOADBALANCERS, SERVICES
from kuryr_k8s.model import kuryrloadbalancer as klb_model
from kuryr_k8s.model.errors import KuryrError, PermanentError, TemporaryError
from kuryr_k8s.model.kuryrloadbalancer import DesiredLb, DesiredListener
from kuryr_k8s.openstack.neutron import FloatingIp, Neutron
from kuryr_k8s.openstack.octavia import (
    LbImmutable,
    LbInError,
    Listener,
    LoadBalancer,
    Member,
    MemberSpec,
    Octavia,
    OctaviaNotFound,
    OctaviaRejected,
    OctaviaUnsupported,
    Pool,
)

LOG = logging.getLogger(__name__)

OWNER_PREFIX = "kuryr.owner:"
CLUSTER_PREFIX = "kuryr.cluster:"
HM_TYPES = {"TCP": "TCP", "UDP": "UDP-CONNECT", "SCTP": "SCTP"}
SOURCE_RANGES = "SourceRangesEnforced"
"""KuryrLoadBalancer condition of a Service with ``loadBalancerSourceRanges``."""


@dataclass(frozen=True)
class LbSettings:
    """Where load balancers go and how they are built (resolved at start)."""

    cluster_id: str
    project_id: str
    vip_subnet_id: str
    provider: str = "ovn"
    algorithm: str = "SOURCE_IP_PORT"
    member_subnets: tuple[tuple[str, str], ...] = ()
    """(subnet id, CIDR) of the subnets endpoints are on (pods, worker nodes)."""
    external_network_id: str = ""
    """``[neutron_defaults] external_svc_net``: floating IPs for ``type: LoadBalancer``."""
    resource_tags: tuple[str, ...] = ()
    vip_subnet_cidr: str = ""
    """The service subnet's CIDR (the clusterIPs)."""
    health_monitors: bool = False
    enforce_sg_rules: bool = False
    """``[octavia_defaults] enforce_sg_rules``: see the module docstring (not ovn)."""
    step_wait: float = 30.0
    """Seconds one pass waits for ``ACTIVE`` after a change before it requeues."""

    @property
    def cluster_tag(self) -> str:
        return f"{CLUSTER_PREFIX}{self.cluster_id}"

    def tags(self, owner: str) -> list[str]:
        return [self.cluster_tag, f"{OWNER_PREFIX}{owner}", *self.resource_tags]

    def subnet_of(self, address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        for subnet_id, cidr in self.member_subnets:
            if ip in ipaddress.ip_network(cidr):
                return subnet_id
        return ""

    def internal_cidrs(self, vip: str) -> tuple[str, ...]:
        """Sources of the cluster itself: pod and node subnets, the service subnet, the VIP."""
        cidrs = [cidr for _, cidr in self.member_subnets]
        return (*cidrs, *([self.vip_subnet_cidr] if self.vip_subnet_cidr else []), f"{vip}/32")


def owner_of(tags: Sequence[str]) -> str:
    return next((t[len(OWNER_PREFIX) :] for t in tags if t.startswith(OWNER_PREFIX)), "")


class KuryrLoadBalancerReconciler:
    kind = "kuryrloadbalancer"

    def __init__(
        self,
        client: KubeClient,
        klbs: Store,
        services: Store,
        octavia: Octavia,
        neutron: Neutron,
        settings: LbSettings,
        events: EventSink,
    ) -> None:
        self._client = client
        self._klbs = klbs
        self._services = services
        self._octavia = octavia
        self._neutron = neutron
        self._s = settings
        self._events = events
        self._acl_refused: dict[str, str] = {}
        """Provider -> Octavia's answer when it refused listener ``allowed_cidrs`` (asked
        once per process, not on every pass)."""

    async def reconcile(self, key: str) -> Result:
        logs.bind(pod=f"svc:{key}", port="-")
        klb = self._klbs.get(key)
        if klb is None:
            return Result()
        owner = owner_uid(klb) or objects.uid(klb)
        if objects.is_deleting(klb):
            await self.release(owner)
            await remove_finalizer(self._client, KURYRLOADBALANCERS, klb, klb_model.KLB_FINALIZER)
            LOG.info("load balancer released: removed the KuryrLoadBalancer finalizer")
            return Result()
        klb = await add_finalizer(self._client, KURYRLOADBALANCERS, klb, klb_model.KLB_FINALIZER)
        desired = klb_model.desired_lb(klb.get("spec") or {}, self._s.subnet_of)
        svc = self._services.get(key)
        ranges = klb_model.source_ranges(svc) if svc is not None else klb_model.SourceRanges()
        try:
            status, extra = await self._converge(klb, owner, desired, ranges)
        except KuryrError as exc:
            await self._failed(klb, exc)
            raise
        await self._write_status(klb, status, ok=True, reason="Converged", message="", extra=extra)
        if svc is not None and extra and extra[0]["status"] == "False":
            await self._events.emit(
                svc, "SourceRangesNotEnforced", extra[0]["message"], type="Warning"
            )
        await self._publish(key, status)
        return Result()

    # ---- converge ---------------------------------------------------------------------

    async def _converge(
        self, klb: Obj, owner: str, want: DesiredLb, ranges: klb_model.SourceRanges
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Octavia converged to ``want``; the status and the conditions beside Ready."""
        tags = self._s.tags(owner)
        if not want.vip:
            raise PermanentError("the Service has no clusterIP")
        if ranges.invalid:  # before anything is made
            raise PermanentError(
                f"loadBalancerSourceRanges {', '.join(map(repr, ranges.invalid))}: not a "
                "CIDR; fix the Service's spec.loadBalancerSourceRanges (or its "
                f"{klb_model.SOURCE_RANGES_ANNOTATION} annotation), e.g. 203.0.113.0/24"
            )
        acl = klb_model.allowed_cidrs(ranges, self._s.internal_cidrs(want.vip))
        refusals: set[str] = set()
        lb = await self._ensure_lb(klb, owner, want, tags)
        listeners = {
            (li.protocol, li.protocol_port): li for li in await self._octavia.listeners(lb.id)
        }
        pools = await self._octavia.pools(lb.id)
        wanted = {d.key: d for d in want.listeners}
        for lkey, listener in listeners.items():
            if lkey in wanted:
                continue
            for pool in pools:
                if listener.id in pool.listener_ids or pool.id == listener.default_pool_id:
                    await self._octavia.delete_pool(pool.id)
                    await self._active(lb.id)
            await self._octavia.delete_listener(listener.id)
            await self._active(lb.id)
            LOG.info("removed listener %s/%s", *lkey)
        status: dict[str, Any] = {
            "loadbalancer": {
                "id": lb.id,
                "ip": lb.vip_address,
                "name": lb.name,
                "port_id": lb.vip_port_id,
                "project_id": lb.project_id,
                "provider": lb.provider,
                "subnet_id": lb.vip_subnet_id,
                "security_groups": [],
            },
            "listeners": [],
            "pools": [],
            "members": [],
        }
        for d in want.listeners:
            existing = listeners.get(d.key)
            listener = existing or await self._octavia.create_listener(
                lb.id, name=self._name(klb, d), protocol=d.protocol, port=d.port, tags=tags
            )
            if existing is None:
                await self._active(lb.id)
                LOG.info("created listener %s/%s", d.protocol, d.port)
            found_pool = next(
                (
                    p
                    for p in pools
                    if listener.id in p.listener_ids or p.id == listener.default_pool_id
                ),
                None,
            )
            pool = found_pool or await self._octavia.create_pool(
                listener.id,
                name=self._name(klb, d),
                protocol=d.protocol,
                algorithm=self._s.algorithm,
                tags=tags,
            )
            if found_pool is None:
                await self._active(lb.id)
            await self._ensure_hm(lb, pool, d, tags)
            members = await self._ensure_members(lb, pool, d, tags)
            listener_acl = klb_model.listener_acl(acl, await self._member_sources(lb, d))
            refused = await self._ensure_acl(lb, listener, listener_acl)
            if refused:
                refusals.add(refused)
            status["listeners"].append(
                {
                    "id": listener.id,
                    "name": listener.name,
                    "port": d.port,
                    "protocol": d.protocol,
                    "loadbalancer_id": lb.id,
                    "project_id": lb.project_id,
                    **(
                        {"allowed_cidrs": list(listener_acl)}
                        if listener_acl and not refused
                        else {}
                    ),
                }
            )
            status["pools"].append(
                {
                    "id": pool.id,
                    "name": pool.name,
                    "listener_id": listener.id,
                    "loadbalancer_id": lb.id,
                    "protocol": d.protocol,
                    "project_id": lb.project_id,
                }
            )
            status["members"] += [
                {
                    "id": m.id,
                    "ip": m.address,
                    "port": m.protocol_port,
                    "name": m.name,
                    "pool_id": pool.id,
                    "subnet_id": m.subnet_id,
                    "project_id": lb.project_id,
                }
                for m in sorted(members, key=lambda m: (m.address, m.protocol_port))
            ]
        fip = await self._ensure_fip(lb, owner, want, tags)
        if fip is not None:
            status["service_pub_ip_info"] = {
                "ip_id": fip.id,
                "ip_addr": fip.address,
                "alloc_method": "pool" if self._s.cluster_tag in fip.tags else "user",
            }
        return status, self._ranges_condition(lb, ranges, acl, refusals)

    def _ranges_condition(
        self,
        lb: LoadBalancer,
        ranges: klb_model.SourceRanges,
        acl: tuple[str, ...],
        refusals: set[str],
    ) -> list[dict[str, str]]:
        if not ranges.asked:
            return []
        asked = ", ".join((*ranges.cidrs, *ranges.ipv6)) or "none"
        v6 = (
            f"; IPv6 ranges {', '.join(ranges.ipv6)} cannot match a client of the IPv4 VIP "
            "and are left out"
            if ranges.ipv6
            else ""
        )
        now = objects.timestamp(datetime.now(UTC))
        if refusals:
            message = (
                f"loadBalancerSourceRanges ({asked}) are NOT enforced: Octavia's "
                f"{lb.provider} provider refused the listener allowed_cidrs "
                f"({'; '.join(sorted(refusals))}), so every source reaches the load "
                "balancer"
            )
            if lb.provider == "ovn":
                message += (
                    ". The ovn provider keeps the client's address: a NetworkPolicy "
                    "(ipBlock) on the backends restricts who reaches them"
                )
            return [condition(SOURCE_RANGES, False, "ProviderUnsupported", message, now)]
        message = (
            f"only {asked} and the cluster's own networks reach the load balancer: "
            f"listener allowed_cidrs {', '.join(acl)}{v6}"
        )
        return [condition(SOURCE_RANGES, True, "ListenerAllowedCidrs", message, now)]

    async def _member_sources(self, lb: LoadBalancer, d: DesiredListener) -> list[str] | None:
        """``enforce_sg_rules``: the sources the members' security groups admit to their
        port (None: any, or nothing to enforce: the ovn provider, no members, a member
        without a Neutron port or groups)."""
        if not self._s.enforce_sg_rules or lb.provider == "ovn" or not d.members:
            return None
        rules: dict[str, list[dict[str, Any]]] = {}
        out: list[str] = []
        for member in d.members:
            where = [f"ip_address={member.address}"]
            where += [f"subnet_id={member.subnet_id}"] if member.subnet_id else []
            ports = await self._neutron.list_ports(fixed_ips=where)
            groups = sorted({sg for port in ports for sg in port.security_groups})
            if not groups:
                return None
            missing = [sg for sg in groups if sg not in rules]
            if missing:  # one call for the groups not read yet (the adapter's raw call,
                # as openstack/security.py does)
                data = await self._neutron._call(
                    "list_security_group_rules",
                    "GET",
                    "/security-group-rules",
                    params={"security_group_id": missing},
                )
                rules.update({sg: [] for sg in missing})
                for rule in data["security_group_rules"]:
                    rules.setdefault(rule["security_group_id"], []).append(rule)
            admitted = klb_model.sg_sources(
                [r for sg in groups for r in rules[sg]], d.protocol, member.port
            )
            if admitted is None:
                return None
            out += admitted
        return out

    async def _ensure_acl(self, lb: LoadBalancer, listener: Listener, acl: tuple[str, ...]) -> str:
        """The listener's ``allowed_cidrs`` made ``acl``; '' when they are, else the
        provider's refusal (the listener is then left as it was)."""
        if sorted(listener.allowed_cidrs) == sorted(acl):
            return ""
        refused = self._acl_refused.get(lb.provider, "")
        if refused and acl:
            return refused
        try:
            await self._octavia.set_allowed_cidrs(listener.id, acl)
        except OctaviaUnsupported as exc:
            LOG.warning("listener %s: allowed_cidrs refused: %s", listener.id, exc)
            self._acl_refused[lb.provider] = str(exc)
            return str(exc)
        await self._active(lb.id)
        LOG.info(
            "listener %s/%s: allowed_cidrs %s",
            listener.protocol,
            listener.protocol_port,
            ", ".join(acl) or "none (every source)",
        )
        return ""

    def _name(self, klb: Obj, d: DesiredListener) -> str:
        return f"{objects.namespace(klb)}/{objects.name(klb)}:{d.protocol}:{d.port}"

    async def _active(self, lb_id: str) -> LoadBalancer:
        return await self._octavia.wait_active(lb_id, within=self._s.step_wait)

    async def _ensure_lb(
        self, klb: Obj, owner: str, want: DesiredLb, tags: list[str]
    ) -> LoadBalancer:
        found = [
            lb
            for lb in await self._octavia.find_loadbalancers(tags[:2])
            if lb.provisioning_status != "PENDING_DELETE"  # going: neither ours nor extra
        ]
        for extra in found[1:]:  # a crash between a create and its status write, twice
            LOG.warning("deleting a second load balancer %s of this Service", extra.id)
            with contextlib.suppress(LbImmutable, OctaviaNotFound):  # pending: next pass
                await self._octavia.delete_loadbalancer(extra.id)
        lb = found[0] if found else None
        if lb is not None and lb.vip_address != want.vip:
            # clusterIP changed (Service recreated under the same uid cannot happen; an
            # edited KuryrLoadBalancer can): the VIP cannot move, make a new LB.
            LOG.warning(
                "load balancer %s has VIP %s, want %s: replacing it",
                lb.id,
                lb.vip_address,
                want.vip,
            )
            await self._octavia.delete_loadbalancer(lb.id)
            raise TemporaryError("replacing the load balancer (VIP changed)", delay=1.0)
        if lb is None:
            lb = await self._octavia.create_loadbalancer(
                name=f"{objects.namespace(klb)}/{objects.name(klb)}",
                vip_subnet_id=want.subnet_id or self._s.vip_subnet_id,
                vip_address=want.vip,
                provider=want.provider or self._s.provider,
                project_id=self._s.project_id,
                tags=tags,
                description=f"kuryr: Service {objects.namespace(klb)}/{objects.name(klb)}",
            )
            LOG.info("created load balancer %s (VIP %s)", lb.id, lb.vip_address)
        if lb.provisioning_status == "ACTIVE":  # as listed: no need to ask again
            return lb
        try:
            return await self._active(lb.id)
        except LbInError:
            LOG.warning("load balancer %s is in ERROR: deleting it to make a new one", lb.id)
            await self._octavia.delete_loadbalancer(lb.id)
            raise

    async def _ensure_hm(
        self, lb: LoadBalancer, pool: Pool, d: DesiredListener, tags: list[str]
    ) -> None:
        if not self._s.health_monitors or pool.healthmonitor_id:
            return
        await self._octavia.create_healthmonitor(
            pool.id,
            type_=HM_TYPES.get(d.protocol, "TCP"),
            delay=5,
            answer_within=3,
            max_retries=3,
            tags=tags,
        )
        await self._active(lb.id)

    async def _ensure_members(
        self, lb: LoadBalancer, pool: Pool, d: DesiredListener, tags: list[str]
    ) -> list[Member]:
        """The pool's members are exactly ``d.members``: one batch update if not, then
        Octavia's list is waited for until it says so (see :meth:`Octavia.wait_members`;
        a member lost to the provider's late report is a temporary error: sent again)."""
        want = {(m.address, m.port) for m in d.members}
        have = await self._octavia.settled_members(pool.id, within=self._s.step_wait)
        if {(m.address, m.protocol_port) for m in have} == want:
            return have
        specs = [MemberSpec(m.address, m.port, m.subnet_id, name=m.address) for m in d.members]
        await self._octavia.replace_members(pool.id, specs, tags)
        await self._active(lb.id)
        got = await self._octavia.wait_members(pool.id, want, within=self._s.step_wait)
        LOG.info(
            "pool %s/%s: members %s",
            d.protocol,
            d.port,
            ", ".join(f"{m.address}:{m.port}" for m in d.members) or "none",
        )
        return got

    async def _ensure_fip(
        self, lb: LoadBalancer, owner: str, want: DesiredLb, tags: list[str]
    ) -> FloatingIp | None:
        on_vip = await self._neutron.list_floating_ips(port_id=lb.vip_port_id)
        if not want.public:
            await self._drop_fips(on_vip)
            return None
        if not self._s.external_network_id:
            raise PermanentError(
                "type LoadBalancer needs [neutron_defaults] external_svc_net (the external "
                "network floating IPs come from) in kuryr.conf"
            )
        keep = next((f for f in on_vip if not want.lb_ip or f.address == want.lb_ip), None)
        await self._drop_fips([f for f in on_vip if f is not keep])
        if keep is not None:
            return keep
        if want.lb_ip:
            existing = await self._neutron.list_floating_ips(floating_ip_address=want.lb_ip)
            if existing:
                fip = existing[0]
                if fip.port_id and fip.port_id != lb.vip_port_id:
                    raise PermanentError(
                        f"loadBalancerIP {want.lb_ip}: that floating IP is in use by port "
                        f"{fip.port_id}; pick a free one or leave loadBalancerIP empty"
                    )
                LOG.info("associating the user's floating IP %s", fip.address)
                return await self._neutron.associate_floating_ip(fip.id, lb.vip_port_id)
        # Ours: created already associated (one call), found by port next time.
        for stale in await self._neutron.list_floating_ips(tags=",".join(tags[:2])):
            if stale.port_id != lb.vip_port_id:
                await self._neutron.delete_floating_ip(stale.id)
        fip = await self._neutron.create_floating_ip(
            self._s.external_network_id,
            project_id=self._s.project_id,
            port_id=lb.vip_port_id,
            tags=tags,
            address=want.lb_ip,
            description=f"kuryr: {lb.name}",
        )
        LOG.info("floating IP %s for VIP %s", fip.address, lb.vip_address)
        return fip

    async def _drop_fips(self, fips: Sequence[FloatingIp]) -> None:
        for fip in fips:
            if self._s.cluster_tag in fip.tags:
                await self._neutron.delete_floating_ip(fip.id)
            else:
                await self._neutron.associate_floating_ip(fip.id, None)

    # ---- release ----------------------------------------------------------------------

    async def release(self, owner: str) -> None:
        """Delete the owner's floating IPs and load balancers (cascade), waiting for them."""
        tags = self._s.tags(owner)[:2]
        for fip in await self._neutron.list_floating_ips(tags=",".join(tags)):
            await self._neutron.delete_floating_ip(fip.id)
        for lb in await self._octavia.find_loadbalancers(tags):
            await self._drop_fips(await self._neutron.list_floating_ips(port_id=lb.vip_port_id))
            if lb.provisioning_status not in ("PENDING_DELETE",):
                with contextlib.suppress(OctaviaRejected):  # PENDING_CREATE: wait_gone asks again
                    await self._octavia.delete_loadbalancer(lb.id)
            await self._octavia.wait_gone(lb.id, within=self._s.step_wait)
            LOG.info("deleted load balancer %s", lb.id)

    # ---- status -----------------------------------------------------------------------

    async def _failed(self, klb: Obj, exc: KuryrError) -> None:
        reason = type(exc).__name__
        old = dict(klb.get("status") or {})
        kept = [  # what was said about the source ranges still holds
            c for c in old.get("conditions") or [] if c.get("type") == SOURCE_RANGES
        ]
        await self._write_status(klb, old, ok=False, reason=reason, message=str(exc), extra=kept)
        svc = self._services.get(objects.key(klb))
        if svc is not None:
            kind = "Warning" if isinstance(exc, PermanentError) else "Normal"
            await self._events.emit(svc, "LoadBalancerNotReady", f"{reason}: {exc}", type=kind)

    async def _write_status(
        self,
        klb: Obj,
        status: dict[str, Any],
        *,
        ok: bool,
        reason: str,
        message: str,
        extra: Sequence[dict[str, str]] = (),
    ) -> None:
        old = klb.get("status") or {}
        now = objects.timestamp(datetime.now(UTC))
        ready = condition("Ready", ok, reason, message, now)
        status = {k: v for k, v in status.items() if k != "conditions"}
        status["conditions"] = merge_conditions(list(old.get("conditions") or []), [ready, *extra])
        if status == old:
            return
        body = {"status": {**{k: None for k in old if k not in status}, **status}}
        with contextlib.suppress(NotFound):
            await self._client.patch(
                KURYRLOADBALANCERS,
                objects.name(klb),
                body,
                objects.namespace(klb),
                subresource="status",
            )

    async def _publish(self, key: str, status: dict[str, Any]) -> None:
        """The public IP into the Service's ``status.loadBalancer.ingress``."""
        svc = self._services.get(key)
        if svc is None or objects.is_deleting(svc):
            return
        pub = (status.get("service_pub_ip_info") or {}).get("ip_addr")
        want = [{"ip": pub}] if pub else []
        have = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if have == want:
            return
        patch = {"status": {"loadBalancer": {"ingress": want or None}}}  # None: merge-delete
        with contextlib.suppress(NotFound):
            await self._client.patch(
                SERVICES, objects.name(svc), patch, objects.namespace(svc), subresource="status"
            )
