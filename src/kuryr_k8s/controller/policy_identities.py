"""NetworkPolicy enforced by one Neutron security group per pod *identity*.

``[network_policy] security_group_mode = identity`` (design and reasons:
``docs/design/network-policy-identities.md``; the plan is
:func:`kuryr_k8s.model.netidentity.plan_identities`). Every pod's port carries exactly one
SG, the SG of its identity (namespace, labels, named ports); policies change the *rules*
of identity SGs, never a port. A new policy over 100 running replicas is one rule diff on
one SG instead of 100 port updates.

One reconciler with one key (:data:`SYNC_KEY`): the identity SGs are a function of every
policy, pod, namespace and Service together, so each pass plans the whole cluster (off the
event loop) and converges only what changed since the last applied plan; events that
arrive meanwhile merge into one next pass (the work queue holds a key once). A pass:

1. creates the SG of every new identity (tagged cluster + ``kuryr.sgrole:identity`` +
   ``kuryr.identity:<key>``; looked up by tag first, so a restart adopts them);
2. converges the rules of every identity whose rule fingerprint changed: new rules in one
   bulk ``POST`` *before* stale ones are deleted (tightening never opens, and a deleted
   policy's pods get their allow-all rules before its rules go);
3. publishes ``identity -> SG`` for the placement (:class:`IdentityPlacement`), which
   answers a pod's SG only from a published identity and only once the pass has seen
   every policy of the pod's namespace as it is now: a new pod under a deny policy is
   never wired with open rules;
4. writes each policy's ``KuryrNetworkPolicy`` (spec, status: the SGs of the identities it
   selects, conditions, Events for what Neutron cannot express) and removes the KNPs of
   deleted policies once their rules are gone;
5. deletes the SGs of identities no pod has any more, once no port has used them for
   :data:`~kuryr_k8s.controller.policies.SG_RETIRE_GRACE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kuryr_k8s.controller.engine import Engine, EngineSettings, Result
from kuryr_k8s.controller.finalizers import remove_finalizer
from kuryr_k8s.controller.policies import (
    QUOTA_RETRY,
    ROLE_TAG,
    SG_RETIRE_GRACE,
    ClusterSecurityGroups,
    PolicyWorld,
    SgRetirement,
    body_key,
    ensure_knp,
    policy_world,
    rule_key,
    write_knp_status,
)
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.events import EventRecorder
from kuryr_k8s.k8s.informer import Informer
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import KURYRNETWORKPOLICIES
from kuryr_k8s.model import netidentity as ni
from kuryr_k8s.model import netpolicy as np_model
from kuryr_k8s.model.errors import ResourceNotReady, TemporaryError
from kuryr_k8s.model.kuryrnetwork import KNP_FINALIZER
from kuryr_k8s.openstack.neutron import QuotaExceeded
from kuryr_k8s.openstack.ports import CLUSTER_TAG_PREFIX
from kuryr_k8s.openstack.security import SecurityApi, SecurityGroup

if TYPE_CHECKING:
    from kuryr_k8s.controller.kuryrports import PodNetwork

LOG = logging.getLogger(__name__)

SYNC_KEY = "cluster/identities"
IDENTITY_TAG = "kuryr.identity:"
IDENTITY_ROLE = ROLE_TAG + "identity"
PARALLEL = 8
"""Identity SGs converged at once (Neutron calls in flight)."""


async def _bounded(calls: Iterable[Awaitable[Any]], limit: int = PARALLEL) -> None:
    """Await ``calls`` at most ``limit`` at a time; the first error is raised after all ran."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


def _policy_version(policy: Obj) -> tuple[str, str]:
    return objects.uid(policy), str(objects.meta(policy).get("resourceVersion") or "")


class IdentityReconciler:
    """Converges every identity SG, its rules and the KuryrNetworkPolicies (one key)."""

    kind = "policy-identities"

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.world = world
        self.api = api
        self.cluster_tag = CLUSTER_TAG_PREFIX + cluster_id
        self.project_id = project_id
        self.events = events
        self.unsupported = frozenset(unsupported_protocols)
        self.kick: Callable[[], None] = lambda: None
        """Asks for a pass (set by :func:`build_identity_parts` to queue :data:`SYNC_KEY`)."""
        self.on_ready: Callable[[str], None] = lambda key: None
        """Called after a pass for each pod key the placement made wait meanwhile."""
        self.waiting: set[str] = set()
        self.published: dict[str, str] = {}
        """identity key -> SG id, for the identities of the last applied plan."""
        self.applied: ni.IdentityPlan | None = None
        self._applied_policies: dict[str, dict[str, tuple[str, str]]] = {}
        """namespace -> {policy key: (uid, resourceVersion)} the applied plan was made from."""
        self._sg_of: dict[str, str] = {}
        """identity key -> SG id, every identity SG we know in Neutron."""
        self._rules_of: dict[str, dict[tuple[Any, ...], str]] | None = None
        """SG id -> {rule key: rule id} as last read or written (None: not read yet)."""
        self._done: dict[str, str] = {}
        """identity key -> fingerprint of the rules its SG has in Neutron."""
        self._retirement = SgRetirement(api, clock)
        self._pass = asyncio.Lock()
        self._strays: set[str] = set()
        """SG ids of duplicate identity SGs, deleted once unused."""

    # ---- the pass ----------------------------------------------------------------------

    def _inputs(self, policies: list[Obj]) -> tuple[Any, ...]:
        """Snapshots of the caches (taken on the event loop: the informers change the
        stores there; they replace objects, never mutate them)."""
        return (
            policies,
            self.world.live_pods(),
            self.world.namespace_labels(),
            self.unsupported,
            tuple(self.world.service_ports()),
        )

    @staticmethod
    def _plan(inputs: tuple[Any, ...]) -> ni.IdentityPlan:
        policies, pods, namespaces, unsupported, services = inputs
        return ni.plan_identities(
            policies, pods, namespaces, unsupported_protocols=unsupported, services=services
        )

    async def reconcile(self, key: str) -> Result:
        if key != SYNC_KEY:
            # The controller also queues every cached key (pods, KuryrPorts) into every
            # engine at start and on resync: each stands for "look again", i.e. one pass.
            self.kick()
            return Result()
        async with self._pass:  # one pass at a time, whatever queued it
            return await self._reconcile()

    async def _reconcile(self) -> Result:
        self.world.check_synced()
        policies = [p for p in self.world.policies.items() if not objects.is_deleting(p)]
        # Planning is pure and can take a while on big clusters: off the event loop.
        plan = await asyncio.to_thread(self._plan, self._inputs(policies))
        try:
            if self._rules_of is None:
                await self._adopt()
            missing = sorted(k for k in plan.identities if k not in self._sg_of)
            await _bounded(self._create_sg(k) for k in missing)
            todo = [k for k in plan.identities if self._done.get(k) != plan.fingerprints[k]]
            await _bounded(self._converge(k, plan) for k in sorted(todo))
        except QuotaExceeded as exc:
            raise TemporaryError(
                f"{exc}: raise the project's security group / rule quota; retrying",
                delay=QUOTA_RETRY,
            ) from exc
        self.published = {k: self._sg_of[k] for k in plan.identities}
        self.applied = plan
        by_ns: dict[str, dict[str, tuple[str, str]]] = {}
        for p in policies:
            by_ns.setdefault(objects.namespace(p) or "", {})[objects.key(p)] = _policy_version(p)
        self._applied_policies = by_ns
        waiting, self.waiting = self.waiting, set()
        for pod_key in sorted(waiting):
            self.on_ready(pod_key)
        await self._sync_knps(plan, policies)
        busy = await self._retire(plan)
        return Result(requeue_after=SG_RETIRE_GRACE if busy else None)

    def applied_for(self, namespace: str) -> bool:
        """Whether the last applied plan was made from the namespace's policies as the
        cache has them now."""
        now = {objects.key(p): _policy_version(p) for p in self.world.active_policies(namespace)}
        return self.applied is not None and self._applied_policies.get(namespace, {}) == now

    def converged(self) -> bool:
        """The applied plan is the plan of the caches now (tests, benchmarks)."""
        if self.applied is None:
            return False
        policies = [p for p in self.world.policies.items() if not objects.is_deleting(p)]
        plan = self._plan(self._inputs(policies))
        return plan.fingerprints == self.applied.fingerprints and plan.pod_identity == (
            self.applied.pod_identity
        )

    # ---- Neutron -----------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Identity SGs a previous run made (after a restart): by tag, never a second.
        A duplicate (a create retried after a crash) is retired like an unused identity."""
        sg_of: dict[str, str] = {}
        rules: dict[str, dict[tuple[Any, ...], str]] = {}
        prefix = self._name("")
        for sg_id, name in await self.api.list_untagged_security_groups(self.project_id, prefix):
            rest = name[len(prefix) :]  # exactly a key: "c1-x"'s SGs are not "c1"'s
            if len(rest) == ni.KEY_LENGTH and all(c in "0123456789abcdef" for c in rest):
                self._strays.add(sg_id)
        for sg in await self.api.list_security_groups([self.cluster_tag, IDENTITY_ROLE]):
            key = next((t[len(IDENTITY_TAG) :] for t in sg.tags if t.startswith(IDENTITY_TAG)), "")
            if not key or key in sg_of:
                self._strays.add(sg.id)
                continue
            sg_of[key] = sg.id
            rules[sg.id] = _rules_by_key(sg)
        self._sg_of.update(sg_of)
        self._rules_of = rules

    def _name(self, key: str) -> str:
        """``kuryr-id-<cluster id>-<identity key>``: how an SG left untagged by a killed
        process is still recognised as ours (:meth:`_adopt`)."""
        return f"kuryr-id-{self.cluster_tag[len(CLUSTER_TAG_PREFIX) :]}-{key}"

    async def _create_sg(self, key: str) -> None:
        tags = [self.cluster_tag, IDENTITY_ROLE, IDENTITY_TAG + key]
        # Neutron's default rules (allow all egress) are what an identity no policy
        # isolates for egress has: kept, and the rule diff deletes them where not.
        sg = await self.api.create_security_group(
            self._name(key),
            self.project_id,
            tags,
            "kuryr-kubernetes: pods of one identity",
            keep_default_rules=True,
        )
        self._sg_of[key] = sg.id
        assert self._rules_of is not None
        self._rules_of[sg.id] = _rules_by_key(sg)

    async def _converge(self, key: str, plan: ni.IdentityPlan) -> None:
        """The SG's rules to the plan's: create what is missing, then delete the rest."""
        assert self._rules_of is not None
        sg_id = self._sg_of[key]
        want = {body_key(b): b for b in (ni.neutron_rule(r, self._sg_of) for r in plan.rules[key])}
        have = self._rules_of.get(sg_id)
        try:
            if have is None:
                have = await self._read_rules(key)
            made = await self.api.create_rules(
                sg_id, self.project_id, [b for k, b in want.items() if k not in have]
            )
            stale = [rule_id for k, rule_id in have.items() if k not in want]
            await _bounded(self.api.delete_rule(r) for r in stale)
        except BaseException:
            self._rules_of.pop(sg_id, None)  # read it again next time
            self._done.pop(key, None)
            raise
        kept = {k: rule_id for k, rule_id in have.items() if k in want}
        self._rules_of[sg_id] = kept | {rule_key(r): r.id for r in made}
        self._done[key] = plan.fingerprints[key]

    async def _read_rules(self, key: str) -> dict[tuple[Any, ...], str]:
        found = await self.api.list_security_groups([self.cluster_tag, IDENTITY_TAG + key])
        for sg in found:
            if sg.id == self._sg_of[key]:
                return _rules_by_key(sg)
        raise ResourceNotReady(f"identity SG {self._sg_of[key]} ({key}) vanished")

    async def _retire(self, plan: ni.IdentityPlan) -> bool:
        """Delete the SGs of identities no pod has (and duplicates); True while some must
        wait for their ports to go or for the grace."""
        busy = False
        for key, sg_id in sorted(self._sg_of.items()):
            if key in plan.identities:
                self._retirement.keep(sg_id)
                continue
            if not await self._retire_one(sg_id):
                busy = True
                continue
            del self._sg_of[key]
            self._done.pop(key, None)
        for sg_id in sorted(self._strays):
            if await self._retire_one(sg_id):
                self._strays.discard(sg_id)
            else:
                busy = True
        return busy

    async def _retire_one(self, sg_id: str) -> bool:
        if not await self._retirement.retire(sg_id):
            return False
        if self._rules_of is not None:
            self._rules_of.pop(sg_id, None)
        return True

    # ---- KuryrNetworkPolicies ------------------------------------------------------------

    async def _sync_knps(self, plan: ni.IdentityPlan, policies: list[Obj]) -> None:
        live = {objects.key(p) for p in policies}
        await _bounded(self._write_knp(plan, p) for p in policies)
        for key in sorted(set(self.world.knps.keys()) - live):
            knp = self.world.knps.get(key)
            if knp is None:
                continue
            knp = await remove_finalizer(self.client, KURYRNETWORKPOLICIES, knp, KNP_FINALIZER)
            if not objects.is_deleting(knp):
                with contextlib.suppress(NotFound):
                    await self.client.delete(
                        KURYRNETWORKPOLICIES, objects.name(knp), objects.namespace(knp)
                    )

    async def _write_knp(self, plan: ni.IdentityPlan, policy: Obj) -> None:
        knp = await ensure_knp(self.client, policy, self.world.knps.get(objects.key(policy)))
        ns = objects.namespace(policy) or ""
        selector = (policy.get("spec") or {}).get("podSelector") or {}
        selected = sorted(
            k
            for k, ident in plan.identities.items()
            if ident.namespace == ns and np_model.selector_matches(selector, ident.label_map)
        )
        status = {
            "securityGroups": {k: self._sg_of[k] for k in selected},
            "addressGroups": {},
            "fingerprint": ni.fingerprint(r for k in selected for r in plan.rules[k]),
            "selectedPods": sum(len(plan.members(k)) for k in selected),
        }
        ready = f"rules on the security groups of {len(selected)} pod identities"
        problems = plan.problems.get(objects.key(policy), ())
        await write_knp_status(self.client, self.events, knp, policy, status, ready, problems)


def _rules_by_key(sg: SecurityGroup) -> dict[tuple[Any, ...], str]:
    return {rule_key(r): r.id for r in sg.rules}


class IdentityPlacement:
    """A pod's SG under ``security_group_mode = identity``: its identity's SG, once
    published by a pass that saw the namespace's policies as they are now (else
    ResourceNotReady, and a pass is asked for)."""

    def __init__(
        self,
        network_placement: Any,
        world: PolicyWorld,
        reconciler: IdentityReconciler,
    ) -> None:
        self.inner = network_placement
        self.world = world
        self.reconciler = reconciler

    async def network_for(self, pod: Obj) -> PodNetwork:
        result: PodNetwork = await self.inner.network_for(pod)
        return result

    async def security_groups_for(self, pod: Obj, network: PodNetwork) -> tuple[str, ...]:
        self.world.check_synced()
        key = ni.identity_of(pod).key
        sg_id = self.reconciler.published.get(key)
        if sg_id is None or not self.reconciler.applied_for(objects.namespace(pod) or ""):
            self.reconciler.waiting.add(objects.key(pod))
            self.reconciler.kick()
            raise ResourceNotReady(
                f"the security group of {objects.key(pod)}'s identity {key} is not ready"
            )
        return (sg_id,)


@dataclass
class IdentityParts:
    """What :func:`build_identity_parts` makes (the same roles as
    :class:`~kuryr_k8s.controller.policies.PolicyParts`)."""

    caches: list[Informer]
    engine: Engine
    cluster: ClusterSecurityGroups
    """The open-ingress/open-egress SGs: not used by pods in this mode (made on demand,
    e.g. for a test's VM port)."""
    world: PolicyWorld
    reconciler: IdentityReconciler

    def placement(self, network_placement: Any) -> IdentityPlacement:
        return IdentityPlacement(network_placement, self.world, self.reconciler)

    async def startup(self) -> None:
        self.engine.enqueue(SYNC_KEY)

    def converged(self) -> bool:
        return self.reconciler.converged()


def build_identity_parts(
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
    services: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> IdentityParts:
    """NetworkPolicy enforcement by identity SGs, wired: any change of a NetworkPolicy,
    KuryrNetworkPolicy, pod, namespace, KuryrPort, Service or EndpointSlice queues the one
    key (merged while queued); the pass converges only what changed. ``on_ready(key)``:
    the KuryrPort of a pod the placement made wait can go on (after the pass that
    published its identity's SG)."""
    caches, informers, world = policy_world(client, pods, kuryrports, namespaces, services)
    reconciler = IdentityReconciler(
        client,
        world,
        api,
        cluster_id=cluster_id,
        project_id=project_id,
        events=events,
        unsupported_protocols=unsupported_protocols,
    )
    engine = Engine(reconciler, engine_settings)

    def changed(_: str) -> None:
        engine.enqueue(SYNC_KEY)

    reconciler.kick = lambda: engine.enqueue(SYNC_KEY)
    if on_ready is not None:
        reconciler.on_ready = on_ready
    for informer in informers:
        informer.add_handler(changed)
    cluster = ClusterSecurityGroups(api, cluster_id, project_id)
    return IdentityParts(caches, engine, cluster, world, reconciler)
