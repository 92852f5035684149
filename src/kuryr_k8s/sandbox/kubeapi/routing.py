"""URL parsing for ``/api/...`` and ``/apis/...`` request paths."""

from __future__ import annotations

from dataclasses import dataclass

from kuryr_k8s.sandbox.kubeapi import errors


@dataclass(frozen=True)
class Target:
    """What a resource URL points at (``name``/``subresource`` empty for collections)."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str = ""
    subresource: str = ""
    watch_path: bool = False


@dataclass(frozen=True)
class DiscoveryTarget:
    """A discovery URL: ``/api``, ``/apis``, ``/apis/<group>`` or a group version."""

    group: str | None
    version: str | None


_NS_SUBRESOURCES = ("status", "finalize")


def parse(path: str) -> Target | DiscoveryTarget:
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        raise errors.no_such_resource()
    if parts[0] == "api":
        if len(parts) == 1:
            return DiscoveryTarget("", None)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) <= 2:
            return DiscoveryTarget(parts[1] if len(parts) == 2 else None, None)
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return DiscoveryTarget(group, version)
    return _resource(group, version, rest)


def _resource(group: str, version: str, rest: list[str]) -> Target:
    watch = rest[0] == "watch"
    if watch:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NS_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise errors.no_such_resource()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    return Target(group, version, rest[0], namespace, name, sub, watch)
