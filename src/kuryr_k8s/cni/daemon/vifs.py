"""The pods' VIFs as the daemon knows them: a cache of this node's KuryrPorts.

An :class:`~kuryr_k8s.k8s.informer.Informer` keeps the KuryrPorts labelled with this node
(``kuryr.openstack.org/nodeName=<node>``) current; ADD waits here for its VIF, never on
Neutron. The pod itself is read only when its KuryrPort is missing, to tell "not yet"
from "no such pod".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from kuryr_k8s.cni.errors import UnknownContainer, VifTimeout
from kuryr_k8s.k8s.client import KubeClient
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.informer import Informer
from kuryr_k8s.k8s.resources import KURYRPORTS, PODS
from kuryr_k8s.model.errors import KuryrError
from kuryr_k8s.model.kuryrport import NODE_LABEL, VifEntry, parse_vifs
from kuryr_k8s.model.vif import Vif


class VifSource(Protocol):
    """Where the daemon gets VIFs from (the informer cache, or a fake in tests)."""

    @property
    def synced(self) -> bool: ...

    async def wait_vif(
        self,
        namespace: str,
        name: str,
        ifname: str,
        pod_uid: str,
        timeout: float,  # noqa: ASYNC109
    ) -> Vif: ...

    def current_vif(self, namespace: str, name: str, ifname: str) -> Vif | None: ...

    def has_pod(self, pod_key: str) -> bool: ...

    @property
    def known_pods(self) -> int:
        """How many pods the cache holds a KuryrPort for."""
        ...


class PodLookup(Protocol):
    async def exists(self, namespace: str, name: str) -> bool | None:
        """``False`` if the API says the pod does not exist; ``None`` if it cannot tell."""


class ApiPods:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def exists(self, namespace: str, name: str) -> bool | None:
        try:
            await self.client.get(PODS, name, namespace)
        except NotFound:
            return False
        except KuryrError:
            return None
        return True


def pick(entries: dict[str, VifEntry], ifname: str) -> Vif | None:
    """The VIF for ``ifname``: the entry of that name, else the default one."""
    entry = entries.get(ifname) or next((e for e in entries.values() if e.default), None)
    return entry.vif if entry else None


def node_informer(client: KubeClient, node: str) -> Informer:
    return Informer(client, KURYRPORTS, label_selector=f"{NODE_LABEL}={node}")


class KuryrPortVifs:
    """VIFs from an informer's store; waiters wake on every change of their key."""

    def __init__(self, informer: Informer, pods: PodLookup | None = None) -> None:
        self.informer = informer
        self.pods = pods
        self._waiters: dict[str, set[asyncio.Event]] = {}
        informer.add_handler(self._changed)

    @property
    def synced(self) -> bool:
        return self.informer.synced

    def _changed(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def _lookup(self, key: str, ifname: str, pod_uid: str) -> tuple[Vif | None, str]:
        kp = self.informer.store.get(key)
        if kp is None:
            return None, "no KuryrPort"
        spec: dict[str, Any] = kp.get("spec") or {}
        if pod_uid and spec.get("podUid") and spec.get("podUid") != pod_uid:
            return None, f"the KuryrPort is for pod uid {spec.get('podUid')}, not {pod_uid}"
        try:
            vif = pick(parse_vifs(kp), ifname)
        except KuryrError as exc:
            return None, f"invalid VIF: {exc}"
        return vif, "" if vif else "the KuryrPort has no VIF yet"

    def current_vif(self, namespace: str, name: str, ifname: str) -> Vif | None:
        return self._lookup(f"{namespace}/{name}", ifname, "")[0]

    def has_pod(self, pod_key: str) -> bool:
        return pod_key in self.informer.store

    @property
    def known_pods(self) -> int:
        return len(self.informer.store)

    async def wait_vif(
        self,
        namespace: str,
        name: str,
        ifname: str,
        pod_uid: str,
        timeout: float,  # noqa: ASYNC109
    ) -> Vif:
        key = f"{namespace}/{name}"
        deadline = time.monotonic() + timeout
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            checked_pod = False
            while True:
                event.clear()
                vif, why = self._lookup(key, ifname, pod_uid)
                if vif is not None:
                    return vif
                if not checked_pod and key not in self.informer.store and self.pods:
                    checked_pod = True
                    if await self.pods.exists(namespace, name) is False:
                        raise UnknownContainer(f"pod {key} does not exist")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise VifTimeout(f"pod {key}: {why} after {timeout:g} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            self._waiters[key].discard(event)
            if not self._waiters[key]:
                del self._waiters[key]
