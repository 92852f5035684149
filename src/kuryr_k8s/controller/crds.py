"""Install our CustomResourceDefinitions at start if missing, upgrade upstream's in place,
and wait until Established.

Upgrading upstream kuryr-kubernetes's CRD (``kuryrports.openstack.org`` without a
``status`` subresource, a status schema without our fields): the CRD's ``spec`` is
replaced by ours, the previous spec kept in the annotation :data:`REPLACED_SPEC`. No
object is deleted or rewritten: the API server keeps each stored object whole, so the
``status`` upstream wrote through the main resource is still there and is served; from then
on writes to the main resource leave ``status`` alone and ``/status`` writes change only it
(Kubernetes' ``CustomResourceSubresourceStatus`` semantics; the emulator does the same,
tests/e2e/upstream/test_crd_upgrade.py). Only the leader upgrades (:func:`upgrade_crds`, a
startup step of leadership); rollback: docs/migration.md.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import AlreadyExists, Conflict, NotFound
from kuryr_k8s.k8s.resources import CRDS
from kuryr_k8s.k8s.timing import Clock, SystemClock
from kuryr_k8s.model.errors import ResourceNotReady

LOG = logging.getLogger(__name__)

REPLACED_SPEC = "kuryr.openstack.org/replaced-crd-spec"
"""Annotation on an upgraded CRD: the JSON ``spec`` it had before (for a rollback)."""


def _status_properties(version: dict[str, Any]) -> set[str]:
    schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
    status = (schema.get("properties") or {}).get("status") or {}
    if status.get("x-kubernetes-preserve-unknown-fields"):
        return {"*"}
    return set(status.get("properties") or {})


def upgrade_reason(installed: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why the installed CRD cannot serve us as it is (None: it can).

    Only what breaks us counts: a version of ours served without our ``status``
    subresource (our ``/status`` writes would 404), or whose status schema lacks fields we
    write (they would be pruned). Anything else an operator changed is left alone."""
    have = {v.get("name"): v for v in (installed.get("spec") or {}).get("versions") or []}
    for want in manifest["spec"]["versions"]:
        name = want["name"]
        got = have.get(name)
        if got is None:
            return f"version {name} is not defined"
        if "status" in (want.get("subresources") or {}) and "status" not in (
            got.get("subresources") or {}
        ):
            return f"version {name} has no status subresource"
        missing = _status_properties(want) - _status_properties(got)
        if missing and "*" not in _status_properties(got):
            return f"version {name}: status schema lacks {', '.join(sorted(missing))}"
    return None


async def upgrade_crds(client: KubeClient, manifests: list[dict[str, Any]]) -> None:
    """:func:`upgrade_crd` for each; run by the leader only (a standby, or a controller
    started while another holds the Lease, leaves an installed CRD alone)."""
    for manifest in manifests:
        await upgrade_crd(client, manifest)


async def upgrade_crd(client: KubeClient, manifest: dict[str, Any]) -> str | None:
    """Give the installed CRD our spec if :func:`upgrade_reason` says so; returns the
    reason it was upgraded (None: left as it was). Retries a lost update race."""
    name = objects.name(manifest)
    for _ in range(5):
        installed = await client.get(CRDS, name)
        reason = upgrade_reason(installed, manifest)
        if reason is None:
            return None
        body = copy.deepcopy(installed)
        annotations = body["metadata"].setdefault("annotations", {})
        annotations[REPLACED_SPEC] = json.dumps(installed["spec"], sort_keys=True)
        body["spec"] = copy.deepcopy(manifest["spec"])
        try:
            await client.replace(CRDS, body)
        except Conflict:
            continue
        LOG.warning(
            "upgraded CustomResourceDefinition %s in place (%s; the previous spec is in "
            "annotation %s): objects and their status are kept",
            name,
            reason,
            REPLACED_SPEC,
        )
        return reason
    raise ResourceNotReady(f"CustomResourceDefinition {name}: upgrade kept conflicting")


def established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


async def ensure_crds(
    client: KubeClient,
    manifests: list[dict[str, Any]],
    *,
    establish_within: float = 60.0,
    clock: Clock | None = None,
) -> None:
    """Create each CRD that does not exist (an existing one is upgraded by the leader:
    :func:`upgrade_crds`), then wait until all are Established."""
    clock = clock or SystemClock()
    for manifest in manifests:
        name = objects.name(manifest)
        try:
            await client.get(CRDS, name)
            continue
        except NotFound:
            pass
        try:
            await client.create(CRDS, manifest)
            LOG.info("installed CustomResourceDefinition %s", name)
        except AlreadyExists:
            pass
    deadline = clock.monotonic() + establish_within
    for manifest in manifests:
        name = objects.name(manifest)
        while not established(await client.get(CRDS, name)):
            if clock.monotonic() > deadline:
                raise ResourceNotReady(f"CustomResourceDefinition {name} not Established")
            await clock.sleep(0.2)
