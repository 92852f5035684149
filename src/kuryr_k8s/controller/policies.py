"""NetworkPolicy → ``KuryrNetworkPolicy`` → Neutron security groups and address groups.

One reconciler, keyed by the policy's ``namespace/name`` (the KuryrNetworkPolicy has the
same key). It re-reads the policy, the pods and the namespaces from informer caches,
computes the plan (:func:`kuryr_k8s.model.netpolicy.plan_policy`) and converges Neutron:

* address groups ``kuryr:<cluster>:<policy uid>:<key>`` hold the peers (pod IPs and
  ipBlock CIDRs); pod churn changes only their addresses (one ``PUT`` per changed group);
* one SG per variant, tagged cluster + ``kuryr.owner:<policy uid>`` + ``kuryr.sgvariant:<key>``,
  rules diffed (new rules created before old ones are deleted);
* ``status.securityGroups`` (variant → SG id) is written only after Neutron has them, and the
  placement (:class:`PolicyPlacement`) hands a pod its SGs only from that status, so a new
  pod selected by a policy is never wired without that policy's SG.

A deleted policy: the placement stops naming its SGs at once (pods' ports get the open SGs
of the directions nothing else isolates, through the KuryrPort reconciler); its SGs are
deleted once no port uses them (Neutron refuses while one does: retried), then its address
groups, then the KuryrNetworkPolicy finalizer is dropped.

Pods selected by no policy get the ``[neutron_defaults]`` SGs plus the cluster's
``open-ingress`` and ``open-egress`` SGs (allow everything): Kubernetes says they are not
isolated, whatever the operator's default SG allows. A selected pod gets its policies' SGs
plus ``open-ingress``/``open-egress`` for a direction no selecting policy isolates.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kuryr_k8s.controller.engine import Engine, EngineSettings, Result
from kuryr_k8s.controller.finalizers import add_finalizer, remove_finalizer
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import AlreadyExists, NotFound
from kuryr_k8s.k8s.events import EventRecorder
from kuryr_k8s.k8s.informer import Informer, Store
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import (
    ENDPOINTSLICES,
    KURYRNETWORKPOLICIES,
    NAMESPACES,
    NETWORKPOLICIES,
    SERVICES,
)
from kuryr_k8s.model import netpolicy as np_model
from kuryr_k8s.model.errors import ResourceNotReady, TemporaryError
from kuryr_k8s.model.kuryrnetwork import KNP_FINALIZER, POLICY_LABEL
from kuryr_k8s.openstack.neutron import QuotaExceeded
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX, OWNER_TAG_PREFIX
from kuryr_k8s.openstack.security import (
    Rule,
    SecurityApi,
    SecurityGroup,
    SecurityGroupInUse,
)

if TYPE_CHECKING:
    from kuryr_k8s.controller.kuryrports import PodNetwork

LOG = logging.getLogger(__name__)

QUOTA_RETRY = 30.0
SG_RETIRE_GRACE = 5.0
"""Seconds an SG must have been unused by every port (Neutron's DB view) before it is
deleted. ML2/OVN commits a port update to its DB, *then* moves the port between OVN port
groups in the same request: an SG deleted in that window takes its port group along and
the port's whole OVN transaction fails ("Port group pg_... does not exist"), so the port
keeps stale port-group membership (traffic wrongly denied, or allowed) until Neutron's
maintenance task repairs it minutes later. Seen in the policy e2e on a loaded host."""
"""Seconds between attempts while Neutron refuses a policy's groups for the quota."""

VARIANT_TAG = "kuryr.sgvariant:"
ROLE_TAG = "kuryr.sgrole:"
OPEN_INGRESS, OPEN_EGRESS = "open-ingress", "open-egress"


def pod_has_port(pod: Obj) -> bool:
    """Pods that get a Neutron port (not hostNetwork, not finished)."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def ips_from(kuryrports: Store | None) -> Callable[[Obj], tuple[str, ...]]:
    """A pod's addresses: ``status.podIPs``, else its KuryrPort's VIF (known before the
    kubelet reports the pod's IP, so a new peer is allowed as early as possible)."""

    def ips_of(pod: Obj) -> tuple[str, ...]:
        ips = set(np_model.pod_ips(pod))
        if kuryrports is not None:
            kp = kuryrports.get(objects.key(pod))
            if kp is not None and (kp.get("spec") or {}).get("podUid") == objects.uid(pod):
                for entry in ((kp.get("status") or {}).get("vifs") or {}).values():
                    for ip in ((entry or {}).get("vif") or {}).get("ips") or ():
                        if ip.get("address"):
                            ips.add(str(ip["address"]))
        return tuple(sorted(ips))

    return ips_of


@dataclass
class PolicyWorld:
    """The caches a plan is computed from."""

    policies: Store
    knps: Store
    pods: Store
    namespaces: Store
    kuryrports: Store | None = None
    synced: Callable[[], bool] = lambda: True
    services: Store | None = None
    slices: Store | None = None
    """Services and EndpointSlices: an egress policy also allows the clusterIP of the
    Services whose endpoints it allows (None: no Services considered)."""

    def check_synced(self) -> None:
        if not self.synced():
            raise ResourceNotReady("the NetworkPolicy/Pod/Namespace caches have not synced yet")

    def live_pods(self) -> list[Obj]:
        return [p for p in self.pods.items() if pod_has_port(p)]

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {objects.name(ns): dict(objects.labels(ns)) for ns in self.namespaces.items()}

    def service_ports(self) -> list[np_model.ServicePort]:
        if self.services is None or self.slices is None:
            return []
        return np_model.service_ports(self.services.items(), self.slices.items())

    def plan(self, policy: Obj, unsupported: Collection[str]) -> np_model.PolicyPlan:
        return np_model.plan_policy(
            policy,
            self.live_pods(),
            self.namespace_labels(),
            unsupported_protocols=unsupported,
            ips_of=ips_from(self.kuryrports),
            services=self.service_ports() if np_model.policy_types(policy)[1] else (),
        )

    def active_policies(self, namespace: str) -> list[Obj]:
        return [
            p
            for p in self.policies.items()
            if objects.namespace(p) == namespace and not objects.is_deleting(p)
        ]


def _ag_prefix(cluster_id: str, owner_uid: str) -> str:
    return f"kuryr:{cluster_id}:{owner_uid}:"


def _rule_bodies(
    rule: np_model.SgRule, plan: np_model.PolicyPlan, ag_ids: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    """Neutron rule bodies of one planned rule: one rule naming the address group, or
    (``ag_ids`` None: ``ip_prefix`` mode) one rule per CIDR of the group (none if empty)."""
    body = np_model.rule_body(
        rule.direction, rule.ethertype, rule.protocol, rule.port_min, rule.port_max
    )
    if rule.remote_group is None:
        return [body]
    if ag_ids is not None:
        return [{**body, "remote_address_group_id": ag_ids[rule.remote_group]}]
    version = 4 if rule.ethertype == "IPv4" else 6
    return [
        {**body, "remote_ip_prefix": cidr}
        for cidr in sorted(plan.address_groups[rule.remote_group])
        if ipaddress.ip_network(cidr).version == version
    ]


def body_key(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a Neutron rule body the same rule (its id aside); "any address" as a
    prefix is no prefix, as Neutron's duplicate check has it."""
    prefix = body.get("remote_ip_prefix")
    return (
        body.get("direction"),
        body.get("ethertype"),
        body.get("protocol"),
        body.get("port_range_min"),
        body.get("port_range_max"),
        None if prefix in ("0.0.0.0/0", "::/0") else prefix,
        body.get("remote_group_id"),
        body.get("remote_address_group_id"),
    )


def rule_key(rule: Rule) -> tuple[Any, ...]:
    """:func:`body_key` of a rule read from Neutron."""
    return body_key(
        {
            "direction": rule.direction,
            "ethertype": rule.ethertype,
            "protocol": rule.protocol,
            "port_range_min": rule.port_min,
            "port_range_max": rule.port_max,
            "remote_ip_prefix": rule.remote_ip_prefix,
            "remote_group_id": rule.remote_group_id,
            "remote_address_group_id": rule.remote_address_group_id,
        }
    )


@dataclass
class _Applied:
    uid: str
    plan: np_model.PolicyPlan
    sg_ids: dict[str, str]
    ag_ids: dict[str, str]


class SgRetirement:
    """Deletes SGs only once no port has named them for :data:`SG_RETIRE_GRACE`."""

    def __init__(self, api: SecurityApi, clock: Callable[[], float]) -> None:
        self.api = api
        self._clock = clock
        self._unused_since: dict[str, float] = {}

    def keep(self, sg_id: str) -> None:
        """The SG is wanted again: its grace starts over when it is unused next."""
        self._unused_since.pop(sg_id, None)

    async def retire(self, sg_id: str) -> bool:
        """True once the SG is gone; False while a port uses it or the grace runs (ask
        again later)."""
        if await self.api.ports_using(sg_id):
            self.keep(sg_id)
            return False
        since = self._unused_since.setdefault(sg_id, self._clock())
        if self._clock() - since < SG_RETIRE_GRACE:
            return False
        try:
            await self.api.delete_security_group(sg_id)
        except SecurityGroupInUse as exc:  # a port took it again since the list
            LOG.debug("SG %s not deleted yet: %s", sg_id, exc)
            self.keep(sg_id)
            return False
        self.keep(sg_id)
        return True


class ClusterSecurityGroups:
    """The cluster's ``open-ingress`` and ``open-egress`` SGs (allow everything one way)."""

    def __init__(self, api: SecurityApi, cluster_id: str, project_id: str) -> None:
        self.api = api
        self.cluster_tag = CLUSTER_TAG_PREFIX + cluster_id
        self.project_id = project_id
        self.ids: dict[str, str] = {}

    async def ensure(self) -> dict[str, str]:
        """Look up by tag, create what is missing (idempotent); ``role -> SG id``."""
        for role, direction in ((OPEN_INGRESS, "ingress"), (OPEN_EGRESS, "egress")):
            tags = [self.cluster_tag, ROLE_TAG + role]
            found = await self.api.list_security_groups(tags)
            sg = found[0] if found else None
            if sg is None:
                sg = await self.api.create_security_group(
                    f"kuryr-{role}", self.project_id, tags, "kuryr-kubernetes: not isolated"
                )
            for extra in found[1:]:
                await self.api.delete_security_group(extra.id)
            have = {(r.direction, r.ethertype, r.protocol, r.remote_ip_prefix) for r in sg.rules}
            want = [
                {"direction": direction, "ethertype": eth}
                for eth in np_model.ETHERTYPES
                if (direction, eth, None, None) not in have
            ]
            await self.api.create_rules(sg.id, self.project_id, want)
            self.ids[role] = sg.id
        return dict(self.ids)

    async def delete(self) -> None:
        for role in (OPEN_INGRESS, OPEN_EGRESS):
            for sg in await self.api.list_security_groups([self.cluster_tag, ROLE_TAG + role]):
                await self.api.delete_security_group(sg.id)


async def ensure_knp(client: KubeClient, policy: Obj, knp: Obj | None) -> Obj:
    """The policy's KuryrNetworkPolicy with its finalizer and a spec matching the policy
    (``knp``: the cached one, None if not seen); created if missing."""
    spec = policy.get("spec") or {}
    ingress, egress = np_model.policy_types(policy)
    want_spec = {
        "policyUid": objects.uid(policy),
        "podSelector": spec.get("podSelector") or {},
        "policyTypes": [t for t, on in (("Ingress", ingress), ("Egress", egress)) if on],
    }
    ns, name = objects.namespace(policy), objects.name(policy)
    if knp is None:
        body = {
            "metadata": {
                "name": name,
                "namespace": ns,
                "finalizers": [KNP_FINALIZER],
                "labels": {POLICY_LABEL: objects.uid(policy)},
            },
            "spec": want_spec,
        }
        try:
            return await client.create(KURYRNETWORKPOLICIES, body, ns)
        except AlreadyExists:
            knp = await client.get(KURYRNETWORKPOLICIES, name, ns)
    knp = await add_finalizer(client, KURYRNETWORKPOLICIES, knp, KNP_FINALIZER)
    if knp.get("spec") != want_spec:
        knp = await client.patch(KURYRNETWORKPOLICIES, name, {"spec": want_spec}, ns)
    return knp


async def write_knp_status(
    client: KubeClient,
    events: EventRecorder | None,
    knp: Obj,
    policy: Obj,
    status: Mapping[str, Any],
    ready: str,
    problems: Collection[str],
) -> None:
    """``status`` plus observedGeneration and the Ready/Unsupported conditions, written
    when it differs; a Warning Event when the policy cannot be fully expressed."""
    conditions = [
        {"type": "Ready", "status": "True", "reason": "Enforced", "message": ready},
        {
            "type": "Unsupported",
            "status": "True" if problems else "False",
            "reason": "NotExpressible" if problems else "AllExpressed",
            "message": "; ".join(problems) or "every rule is enforced",
        },
    ]
    full = {
        **status,
        "observedGeneration": int(objects.meta(policy).get("generation") or 0),
        "conditions": conditions,
    }
    old = knp.get("status") or {}
    if {k: old.get(k) for k in full} == full:
        return
    try:
        await client.patch(
            KURYRNETWORKPOLICIES,
            objects.name(knp),
            {"status": full},
            objects.namespace(knp),
            subresource="status",
        )
    except NotFound:
        raise ResourceNotReady(f"KuryrNetworkPolicy {objects.key(knp)} vanished") from None
    if problems and events is not None and old.get("conditions") != conditions:
        msg = "; ".join(problems)
        await events.emit(policy, "PolicyNotFullyExpressible", msg, type="Warning")


class PolicyReconciler:
    """Converges one NetworkPolicy's KuryrNetworkPolicy and Neutron SGs/address groups."""

    kind = "networkpolicy"

    def __init__(
        self,
        client: KubeClient,
        world: PolicyWorld,
        api: SecurityApi,
        *,
        cluster_id: str,
        project_id: str,
        events: EventRecorder | None = None,
        unsupported_protocols: Collection[str] = (),
        address_groups: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.world = world
        self.address_groups = address_groups
        """Peers as Neutron address groups (pod churn = one address-group update) where
        the ML2 driver enforces ``remote_address_group_id``; else one ``remote_ip_prefix``
        rule per peer CIDR (ML2/OVN before 2023.1 ignores the address group and would
        allow any remote: see docs/design/network-policy.md)."""
        self.api = api
        self.cluster_id = cluster_id
        self.cluster_tag = CLUSTER_TAG_PREFIX + cluster_id
        self.project_id = project_id
        self.events = events
        self.unsupported = frozenset(unsupported_protocols)
        self._applied: dict[str, _Applied] = {}
        self._retirement = SgRetirement(api, clock)

    async def reconcile(self, key: str) -> Result:
        self.world.check_synced()
        policy = self.world.policies.get(key)
        knp = self.world.knps.get(key)
        if policy is None or objects.is_deleting(policy):
            await self._remove(key, knp)
            return Result()
        if knp is not None and (knp.get("spec") or {}).get("policyUid") != objects.uid(policy):
            await self._remove(key, knp)  # a KNP left by an older policy of that name
            raise ResourceNotReady(f"KuryrNetworkPolicy {key} of an older policy removed")
        knp = await self._ensure_knp(policy, knp)
        plan = self.world.plan(policy, self.unsupported)
        uid = objects.uid(policy)
        status = knp.get("status") or {}
        applied = self._applied.get(key)
        if (
            applied is not None
            and applied.uid == uid
            and applied.plan == plan
            and status.get("fingerprint") == plan.fingerprint()
        ):
            return Result()
        same_neutron = (
            applied is not None
            and applied.uid == uid
            and applied.plan.sgs == plan.sgs
            and applied.plan.address_groups == plan.address_groups
        )
        ag_ids: dict[str, str]
        sg_ids: dict[str, str]
        try:
            if same_neutron and applied is not None:  # only selected pods changed
                ag_ids, sg_ids = dict(applied.ag_ids), dict(applied.sg_ids)
            elif not self.address_groups:
                ag_ids = {}
                sg_ids = await self._converge_sgs(uid, plan, None)
            elif applied is not None and applied.uid == uid and applied.plan.sgs == plan.sgs:
                ag_ids = await self._update_groups(uid, plan, applied)
                sg_ids = dict(applied.sg_ids)
            else:
                ag_ids = await self._converge_groups(uid, plan)
                sg_ids = await self._converge_sgs(uid, plan, ag_ids)
        except QuotaExceeded as exc:
            # Quotas free up when something else is deleted: keep trying (a permanent
            # error would leave the policy unenforced until the object changes).
            self._applied.pop(key, None)
            raise TemporaryError(
                f"{exc}: raise the project's quota or delete unused security groups / "
                "address groups; retrying",
                delay=QUOTA_RETRY,
            ) from exc
        except Exception:
            self._applied.pop(key, None)
            raise
        self._applied[key] = _Applied(uid, plan, sg_ids, ag_ids)
        await self._write_status(knp, policy, plan, sg_ids, ag_ids)
        if same_neutron:
            return Result()
        stale = await self._drop_stale(uid, plan, sg_ids, ag_ids)
        return Result(requeue_after=SG_RETIRE_GRACE if stale else None)

    # ---- KuryrNetworkPolicy ----------------------------------------------------------------

    async def _ensure_knp(self, policy: Obj, knp: Obj | None) -> Obj:
        return await ensure_knp(self.client, policy, knp)

    async def _write_status(
        self,
        knp: Obj,
        policy: Obj,
        plan: np_model.PolicyPlan,
        sg_ids: Mapping[str, str],
        ag_ids: Mapping[str, str],
    ) -> None:
        status = {
            "securityGroups": dict(sg_ids),
            "addressGroups": dict(ag_ids),
            "fingerprint": plan.fingerprint(),
            "selectedPods": len(plan.pod_variants),
        }
        ready = f"{len(sg_ids)} security group(s), {len(ag_ids)} address group(s)"
        await write_knp_status(self.client, self.events, knp, policy, status, ready, plan.problems)

    # ---- Neutron ---------------------------------------------------------------------------

    async def _converge_groups(self, uid: str, plan: np_model.PolicyPlan) -> dict[str, str]:
        prefix = _ag_prefix(self.cluster_id, uid)
        existing = {ag.name[len(prefix) :]: ag for ag in await self.api.list_address_groups(prefix)}
        ids: dict[str, str] = {}
        for key, addrs in sorted(plan.address_groups.items()):
            ag = existing.get(key)
            if ag is None:
                ag = await self.api.create_address_group(prefix + key, self.project_id, addrs)
            else:
                await self.api.change_addresses(ag.id, addrs - ag.addresses, ag.addresses - addrs)
            ids[key] = ag.id
        return ids

    async def _update_groups(
        self, uid: str, plan: np_model.PolicyPlan, applied: _Applied
    ) -> dict[str, str]:
        """Only addresses changed since the last applied plan: one PUT per changed group."""
        if set(plan.address_groups) != set(applied.ag_ids):
            return await self._converge_groups(uid, plan)
        for key, addrs in plan.address_groups.items():
            old = applied.plan.address_groups.get(key, frozenset())
            if addrs != old:
                await self.api.change_addresses(applied.ag_ids[key], addrs - old, old - addrs)
        return dict(applied.ag_ids)

    def _sg_tags(self, uid: str, variant: str) -> list[str]:
        return [self.cluster_tag, OWNER_TAG_PREFIX + uid, VARIANT_TAG + variant]

    async def _converge_sgs(
        self, uid: str, plan: np_model.PolicyPlan, ag_ids: Mapping[str, str] | None
    ) -> dict[str, str]:
        existing: dict[str, SecurityGroup] = {}
        for sg in await self.api.list_security_groups([self.cluster_tag, OWNER_TAG_PREFIX + uid]):
            variant = next(
                (t[len(VARIANT_TAG) :] for t in sg.tags if t.startswith(VARIANT_TAG)), ""
            )
            if variant in existing:  # a duplicate (a create retried): drop it
                await self.api.delete_security_group(sg.id)
                continue
            existing[variant] = sg
        ids: dict[str, str] = {}
        for variant, rules in sorted(plan.sgs.items()):
            found = existing.get(variant)
            sg = found or await self.api.create_security_group(
                f"kuryr-np-{uid[:8]}-{variant}", self.project_id, self._sg_tags(uid, variant)
            )
            want = {body_key(b): b for r in rules for b in _rule_bodies(r, plan, ag_ids)}
            have = {rule_key(r): r.id for r in sg.rules}
            await self.api.create_rules(
                sg.id, self.project_id, [b for k, b in want.items() if k not in have]
            )
            for k, rule_id in have.items():
                if k not in want:
                    await self.api.delete_rule(rule_id)
            ids[variant] = sg.id
        return ids

    async def _drop_stale(
        self,
        uid: str,
        plan: np_model.PolicyPlan,
        sg_ids: Mapping[str, str],
        ag_ids: Mapping[str, str],
    ) -> bool:
        """Delete SGs/address groups of this policy no longer in the plan; True if some are
        still in use (try again later)."""
        busy = False
        for sg in await self.api.list_security_groups([self.cluster_tag, OWNER_TAG_PREFIX + uid]):
            if sg.id not in sg_ids.values() and not await self._retire(sg.id):
                busy = True
        prefix = _ag_prefix(self.cluster_id, uid)
        for ag in await self.api.list_address_groups(prefix):
            if ag.id not in ag_ids.values():
                try:
                    await self.api.delete_address_group(ag.id)
                except Exception as exc:
                    LOG.debug("address group %s not deleted yet: %s", ag.id, exc)
                    busy = True
        return busy

    async def _retire(self, sg_id: str) -> bool:
        return await self._retirement.retire(sg_id)

    async def _remove(self, key: str, knp: Obj | None) -> None:
        """The policy is gone: its SGs (once unused), address groups, then the KNP."""
        self._applied.pop(key, None)
        if knp is None:
            return
        uid = str((knp.get("spec") or {}).get("policyUid") or "")
        if uid:
            busy = [
                sg.id
                for sg in await self.api.list_security_groups(
                    [self.cluster_tag, OWNER_TAG_PREFIX + uid]
                )
                if not await self._retire(sg.id)
            ]
            if busy:  # the KNP (and its finalizer) stays until its SGs are gone
                raise ResourceNotReady(
                    f"security groups {', '.join(busy)} of deleted policy {key} are still "
                    f"used by ports or were used less than {SG_RETIRE_GRACE:.0f} s ago",
                    delay=SG_RETIRE_GRACE,
                )
            for ag in await self.api.list_address_groups(_ag_prefix(self.cluster_id, uid)):
                await self.api.delete_address_group(ag.id)
        knp = await remove_finalizer(self.client, KURYRNETWORKPOLICIES, knp, KNP_FINALIZER)
        if not objects.is_deleting(knp):
            ns, name = objects.namespace(knp), objects.name(knp)
            with contextlib.suppress(NotFound):
                await self.client.delete(KURYRNETWORKPOLICIES, name, ns)


class PolicyPlacement:
    """The SGs of a pod under NetworkPolicy (``pod_security_groups_driver = policy``).

    Wraps the placement that knows the pod's network; answers the SG set from the
    KuryrNetworkPolicy statuses, or raises ResourceNotReady while a selecting policy's SG
    is not in Neutron yet (so the pod waits rather than being wired open).
    """

    def __init__(self, network_placement: Any, world: PolicyWorld, cluster: ClusterSecurityGroups):
        self.inner = network_placement
        self.world = world
        self.cluster = cluster

    async def network_for(self, pod: Obj) -> PodNetwork:
        result: PodNetwork = await self.inner.network_for(pod)
        return result

    async def security_groups_for(self, pod: Obj, network: PodNetwork) -> tuple[str, ...]:
        self.world.check_synced()
        if len(self.cluster.ids) < 2:
            raise ResourceNotReady("the cluster's open-ingress/open-egress SGs are not ready")
        sgs: set[str] = set()
        isolated_in = isolated_out = False
        for policy in self.world.active_policies(objects.namespace(pod) or ""):
            if not np_model.selects(policy, pod):
                continue
            knp = self.world.knps.get(objects.key(policy))
            status = (knp or {}).get("status") or {}
            if (knp or {}).get("spec", {}).get("policyUid") != objects.uid(policy):
                raise ResourceNotReady(f"NetworkPolicy {objects.key(policy)}: no SG yet")
            variant = np_model.variant_key(policy, pod)
            sg_id = (status.get("securityGroups") or {}).get(variant)
            if not sg_id:
                raise ResourceNotReady(
                    f"NetworkPolicy {objects.key(policy)}: SG for {objects.key(pod)} not ready"
                )
            sgs.add(str(sg_id))
            ingress, egress = np_model.policy_types(policy)
            isolated_in |= ingress
            isolated_out |= egress
        if not sgs:
            sgs.update(network.security_groups)
        if not isolated_in:
            sgs.add(self.cluster.ids[OPEN_INGRESS])
        if not isolated_out:
            sgs.add(self.cluster.ids[OPEN_EGRESS])
        return tuple(sorted(sgs))


def policy_keys_for_any_change(world: PolicyWorld) -> list[str]:
    """Every policy key (pods and namespaces may change any policy's peers)."""
    return sorted(set(world.policies.keys()) | set(world.knps.keys()))


@dataclass
class PolicyParts:
    """What :func:`build_policy_parts` makes: informers (put them in the Controller's
    ``caches``: their keys are routed here, not to every engine), the engine (one of the
    Controller's ``engines``), the startup step and the placement."""

    caches: list[Informer]
    engine: Engine
    cluster: ClusterSecurityGroups
    world: PolicyWorld
    reconciler: PolicyReconciler

    def placement(self, network_placement: Any) -> PolicyPlacement:
        return PolicyPlacement(network_placement, self.world, self.cluster)

    async def startup(self) -> None:
        await self.cluster.ensure()

    def converged(self) -> bool:
        """Every KuryrNetworkPolicy's status is its policy's plan now, and none outlives
        its policy (tests, benchmarks)."""
        for policy in self.world.policies.items():
            knp = self.world.knps.get(objects.key(policy))
            status = (knp or {}).get("status") or {}
            plan = self.world.plan(policy, self.reconciler.unsupported)
            if status.get("fingerprint") != plan.fingerprint():
                return False
        return set(self.world.knps.keys()) <= set(self.world.policies.keys())


def build_policy_parts(
    client: KubeClient,
    api: SecurityApi,
    *,
    cluster_id: str,
    project_id: str,
    pods: Informer,
    kuryrports: Informer | None = None,
    namespaces: Informer | None = None,
    events: EventRecorder | None = None,
    engine_settings: EngineSettings | None = None,
    unsupported_protocols: Collection[str] = (),
    address_groups: bool = False,
    services: bool = True,
) -> PolicyParts:
    """NetworkPolicy enforcement, wired: NetworkPolicy/KNP changes queue their key; pod,
    namespace, KuryrPort, Service and EndpointSlice changes queue every policy (they may
    change any peer set; the reconciler then costs nothing unless an address group really
    changed). ``services``: watch Services/EndpointSlices so egress policies also allow
    the clusterIPs of the Services they allow (docs/design/network-policy.md)."""
    caches, informers, world = policy_world(client, pods, kuryrports, namespaces, services)
    reconciler = PolicyReconciler(
        client,
        world,
        api,
        cluster_id=cluster_id,
        project_id=project_id,
        events=events,
        unsupported_protocols=unsupported_protocols,
        address_groups=address_groups,
    )
    engine = Engine(reconciler, engine_settings)

    def policy_changed(key: str) -> None:
        engine.enqueue(key)

    def peers_changed(key: str) -> None:
        engine.enqueue_all(policy_keys_for_any_change(world))

    nps, knps, *others = informers
    nps.add_handler(policy_changed)
    knps.add_handler(policy_changed)
    for informer in others:
        informer.add_handler(peers_changed)
    cluster = ClusterSecurityGroups(api, cluster_id, project_id)
    return PolicyParts(caches, engine, cluster, world, reconciler)


def policy_world(
    client: KubeClient,
    pods: Informer,
    kuryrports: Informer | None,
    namespaces: Informer | None,
    services: bool,
) -> tuple[list[Informer], list[Informer], PolicyWorld]:
    """The informers NetworkPolicy enforcement reads and the world over their stores:
    (caches to run: the ones made here; every informer read, NetworkPolicies and
    KuryrNetworkPolicies first; the world)."""
    nps = Informer(client, NETWORKPOLICIES)
    knps = Informer(client, KURYRNETWORKPOLICIES)
    nss = namespaces or Informer(client, NAMESPACES)
    svcs = [Informer(client, SERVICES), Informer(client, ENDPOINTSLICES)] if services else []
    caches = [nps, knps] + ([nss] if namespaces is None else []) + svcs
    informers = [nps, knps, pods, nss, *([kuryrports] if kuryrports is not None else []), *svcs]
    world = PolicyWorld(
        nps.store,
        knps.store,
        pods.store,
        nss.store,
        kuryrports.store if kuryrports is not None else None,
        synced=lambda: all(i.synced for i in informers),
        services=svcs[0].store if svcs else None,
        slices=svcs[1].store if svcs else None,
    )
    return caches, informers, world
