"""Taking over upstream's namespace networks (``pod_subnets_driver = namespace``).

Upstream kuryr-kubernetes made, per namespace, a ``KuryrNetwork`` (same kind, name,
fields as ours) with its finalizer ``kuryrnetwork.finalizers.kuryr.openstack.org``, a
Neutron network named ``<namespace uid>/<namespace>`` (``ns/<namespace>-net`` before
Xena), a subnet named ``<namespace uid>/<namespace>`` from the subnet pool, and an
interface on the pod router; network and subnet carry only ``[neutron_defaults]
resource_tags``. Our namespace reconciler (``namespaces.py``) finds a namespace's network
and subnet by our tags, so without this step it would make a *second* network for every
upstream namespace and split its pods across two networks.

Run by the leader at start, with the other takeover steps (``takeover.py``), only when our
``pod_subnets_driver`` is ``namespace``. For each KuryrNetwork carrying upstream's finalizer:

* the namespace must exist (its uid names upstream's network); the network and subnet in
  ``status`` must be in our project, named as upstream names them for that namespace,
  the subnet on that network, and carry no ``kuryr.*`` tag of another cluster or owner;
* then they get our tags (cluster, ``kuryr.owner:<namespace uid>``,
  ``kuryr.namespace:<name>``: added one by one, nothing removed), and the KuryrNetwork's
  finalizer is swapped for ours (a merge patch with its resourceVersion);
* a KuryrNetwork upstream had not finished (no ``netId`` yet) only has its finalizer
  swapped: our reconciler makes the network.

Anything that fails a check is left exactly as upstream wrote it and logged (the
reconciler then leaves that namespace's network to whoever owns it; see
``docs/migration.md``). Idempotent: tags are added with PUT, a KuryrNetwork without
upstream's finalizer is not looked at again. :func:`restore_upstream_finalizers` is the
rollback's half (our tags stay: upstream ignores extra tags).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kuryr_k8s.controller.namespaces import NAMESPACE_TAG
from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import Conflict, NotFound
from kuryr_k8s.k8s.resources import KURYRNETWORKS, NAMESPACES
from kuryr_k8s.model.kuryrnetwork import KURYRNETWORK_FINALIZER
from kuryr_k8s.openstack.neutron import GONE, Neutron
from kuryr_k8s.openstack.ports import OWNER_TAG_PREFIX

LOG = logging.getLogger(__name__)

UPSTREAM_FINALIZER = "kuryrnetwork.finalizers.kuryr.openstack.org"
"""Upstream 10.0.0's ``constants.KURYRNETWORK_FINALIZER``."""

OUR_TAG_PREFIX = "kuryr."


@dataclass(frozen=True)
class NetworkScope:
    cluster_tag: str
    """``kuryr.cluster:<id>``."""
    project_id: str


@dataclass
class NetworkTakeover:
    adopted: list[str] = field(default_factory=list)
    """Namespaces whose upstream network and subnet are now ours."""
    refused: list[str] = field(default_factory=list)


def upstream_names(namespace: str, uid: str) -> tuple[set[str], set[str]]:
    """(network names, subnet names) upstream gives a namespace's resources
    (``controller/drivers/utils.py get_resource_name``: the name is cut to fit 255)."""

    def resource_name(prefix: str, suffix: str, with_uid: bool) -> str:
        head = f"{uid}/" if with_uid else ""
        name = namespace
        length = len(f"{prefix}{head}{name}{suffix}")
        if length > 255:
            name = name[: 254 - (length - 254)]
        return f"{prefix}{head}{name}{suffix}"

    current = resource_name("", "", True)
    return (
        {current, resource_name("ns/", "-net", False)},
        {current, resource_name("ns/", "-subnet", False)},
    )


def resource_problem(
    kind: str, data: dict[str, Any], names: set[str], wanted: set[str], scope: NetworkScope
) -> str | None:
    """Why Neutron ``data`` is not upstream's resource of that namespace, or None."""
    rid = data.get("id")
    if data.get("project_id") != scope.project_id:
        return f"{kind} {rid} is in project {data.get('project_id')}, not ours"
    if data.get("name") not in names:
        return f"{kind} {rid} is named {data.get('name')!r}, not as upstream names it"
    foreign = sorted(
        t for t in data.get("tags") or () if t.startswith(OUR_TAG_PREFIX) and t not in wanted
    )
    if foreign:
        return f"{kind} {rid} carries {', '.join(foreign)} (another cluster's or owner's)"
    return None


async def _get(neutron: Neutron, kind: str, rid: str) -> dict[str, Any] | None:
    data = await neutron._call(f"get_{kind}", "GET", f"/{kind}s/{rid}", missing_ok=True)
    return None if data is GONE else dict(data[kind])


async def adopt_upstream_networks(
    client: KubeClient, neutron: Neutron, scope: NetworkScope
) -> NetworkTakeover:
    report = NetworkTakeover()
    for kn in (await client.list_all(KURYRNETWORKS)).items:
        if UPSTREAM_FINALIZER in (objects.meta(kn).get("finalizers") or []):
            await _adopt(client, neutron, scope, kn, report)
    if report.adopted or report.refused:
        LOG.warning(
            "took over upstream's namespace networks: %d adopted, %d left alone",
            len(report.adopted),
            len(report.refused),
        )
    for line in report.refused:
        LOG.error("takeover: %s", line)
    return report


async def _adopt(
    client: KubeClient,
    neutron: Neutron,
    scope: NetworkScope,
    kn: dict[str, Any],
    report: NetworkTakeover,
) -> None:
    key = objects.key(kn)
    ns_name = str((kn.get("spec") or {}).get("nsName") or objects.meta(kn).get("namespace"))
    try:
        ns = await client.get(NAMESPACES, ns_name)
    except NotFound:
        report.refused.append(f"KuryrNetwork {key}: namespace {ns_name} is gone; left as it is")
        return
    uid = objects.uid(ns)
    status = kn.get("status") or {}
    net_id, subnet_id = str(status.get("netId") or ""), str(status.get("subnetId") or "")
    wanted = {scope.cluster_tag, OWNER_TAG_PREFIX + uid, NAMESPACE_TAG + ns_name}
    tagged: list[tuple[str, str]] = []
    if net_id:
        net_names, subnet_names = upstream_names(ns_name, uid)
        net = await _get(neutron, "network", net_id)
        subnet = await _get(neutron, "subnet", subnet_id) if subnet_id else None
        problem = (
            f"network {net_id} is gone from Neutron"
            if net is None
            else resource_problem("network", net, net_names, wanted, scope)
        )
        if problem is None and subnet_id:
            problem = (
                f"subnet {subnet_id} is gone from Neutron"
                if subnet is None
                else resource_problem("subnet", subnet, subnet_names, wanted, scope)
            )
            if problem is None and subnet is not None and subnet.get("network_id") != net_id:
                problem = f"subnet {subnet_id} is not on network {net_id}"
        if problem is not None:
            report.refused.append(f"KuryrNetwork {key}: not adopted: {problem}")
            return
        tagged = [("network", net_id)] + ([("subnet", subnet_id)] if subnet_id else [])
    for kind, rid in tagged:
        for tag in sorted(wanted):
            await neutron._call("add_tag", "PUT", f"/{kind}s/{rid}/tags/{tag}")
    fins = [f for f in objects.meta(kn).get("finalizers") or [] if f != UPSTREAM_FINALIZER]
    if KURYRNETWORK_FINALIZER not in fins:
        fins.append(KURYRNETWORK_FINALIZER)
    patch = {
        "metadata": {
            "finalizers": fins,
            "resourceVersion": objects.meta(kn).get("resourceVersion"),
        }
    }
    try:
        await client.patch(KURYRNETWORKS, objects.name(kn), patch, objects.namespace(kn))
    except Conflict:
        # changed meanwhile (upstream still running?): the next leader start sees it again
        report.refused.append(
            f"KuryrNetwork {key}: changed while being taken over; retried at the next start"
        )
        return
    report.adopted.append(ns_name)


async def restore_upstream_finalizers(client: KubeClient) -> list[str]:
    """The rollback: our KuryrNetwork finalizer back to upstream's. Namespaces done."""
    done = []
    for kn in (await client.list_all(KURYRNETWORKS)).items:
        fins = list(objects.meta(kn).get("finalizers") or [])
        if KURYRNETWORK_FINALIZER not in fins:
            continue
        fins = [UPSTREAM_FINALIZER if f == KURYRNETWORK_FINALIZER else f for f in fins]
        patch = {
            "metadata": {
                "finalizers": fins,
                "resourceVersion": objects.meta(kn).get("resourceVersion"),
            }
        }
        await client.patch(KURYRNETWORKS, objects.name(kn), patch, objects.namespace(kn))
        done.append(objects.key(kn))
    return done
