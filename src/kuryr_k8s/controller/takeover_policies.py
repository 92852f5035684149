"""Taking over upstream's NetworkPolicies: its KuryrNetworkPolicies and per-policy SGs.

Upstream kuryr-kubernetes 10.0.0 wrote, per NetworkPolicy, a ``KuryrNetworkPolicy`` of the
same name (spec ``podSelector``, ``policyTypes``, ``ingressSgRules``, ``egressSgRules``;
status ``securityGroupId``, ``securityGroupRules``, ``podSelector``), one Neutron SG per
policy named ``sg/<namespace>-<name>`` (only ``[neutron_defaults] resource_tags``) that
its selected pods' ports carry, and the finalizer
``kuryr.openstack.org/networkpolicy-finalizer`` on both the KuryrNetworkPolicy and the
NetworkPolicy. Ours keeps one SG per policy *variant* (tags cluster, ``kuryr.owner:<policy
uid>``, ``kuryr.sgvariant:<key>``), a KuryrNetworkPolicy with ``spec.policyUid``, and no
finalizer on the NetworkPolicy. Untouched, our reconciler would delete upstream's
KuryrNetworkPolicy as one of an older policy (the finalizer string is the same) and
upstream's SG would stay on the ports until they move, then in Neutron for good; every
NetworkPolicy would keep upstream's finalizer, which nothing removes any more (its
deletion would hang).

The takeover never moves a port itself. Run by the leader at start (after the CRD
upgrade, before any informer) when ``pod_security_groups_driver = policy``, for each
upstream-format KuryrNetworkPolicy (no ``spec.policyUid``):

* checks: its NetworkPolicy exists (and is its owner, when it names one); the SG in
  ``status.securityGroupId`` -- or, since our CRD's schema prunes that field once our CRD
  has replaced upstream's, the one SG of our project named as upstream names it for that
  policy -- is in Neutron, in our project, so named, and carries no ``kuryr.*`` tag other
  than the ones added here;
* the SG gets our tags as a *retiring* variant of that policy (cluster,
  ``kuryr.owner:<policy uid>``, ``kuryr.sgvariant:upstream``, added one by one): no plan
  ever has that variant, so our reconciler never names it for a pod and deletes it with
  the policy, and :func:`retire_upstream_sgs` deletes it once no port has named it for
  ``SG_RETIRE_GRACE``;
* the KuryrNetworkPolicy is rewritten in our format (spec ``policyUid``, ``podSelector``,
  ``policyTypes``; upstream's rule lists removed; our label; the finalizer, same string,
  kept; a merge patch with its resourceVersion), and upstream's status fields are cleared;
* upstream's finalizer is removed from the NetworkPolicy (ours needs none there: the
  KuryrNetworkPolicy's holds the SGs' cleanup).

Why there is no open (or wrongly closed) window: our placement names a policy's SG for a
pod only from our KuryrNetworkPolicy status, written after that SG and its rules exist in
Neutron; until then the KuryrPort reconciler keeps the port as it is (upstream's SG on
it, ``ResourceNotReady``). When it moves a port it replaces the whole SG list in one
Neutron update (upstream's out, ours in). Upstream's SG is deleted only after no port has
named it for the grace (docs/design/network-policy.md, "Ordering guarantees").

Anything that fails a check is left exactly as upstream wrote it and logged by name with
why. Idempotent: a KuryrNetworkPolicy with ``spec.policyUid`` is not looked at again,
tags are added with PUT. Rollback: :func:`rollback_problem` (refused while any
KuryrNetworkPolicy is in our format).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.controller.policies import VARIANT_TAG, SgRetirement
from kuryr_k8s.controller.takeover_networks import NetworkScope, resource_problem
from kuryr_k8s.controller.takeover_services import log_takeover
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import Conflict, NotFound
from kuryr_k8s.k8s.resources import KURYRNETWORKPOLICIES, NETWORKPOLICIES
from kuryr_k8s.model import netpolicy as np_model
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.model.kuryrnetwork import KNP_FINALIZER, POLICY_LABEL
from kuryr_k8s.openstack.neutron import GONE
from kuryr_k8s.openstack.ports import OWNER_TAG_PREFIX
from kuryr_k8s.openstack.security import SecurityApi

LOG = logging.getLogger(__name__)

UPSTREAM_FINALIZER = "kuryr.openstack.org/networkpolicy-finalizer"
"""Upstream 10.0.0's ``constants.NETWORKPOLICY_FINALIZER`` (on the NetworkPolicy and the
KuryrNetworkPolicy; the same string as our KuryrNetworkPolicy finalizer)."""
UPSTREAM_VARIANT = "upstream"
"""The variant key of an adopted upstream SG: never one of a plan (``base``, ``v<hash>``)."""
UPSTREAM_STATUS = ("securityGroupId", "securityGroupRules", "podSelector")
UPSTREAM_SPEC = ("ingressSgRules", "egressSgRules")
RETIRE_EVERY = 10.0


PolicyScope = NetworkScope
"""Our cluster tag and project: what upstream's SGs must match (as for its networks)."""


@dataclass
class PolicyTakeover:
    adopted: list[str] = field(default_factory=list)
    """NetworkPolicies (namespace/name) whose KuryrNetworkPolicy is now ours."""
    released: list[str] = field(default_factory=list)
    """NetworkPolicies whose upstream finalizer was removed."""
    refused: list[str] = field(default_factory=list)


def upstream_sg_name(namespace: str, name: str) -> str:
    """Upstream's ``get_resource_name(ns + '-' + name, prefix='sg/')`` (cut to 255)."""
    prefix, base = "sg/", f"{namespace}-{name}"
    length = len(prefix + base)
    if length > 255:
        base = base[: 254 - (length - 254)]
    return prefix + base


def is_upstream_knp(knp: dict[str, Any]) -> bool:
    return not (knp.get("spec") or {}).get("policyUid")


def our_knp_spec(policy: dict[str, Any]) -> dict[str, Any]:
    """The spec our reconciler writes (``PolicyReconciler._ensure_knp``)."""
    ingress, egress = np_model.policy_types(policy)
    return {
        "policyUid": objects.uid(policy),
        "podSelector": (policy.get("spec") or {}).get("podSelector") or {},
        "policyTypes": [t for t, on in (("Ingress", ingress), ("Egress", egress)) if on],
    }


async def adopt_upstream_policies(
    client: KubeClient, api: SecurityApi, scope: PolicyScope
) -> PolicyTakeover:
    report = PolicyTakeover()
    try:
        knps = {objects.key(k): k for k in (await client.list_all(KURYRNETWORKPOLICIES)).items}
    except NotFound:  # no CRD: upstream never enforced policies here
        knps = {}
    refused: set[str] = set()
    for key, knp in sorted(knps.items()):
        if not is_upstream_knp(knp):
            continue
        try:
            if not await _adopt(client, api, scope, knp, report):
                refused.add(key)
        except KuryrError as exc:  # Neutron failed: what was done is redone next time
            report.refused.append(
                f"KuryrNetworkPolicy {key}: not adopted: {exc}; retried at the next start"
            )
            refused.add(key)
    for policy in (await client.list_all(NETWORKPOLICIES)).items:
        key = objects.key(policy)
        if UPSTREAM_FINALIZER not in (objects.meta(policy).get("finalizers") or []):
            continue
        if key in refused:
            continue  # left exactly as upstream wrote it, with its KuryrNetworkPolicy
        if await _drop_finalizer(client, policy, report):
            report.released.append(key)
    log_takeover(
        f"NetworkPolicies: {len(report.adopted)} KuryrNetworkPolicy(ies) adopted, "
        f"{len(report.released)} NetworkPolicy finalizer(s) removed",
        len(report.adopted) + len(report.released),
        report.refused,
        LOG,
    )
    return report


async def _adopt(
    client: KubeClient,
    api: SecurityApi,
    scope: PolicyScope,
    knp: dict[str, Any],
    report: PolicyTakeover,
) -> bool:
    key = objects.key(knp)
    ns, name = str(objects.namespace(knp)), objects.name(knp)
    try:
        policy = await client.get(NETWORKPOLICIES, name, ns)
    except NotFound:
        report.refused.append(f"KuryrNetworkPolicy {key}: its NetworkPolicy is gone; left as it is")
        return False
    uid = objects.uid(policy)
    owners = [
        str(r.get("uid") or "")
        for r in objects.meta(knp).get("ownerReferences") or []
        if r.get("kind") == "NetworkPolicy"
    ]
    if owners and uid not in owners:
        report.refused.append(
            f"KuryrNetworkPolicy {key}: belongs to an earlier NetworkPolicy {owners[0]} (the "
            f"policy now is {uid}); left as it is"
        )
        return False
    wanted = {scope.cluster_tag, OWNER_TAG_PREFIX + uid, VARIANT_TAG + UPSTREAM_VARIANT}
    sg_name = upstream_sg_name(ns, name)
    sg_id = str((knp.get("status") or {}).get("securityGroupId") or "")
    sg: dict[str, Any] | None = None
    if sg_id:
        data = await api._call(
            "get_security_group", "GET", f"/security-groups/{sg_id}", missing_ok=True
        )
        if data is GONE:
            report.refused.append(
                f"KuryrNetworkPolicy {key}: not adopted: security group {sg_id} is gone "
                "from Neutron"
            )
            return False
        sg = dict(data["security_group"])
    else:
        # Our CRD's schema prunes upstream's status fields (the API server serves stored
        # objects pruned once our CRD replaced upstream's): find the SG by its name.
        data = await api._call(
            "list_security_groups",
            "GET",
            "/security-groups",
            params={"name": sg_name, "project_id": scope.project_id},
        )
        named = [g for g in data["security_groups"] if g.get("name") == sg_name]
        if len(named) > 1:
            report.refused.append(
                f"KuryrNetworkPolicy {key}: not adopted: {len(named)} security groups are "
                f"named {sg_name!r} ({', '.join(str(g.get('id')) for g in named)})"
            )
            return False
        sg = dict(named[0]) if named else None
        sg_id = str(sg["id"]) if sg else ""
    if sg is not None:
        problem = resource_problem("security group", sg, {sg_name}, wanted, scope)
        if problem is not None:
            report.refused.append(f"KuryrNetworkPolicy {key}: not adopted: {problem}")
            return False
        for tag in sorted(wanted - set(sg.get("tags") or ())):
            await api._call("add_tag", "PUT", f"/security-groups/{sg_id}/tags/{tag}")
    spec: dict[str, Any] = {k: None for k in (knp.get("spec") or {})}
    spec.update(our_knp_spec(policy))
    fins = list(objects.meta(knp).get("finalizers") or [])
    if KNP_FINALIZER not in fins:
        fins.append(KNP_FINALIZER)
    patch = {
        "metadata": {
            "finalizers": fins,
            "labels": {POLICY_LABEL: uid},
            "resourceVersion": objects.meta(knp).get("resourceVersion"),
        },
        "spec": spec,
    }
    try:
        await client.patch(KURYRNETWORKPOLICIES, name, patch, ns)
    except Conflict:
        report.refused.append(
            f"KuryrNetworkPolicy {key}: changed while being taken over; retried at the next start"
        )
        return False
    old = knp.get("status") or {}
    if any(k in old for k in UPSTREAM_STATUS):
        with contextlib.suppress(NotFound):
            await client.patch(
                KURYRNETWORKPOLICIES,
                name,
                {"status": {k: None for k in UPSTREAM_STATUS if k in old}},
                ns,
                subresource="status",
            )
    report.adopted.append(key)
    LOG.info(
        "takeover: NetworkPolicy %s: KuryrNetworkPolicy converted%s",
        key,
        f"; upstream's SG {sg_id} retires once no port uses it" if sg_id else "",
    )
    return True


async def _drop_finalizer(
    client: KubeClient, policy: dict[str, Any], report: PolicyTakeover
) -> bool:
    fins = [f for f in objects.meta(policy).get("finalizers") or [] if f != UPSTREAM_FINALIZER]
    patch = {
        "metadata": {
            "finalizers": fins,
            "resourceVersion": objects.meta(policy).get("resourceVersion"),
        }
    }
    try:
        await client.patch(NETWORKPOLICIES, objects.name(policy), patch, objects.namespace(policy))
    except Conflict:
        report.refused.append(
            f"NetworkPolicy {objects.key(policy)}: changed while its upstream finalizer was "
            "removed; retried at the next start"
        )
        return False
    except NotFound:
        return False
    return True


async def retire_upstream_sgs(
    api: SecurityApi,
    cluster_tag: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    every: float = RETIRE_EVERY,
) -> None:
    """Delete each adopted upstream SG once no port has named it for ``SG_RETIRE_GRACE``
    (ports move to our SGs through the KuryrPort reconciler); returns when none is left.
    A background task of the leader (our policy reconciler retires them only on a plan
    change or with the policy)."""
    retirement = SgRetirement(api, clock)
    while True:
        try:
            sgs = await api.list_security_groups([cluster_tag, VARIANT_TAG + UPSTREAM_VARIANT])
        except KuryrError as exc:
            LOG.warning("upstream SG retirement: cannot list SGs (%s); retrying", exc)
            await sleep(every)
            continue
        if not sgs:
            return
        for sg in sgs:
            try:
                if await retirement.retire(sg.id):
                    LOG.info("takeover: deleted upstream's SG %s (no port uses it)", sg.id)
            except KuryrError as exc:
                LOG.warning("upstream SG retirement: SG %s: %s; retrying", sg.id, exc)
        await sleep(every)


async def rollback_problem(client: KubeClient) -> str | None:
    """The rollback's half for NetworkPolicies: why it must be refused, or None.

    Refused while any KuryrNetworkPolicy is in our format: upstream cannot take over our
    SGs (one per variant, rules it has no record of, the cluster's open SGs), and a
    KuryrNetworkPolicy handed back without them would make upstream build a new SG with no
    rules and put it on the selected pods before its policy handler fills the rules in."""
    try:
        knps = (await client.list_all(KURYRNETWORKPOLICIES)).items
    except NotFound:
        return None
    ours = sorted(objects.key(k) for k in knps if not is_upstream_knp(k))
    if not ours:
        return None
    shown = ", ".join(ours[:5]) + (f" and {len(ours) - 5} more" if len(ours) > 5 else "")
    return (
        f"{len(ours)} KuryrNetworkPolicy(ies) are in our format ({shown}): handing "
        "NetworkPolicy enforcement back to upstream is not supported (it cannot take over "
        "our security groups). Delete those NetworkPolicies while ours still runs (their "
        "pods become unisolated), or keep our controller"
    )
