"""Taking over upstream's Services: its KuryrLoadBalancers and their Octavia load balancers.

Upstream kuryr-kubernetes 10.0.0 wrote, per Service, a ``KuryrLoadBalancer`` that is ours
in every field our reconcilers read: same name, an ownerReference to the Service, the
finalizer ``kuryr.openstack.org/kuryrloadbalancer-finalizers`` on it and
``kuryr.openstack.org/service-finalizer`` on the Service (upstream's
``KURYRLB_FINALIZER`` and ``SERVICE_FINALIZER``: the very strings ours uses), the spec
fields ours writes and the status fields ours writes (``loadbalancer``, ``listeners``,
``pools``, ``members``, ``service_pub_ip_info``). What differs is Octavia: upstream's LB
(named ``<namespace>/<name>``, VIP = the clusterIP) carries at most ``[neutron_defaults]
resource_tags``, and our reconciler finds a Service's LB by our tags
(``kuryr.cluster:<id>``, ``kuryr.owner:<Service uid>``). Untouched, it would try to make
a second LB on the clusterIP (refused by Neutron while upstream's holds that address:
``Ready=False`` for good) and, at the Service's deletion, release nothing (upstream's LB
would leak).

Upstream's ``kuryrloadbalancers`` CRD has no ``status`` subresource (ours writes status
through ``/status``): the leader upgrades it in place first, as the other CRDs
(``crds.py``; the rollback puts it back: :func:`restore_upstream_crd`).

So, run by the leader at start (after the CRD upgrade, before any informer) when Services
are on, for each KuryrLoadBalancer whose LB is not one of our cluster's:

* the LB is ``status.loadbalancer.id`` (or, if upstream had not written it yet, the one LB
  named ``<namespace>/<name>`` in Octavia); it must exist, be in our project, be named as
  upstream names it for that Service, have the Service's clusterIP as VIP on our service
  subnet, not be ``PENDING_DELETE``, and carry no ``kuryr.*`` tag other than ours for that
  Service; the Service must exist and be the KuryrLoadBalancer's owner;
* then the LB gets our tags (added to the ones it has, one ``PUT`` of the LB; no listener,
  pool or member is touched: ours finds those by LB and (protocol, port) and keeps members
  whose (address, port) set is already right), and a floating IP upstream allocated for
  ``type: LoadBalancer`` (``alloc_method: pool``, on the VIP port) gets our tags too, so
  ours deletes it with the Service (a user's, ``alloc_method: user``, stays untagged and is
  only disassociated, as ours does with a user's).

The KuryrLoadBalancer and the Service are not rewritten: format and finalizers are already
ours; our Service reconciler rewrites the spec as it computes it and our KuryrLoadBalancer
reconciler then converges the adopted LB (usually with no Octavia change at all) and writes
its status. Anything that fails a check is left exactly as upstream wrote it and logged by
name with why. Idempotent: an LB carrying our cluster tag is not looked at again (one list
call per start). Rollback: nothing to give back (:func:`rollback_notes`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.controller.crds import REPLACED_SPEC
from kuryr_k8s.controller.loadbalancers import LbSettings
from kuryr_k8s.controller.services import owner_uid
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.resources import CRDS, KURYRLOADBALANCERS, SERVICES
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.openstack.neutron import Neutron
from kuryr_k8s.openstack.octavia import LbPending, LoadBalancer, Octavia, lb_from_json

LOG = logging.getLogger(__name__)

OUR_TAG_PREFIX = "kuryr."
UPSTREAM_KLB_FINALIZER = "kuryr.openstack.org/kuryrloadbalancer-finalizers"
UPSTREAM_SERVICE_FINALIZER = "kuryr.openstack.org/service-finalizer"
"""Upstream 10.0.0's ``constants.KURYRLB_FINALIZER`` and ``SERVICE_FINALIZER`` (equal to
ours: ``model/kuryrloadbalancer.py``; a unit test holds them equal)."""
KLB_CRD = f"{KURYRLOADBALANCERS.plural}.{KURYRLOADBALANCERS.group}"
ADOPT_WAIT = 30.0
"""Seconds to wait for an LB upstream left ``PENDING_*`` (and for our tag update)."""


@dataclass
class ServiceTakeover:
    adopted: list[str] = field(default_factory=list)
    """Services (namespace/name) whose upstream LB is now ours."""
    refused: list[str] = field(default_factory=list)


def lb_problem(lb: LoadBalancer, svc: dict[str, Any], settings: LbSettings) -> str | None:
    """Why ``lb`` is not upstream's load balancer of Service ``svc``, or None."""
    key = objects.key(svc)
    cluster_ip = str((svc.get("spec") or {}).get("clusterIP") or "")
    wanted = set(settings.tags(objects.uid(svc)))
    if lb.project_id != settings.project_id:
        return f"load balancer {lb.id} is in project {lb.project_id}, not ours"
    if lb.name != key:
        return f"load balancer {lb.id} is named {lb.name!r}, not {key!r} as upstream names it"
    if not cluster_ip or lb.vip_address != cluster_ip:
        return (
            f"load balancer {lb.id} has VIP {lb.vip_address}, the Service's clusterIP is "
            f"{cluster_ip or 'none'}"
        )
    if lb.vip_subnet_id != settings.vip_subnet_id:
        return (
            f"load balancer {lb.id} has its VIP on subnet {lb.vip_subnet_id}, not on the "
            f"service subnet {settings.vip_subnet_id}"
        )
    if lb.provisioning_status == "PENDING_DELETE":
        return f"load balancer {lb.id} is being deleted"
    foreign = sorted(t for t in lb.tags if t.startswith(OUR_TAG_PREFIX) and t not in wanted)
    if foreign:
        return f"load balancer {lb.id} carries {', '.join(foreign)} (another cluster's or owner's)"
    return None


async def _lb_named(octavia: Octavia, name: str) -> list[LoadBalancer]:
    data = await octavia._call(  # the shared adapter: a name filter octavia.py lacks
        "list_loadbalancers", "GET", "/lbaas/loadbalancers", params={"name": name}
    )
    return [lb_from_json(d) for d in data["loadbalancers"] if d.get("name") == name]


async def _set_lb_tags(octavia: Octavia, lb: LoadBalancer, tags: list[str]) -> None:
    body = {"loadbalancer": {"tags": tags}}
    await octavia._call("update_loadbalancer", "PUT", f"/lbaas/loadbalancers/{lb.id}", body=body)


async def adopt_upstream_services(
    client: KubeClient, octavia: Octavia, neutron: Neutron, settings: LbSettings
) -> ServiceTakeover:
    report = ServiceTakeover()
    try:
        klbs = (await client.list_all(KURYRLOADBALANCERS)).items
    except NotFound:  # no KuryrLoadBalancer CRD: upstream never served Services here
        return report
    try:
        ours = {lb.id for lb in await octavia.find_loadbalancers([settings.cluster_tag])}
    except KuryrError as exc:  # Octavia down: pods need none of it, do not hold the start
        report.refused.append(
            f"Octavia cannot be asked ({exc}): upstream's Services are taken over at the next start"
        )
        log_takeover("Services: none adopted", 0, report.refused)
        return report
    for klb in klbs:
        lb_id = str(((klb.get("status") or {}).get("loadbalancer") or {}).get("id") or "")
        if lb_id in ours:
            continue
        if not lb_id and (klb.get("status") or {}).get("conditions"):
            continue  # ours (it writes conditions), not made yet
        try:
            await _adopt(client, octavia, neutron, settings, klb, lb_id, report)
        except KuryrError as exc:  # Octavia/Neutron failed: nothing half done that matters
            report.refused.append(
                f"KuryrLoadBalancer {objects.key(klb)}: not adopted: {exc}; retried at the "
                "next start"
            )
    log_takeover(
        f"Services: {len(report.adopted)} load balancer(s) adopted",
        len(report.adopted),
        report.refused,
    )
    return report


def log_takeover(summary: str, changed: int, refused: list[str], log: logging.Logger = LOG) -> None:
    """A takeover step's report: one warning line if it did or refused anything, one
    error line per refusal (naming what and why)."""
    if changed or refused:
        log.warning("took over upstream's %s, %d left alone", summary, len(refused))
    for line in refused:
        log.error("takeover: %s", line)


async def _adopt(
    client: KubeClient,
    octavia: Octavia,
    neutron: Neutron,
    settings: LbSettings,
    klb: dict[str, Any],
    lb_id: str,
    report: ServiceTakeover,
) -> None:
    key = objects.key(klb)
    try:
        svc = await client.get(SERVICES, objects.name(klb), objects.namespace(klb))
    except NotFound:
        report.refused.append(f"KuryrLoadBalancer {key}: its Service is gone; left as it is")
        return
    owner = owner_uid(klb)
    if owner and owner != objects.uid(svc):
        report.refused.append(
            f"KuryrLoadBalancer {key}: belongs to an earlier Service {owner} (the Service "
            f"now is {objects.uid(svc)}); left as it is"
        )
        return
    if lb_id:
        lb = await octavia.get_loadbalancer(lb_id)
        if lb is None:
            report.refused.append(
                f"KuryrLoadBalancer {key}: load balancer {lb_id} is gone from Octavia; left "
                "as it is (our reconciler makes a new one)"
            )
            return
    else:
        named = await _lb_named(octavia, key)
        if not named:
            return  # upstream made none: ours makes it
        if len(named) > 1:
            report.refused.append(
                f"KuryrLoadBalancer {key}: {len(named)} load balancers are named {key!r} "
                f"({', '.join(lb.id for lb in named)}); left as they are"
            )
            return
        lb = named[0]
    problem = lb_problem(lb, svc, settings)
    if problem is not None:
        report.refused.append(f"KuryrLoadBalancer {key}: not adopted: {problem}")
        return
    if lb.provisioning_status.startswith("PENDING"):
        try:
            lb = await octavia.wait_active(lb.id, within=ADOPT_WAIT)
        except LbPending:
            report.refused.append(
                f"KuryrLoadBalancer {key}: load balancer {lb.id} stayed "
                f"{lb.provisioning_status} for {ADOPT_WAIT:.0f} s; retried at the next start"
            )
            return
    owner_tags = settings.tags(objects.uid(svc))
    missing = [t for t in owner_tags if t not in lb.tags]
    if missing:
        await _set_lb_tags(octavia, lb, [*lb.tags, *missing])
        with contextlib.suppress(LbPending, KuryrError):  # ours waits for ACTIVE anyway
            await octavia.wait_active(lb.id, within=ADOPT_WAIT)
    await _adopt_fip(neutron, klb, lb, owner_tags)
    report.adopted.append(objects.key(svc))
    LOG.info("takeover: Service %s keeps upstream's load balancer %s (now tagged ours)", key, lb.id)


async def _adopt_fip(
    neutron: Neutron, klb: dict[str, Any], lb: LoadBalancer, tags: list[str]
) -> None:
    """The floating IP upstream allocated for the Service (not a user's) gets our tags."""
    info = (klb.get("status") or {}).get("service_pub_ip_info") or {}
    if info.get("alloc_method") != "pool" or not info.get("ip_id"):
        return
    for fip in await neutron.list_floating_ips(id=str(info["ip_id"])):
        if fip.port_id != lb.vip_port_id:
            continue
        if any(t.startswith(OUR_TAG_PREFIX) and t not in tags for t in fip.tags):
            continue
        if set(tags) <= set(fip.tags):
            continue
        body = {"tags": [*fip.tags, *(t for t in tags if t not in fip.tags)]}
        await neutron._call("set_tags", "PUT", f"/floatingips/{fip.id}/tags", body=body)


async def rollback_notes(client: KubeClient) -> list[str]:
    """The rollback's half for Services: nothing to convert. The KuryrLoadBalancers'
    fields and finalizers (and the Services' finalizer) are upstream's already; the LBs
    keep our tags (upstream ignores them)."""
    try:
        klbs = (await client.list_all(KURYRLOADBALANCERS)).items
    except NotFound:
        return []
    if not klbs:
        return []
    return [
        f"{len(klbs)} KuryrLoadBalancer(s) left as they are: their format and finalizers are "
        "upstream's already (their load balancers keep our tags)"
    ]


async def restore_upstream_crd(client: KubeClient) -> list[str]:
    """The rollback: the KuryrLoadBalancer CRD spec our leader replaced (upstream's has no
    ``status`` subresource: upstream writes status through the main resource) is put back
    from the annotation. Objects and their status stay."""
    try:
        crd = await client.get(CRDS, KLB_CRD)
    except NotFound:
        return []
    annotations = crd["metadata"].get("annotations") or {}
    if REPLACED_SPEC not in annotations:
        return []
    crd["spec"] = json.loads(annotations.pop(REPLACED_SPEC))
    await client.replace(CRDS, crd)
    return [f"CRD {KLB_CRD}: upstream's spec restored"]
