"""Install our CustomResourceDefinitions at start if missing, and wait until Established."""

from __future__ import annotations

import logging
from typing import Any

from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import AlreadyExists, NotFound
from kuryr_k8s.k8s.resources import CRDS
from kuryr_k8s.k8s.timing import Clock, SystemClock
from kuryr_k8s.model.errors import ResourceNotReady

LOG = logging.getLogger(__name__)


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
    """Create each CRD that does not exist (an existing one is left as it is: upgrades
    are an operator's decision), then wait until all are Established."""
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
