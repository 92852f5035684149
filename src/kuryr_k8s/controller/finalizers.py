"""Finalizer edits that never clobber a concurrent change.

The patch carries the resourceVersion that was read, so a write based on a stale cache
fails with ``Conflict`` (a TemporaryError with no delay: the engine re-reads and retries)
instead of dropping somebody else's finalizer.
"""

from __future__ import annotations

from kuryr_k8s.k8s import objects
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.resources import Resource


def finalizers_of(obj: Obj) -> list[str]:
    return list(objects.meta(obj).get("finalizers") or [])


async def set_finalizers(client: KubeClient, res: Resource, obj: Obj, finalizers: list[str]) -> Obj:
    """Write ``finalizers``; returns the updated object (``obj`` itself if it is gone)."""
    patch = {
        "metadata": {
            "finalizers": finalizers or None,
            "resourceVersion": objects.resource_version(obj),
        }
    }
    try:
        return await client.patch(res, objects.name(obj), patch, objects.namespace(obj))
    except NotFound:
        return obj


async def add_finalizer(client: KubeClient, res: Resource, obj: Obj, finalizer: str) -> Obj:
    current = finalizers_of(obj)
    if finalizer in current:
        return obj
    return await set_finalizers(client, res, obj, [*current, finalizer])


async def remove_finalizer(client: KubeClient, res: Resource, obj: Obj, finalizer: str) -> Obj:
    current = finalizers_of(obj)
    if finalizer not in current:
        return obj
    return await set_finalizers(client, res, obj, [f for f in current if f != finalizer])
