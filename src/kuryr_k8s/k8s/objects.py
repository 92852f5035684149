"""Small typed helpers over plain JSON objects (``dict[str, Any]``).

Objects stay the API's JSON: no generated classes. These helpers give names to the few
fields everyone reads, and the ``namespace/name`` key that informers and work queues use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
"""A Kubernetes object as decoded JSON."""


def meta(obj: Obj) -> dict[str, Any]:
    """``obj["metadata"]``, created empty if missing."""
    m = obj.setdefault("metadata", {})
    assert isinstance(m, dict)
    return m


def name(obj: Obj) -> str:
    return str(meta(obj).get("name", ""))


def namespace(obj: Obj) -> str | None:
    ns = meta(obj).get("namespace")
    return str(ns) if ns else None


def uid(obj: Obj) -> str:
    return str(meta(obj).get("uid", ""))


def resource_version(obj: Obj) -> str:
    return str(meta(obj).get("resourceVersion", ""))


def labels(obj: Obj) -> dict[str, str]:
    value = meta(obj).get("labels") or {}
    assert isinstance(value, dict)
    return value


def annotations_of(obj: Obj) -> dict[str, str]:
    found = meta(obj).get("annotations") or {}
    return {str(k): str(v) for k, v in found.items()}


def key(obj: Obj) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    ns = namespace(obj)
    return f"{ns}/{name(obj)}" if ns else name(obj)


def split_key(k: str) -> tuple[str | None, str]:
    """Inverse of :func:`key`: ``(namespace or None, name)``."""
    ns, sep, n = k.partition("/")
    return (ns, n) if sep else (None, ns)


def is_deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def timestamp(when: datetime) -> str:
    """RFC 3339 ``Time`` with second precision, in UTC (``2024-01-02T03:04:05Z``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp(when: datetime) -> str:
    """RFC 3339 ``MicroTime`` (``2024-01-02T03:04:05.123456Z``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str) -> datetime:
    """Parse ``Time``/``MicroTime`` strings."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
