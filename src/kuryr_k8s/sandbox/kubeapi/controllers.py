"""The control-plane loops a real cluster runs next to the API server.

Only the ones whose effects API clients observe, and never kubelet or scheduler work:

* garbage collector: deletes dependents whose owners are all gone (background), empties
  ``foregroundDeletion`` owners, strips owner references for ``orphan``;
* namespace lifecycle: deletes the contents of a terminating namespace, then the namespace;
* CRD cleanup: deletes the custom resources of a deleted CRD, then the CRD;
* service accounts: a ``default`` ServiceAccount in every new namespace;
* root CA publisher: the ``kube-root-ca.crt`` ConfigMap in every new namespace;
* pod GC: pods bound to a node that does not exist are force-deleted after a quarantine
  (40 s, like the kube-controller-manager), so pods of a vanished node agent go away;
* EndpointSlices of Services with a selector (``endpointslices.py``).

Work is queued from store events and done by one asyncio task (or by :meth:`run_pending`
when the server is starting), so nothing runs inside another request.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from kuryr_k8s.sandbox.kubeapi import endpointslices as eps
from kuryr_k8s.sandbox.kubeapi import errors, rootca
from kuryr_k8s.sandbox.kubeapi.api import CRD_KEY, Api
from kuryr_k8s.sandbox.kubeapi.defaults import NOT_READY_TAINT, crd_established_status, node_ready
from kuryr_k8s.sandbox.kubeapi.lifecycle import CRD_FINALIZER
from kuryr_k8s.sandbox.kubeapi.options import DeleteOptions, WriteOptions, timestamp
from kuryr_k8s.sandbox.kubeapi.resources import ResourceType, crd_resource_type
from kuryr_k8s.sandbox.kubeapi.store import Event, Ref

Obj = dict[str, Any]
LOG = logging.getLogger(__name__)


class Controllers:
    def __init__(self, api: Api, orphan_quarantine: float = 40.0) -> None:
        self.api = api
        self.orphan_quarantine = orphan_quarantine
        self._orphans_seen: dict[str, float] = {}
        self._root_ca = ""
        self._pending: deque[tuple[str, Callable[[], None]]] = deque()
        self._queued: set[str] = set()
        self._wakeup = asyncio.Event()
        api.store.listeners.append(self.on_event)

    # ------------------------------------------------------------ queue

    def _enqueue(self, key: str, work: Callable[[], None]) -> None:
        if key in self._queued:
            return
        self._queued.add(key)
        self._pending.append((key, work))
        self._wakeup.set()

    def run_pending(self) -> None:
        while self._pending:
            key, work = self._pending.popleft()
            self._queued.discard(key)
            try:
                work()
            except errors.ApiError as exc:
                LOG.debug("controller work %s: %s", key, exc)
            except Exception:
                LOG.exception("controller work %s failed", key)

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self.run_pending()
            await asyncio.sleep(0)

    async def run_pod_gc(self, interval: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                self.collect_orphaned_pods(loop.time())
            except Exception:
                LOG.exception("pod GC failed")

    # ------------------------------------------------------------ dispatch

    def on_event(self, ev: Event) -> None:
        meta = ev.obj["metadata"]
        if ev.key == "/namespaces":
            self._on_namespace(ev)
        elif ev.key == "/nodes" and ev.type != "DELETED" and node_ready(ev.obj):
            self._enqueue(f"node/{meta['name']}", lambda: self.untaint_ready_node(meta["name"]))
        elif ev.key == CRD_KEY and meta.get("deletionTimestamp"):
            self._enqueue(f"crd/{meta['name']}", lambda: self.cleanup_crd(meta["name"]))
        elif ev.key == CRD_KEY and ev.type == "ADDED":
            self._enqueue(f"crd-names/{meta['name']}", lambda: self.establish_crd(meta["name"]))
        if meta.get("ownerReferences") and ev.type != "DELETED":
            ref: Ref = (ev.key, ev.namespace, meta["name"])
            self._enqueue(f"gc/{ref}", lambda: self.check_dependent(ref))
        if meta.get("deletionTimestamp") and ev.type != "DELETED":
            self._enqueue(f"owner/{meta['uid']}", lambda: self.process_owner(meta["uid"]))
        if ev.type == "DELETED":
            self._on_removed(ev)
        if ev.key in ("/services", "/pods", "/nodes", eps.SLICES_KEY):
            self._on_endpoints_input(ev)

    def _on_namespace(self, ev: Event) -> None:
        name = ev.obj["metadata"]["name"]
        if ev.type == "ADDED":
            self._enqueue(f"sa/{name}", lambda: self.ensure_service_account(name))
            self._enqueue(f"ca/{name}", lambda: self.publish_root_ca(name))
        if ev.obj["metadata"].get("deletionTimestamp") and ev.type != "DELETED":
            self._enqueue(f"ns/{name}", lambda: self.clean_namespace(name))

    def _on_removed(self, ev: Event) -> None:
        meta = ev.obj["metadata"]
        for ref in self.api.store.dependents(meta["uid"]):
            self._enqueue(f"gc/{ref}", self._check_later(ref))
        for owner in meta.get("ownerReferences") or []:
            uid = str(owner.get("uid"))
            self._enqueue(f"owner/{uid}", self._owner_later(uid))
        ns = ev.namespace
        if ns:
            space = self.api.store.get("/namespaces", "", ns)
            if space is not None and space["metadata"].get("deletionTimestamp"):
                self._enqueue(f"ns/{ns}", lambda: self.clean_namespace(ns))
        if ev.key.startswith(tuple(f"{g}/" for g in self._terminating_crd_groups())):
            for crd in self.api.store.iter(CRD_KEY):
                if crd["metadata"].get("deletionTimestamp"):
                    name = crd["metadata"]["name"]
                    self._enqueue(f"crd/{name}", self._crd_later(name))

    def _on_endpoints_input(self, ev: Event) -> None:
        """Queue the Services whose EndpointSlices this change may alter."""
        meta = ev.obj["metadata"]
        if ev.key == "/services" and ev.type != "DELETED":
            self._sync_slices_later(ev.namespace, meta["name"])
        elif ev.key == "/pods":
            old = (ev.old or {}).get("metadata", {}).get("labels")
            for svc in self.api.store.iter("/services", ev.namespace):
                if eps.selects(svc, meta.get("labels")) or eps.selects(svc, old):
                    self._sync_slices_later(ev.namespace, svc["metadata"]["name"])
        elif ev.key == "/nodes" and ev.type != "MODIFIED":
            for svc in self.api.store.iter("/services"):
                if eps.selector_of(svc) is not None:
                    self._sync_slices_later(svc["metadata"]["namespace"], svc["metadata"]["name"])
        elif ev.key == eps.SLICES_KEY:
            labels = meta.get("labels") or {}
            if labels.get(eps.MANAGED_BY) == eps.CONTROLLER_NAME and labels.get(eps.SERVICE_NAME):
                self._sync_slices_later(ev.namespace, str(labels[eps.SERVICE_NAME]))

    def _sync_slices_later(self, namespace: str, name: str) -> None:
        self._enqueue(f"eps/{namespace}/{name}", lambda: self.sync_endpoint_slices(namespace, name))

    def _check_later(self, ref: Ref) -> Callable[[], None]:
        return lambda: self.check_dependent(ref)

    def _owner_later(self, uid: str) -> Callable[[], None]:
        return lambda: self.process_owner(uid)

    def _crd_later(self, name: str) -> Callable[[], None]:
        return lambda: self.cleanup_crd(name)

    def _terminating_crd_groups(self) -> set[str]:
        return {
            str(crd["spec"].get("group"))
            for crd in self.api.store.iter(CRD_KEY)
            if crd["metadata"].get("deletionTimestamp")
        }

    # ------------------------------------------------------------ helpers

    def _type(self, key: str) -> ResourceType | None:
        return self.api.registry.get(key)

    def _delete(self, rt: ResourceType, obj: Obj, policy: str = "Background") -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and rt.key != "/pods":
            return
        self.api.delete(
            rt, meta.get("namespace", ""), meta["name"], DeleteOptions(propagation=policy)
        )

    def _set_finalizers(self, rt: ResourceType, obj: Obj, finalizers: list[str]) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = finalizers
        if not finalizers:
            del new["metadata"]["finalizers"]
        self.api.commit_update(rt, obj, new)

    # ------------------------------------------------------------ garbage collector

    def check_dependent(self, ref: Ref) -> None:
        rt = self._type(ref[0])
        obj = self.api.store.get(*ref)
        if rt is None or obj is None:
            return
        owners = obj["metadata"].get("ownerReferences") or []
        live = [self.api.store.by_uid(str(o.get("uid"))) for o in owners]
        if all(o is None or _foreground(o) for o in live):
            policy = "Foreground" if any(o is not None for o in live) else "Background"
            self._delete(rt, obj, policy)

    def process_owner(self, uid: str) -> None:
        ref = self.api.store.ref_of_uid(uid)
        owner = self.api.store.get(*ref) if ref else None
        rt = self._type(ref[0]) if ref else None
        if owner is None or rt is None or not owner["metadata"].get("deletionTimestamp"):
            return
        fins = list(owner["metadata"].get("finalizers") or [])
        if "orphan" in fins:
            self._orphan_dependents(uid)
            fins.remove("orphan")
            self._set_finalizers(rt, owner, fins)
        elif "foregroundDeletion" in fins:
            deps = [d for d in self.api.store.dependents(uid) if self.api.store.get(*d)]
            for dep in deps:
                self.check_dependent(dep)
            if not deps:
                fins.remove("foregroundDeletion")
                self._set_finalizers(rt, owner, fins)

    def _orphan_dependents(self, uid: str) -> None:
        for ref in self.api.store.dependents(uid):
            obj, rt = self.api.store.get(*ref), self._type(ref[0])
            if obj is None or rt is None:
                continue
            new = copy.deepcopy(obj)
            refs = [o for o in new["metadata"].get("ownerReferences", []) if o.get("uid") != uid]
            new["metadata"]["ownerReferences"] = refs
            if not refs:
                del new["metadata"]["ownerReferences"]
            self.api.commit_update(rt, obj, new)

    # ------------------------------------------------------------ pod GC

    def collect_orphaned_pods(self, now: float) -> list[str]:
        """Force-delete pods whose node has been missing for the quarantine period."""
        pods = self._type("/pods")
        if pods is None:
            return []
        seen: dict[str, float] = {}
        deleted: list[str] = []
        for pod in list(self.api.store.iter("/pods")):
            node = (pod.get("spec") or {}).get("nodeName")
            if not node or self.api.store.get("/nodes", "", node) is not None:
                continue
            uid = pod["metadata"]["uid"]
            seen[uid] = self._orphans_seen.get(uid, now)
            if now - seen[uid] >= self.orphan_quarantine:
                meta = pod["metadata"]
                self.api.delete(pods, meta["namespace"], meta["name"], DeleteOptions(grace=0))
                deleted.append(f"{meta['namespace']}/{meta['name']}")
                seen.pop(uid)
        self._orphans_seen = seen
        return deleted

    # ------------------------------------------------------------ nodes

    def untaint_ready_node(self, name: str) -> None:
        """Node lifecycle controller: a Ready node loses the not-ready NoSchedule taint."""
        rt = self._type("/nodes")
        node = self.api.store.get("/nodes", "", name)
        if rt is None or node is None or not node_ready(node):
            return
        taints = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != NOT_READY_TAINT["key"]]
        if len(kept) == len(taints):
            return
        new = copy.deepcopy(node)
        new["spec"]["taints"] = kept
        if not kept:
            del new["spec"]["taints"]
        self.api.commit_update(rt, node, new)

    # ------------------------------------------------------------ EndpointSlices

    def resync_endpoint_slices(self) -> None:
        """Queue every Service, as the real controller does when it starts (a store loaded
        from a snapshot sends no events)."""
        for svc in self.api.store.iter("/services"):
            self._sync_slices_later(svc["metadata"]["namespace"], svc["metadata"]["name"])

    def sync_endpoint_slices(self, namespace: str, name: str) -> None:
        """Converge the EndpointSlices of one Service (see ``endpointslices.py``)."""
        rt = self._type(eps.SLICES_KEY)
        svc = self.api.store.get("/services", namespace, name)
        if rt is None or svc is None or svc["metadata"].get("deletionTimestamp"):
            return  # the garbage collector deletes the slices of a deleted Service
        if eps.selector_of(svc) is None:
            return  # selector-less Services get their slices from their users
        managed = sorted(
            (s for s in self.api.store.iter(rt.key, namespace) if eps.is_managed(s, svc)),
            key=lambda s: str(s["metadata"]["name"]),
        )
        pool: dict[str, list[Obj]] = {}
        for stale in managed:
            if eps.owned_by(stale, svc):
                pool.setdefault(eps.ports_key(stale.get("ports")), []).append(stale)
            else:
                self._delete(rt, stale)
        pods = [
            p
            for p in self.api.store.iter("/pods", namespace)
            if eps.selects(svc, p["metadata"].get("labels"))
        ]
        nodes = {str(n["metadata"]["name"]): n for n in self.api.store.iter("/nodes")}
        groups, trigger = eps.desired_groups(svc, pods, nodes)
        plan: list[tuple[list[Obj] | None, list[Obj], Obj | None]] = []
        for ports, endpoints in groups:
            same_ports = pool.get(eps.ports_key(ports)) or []
            plan.append((ports, endpoints, same_ports.pop(0) if same_ports else None))
        # like the real reconciler: a create becomes an update of a slice otherwise deleted
        spare = [stale for left in pool.values() for stale in left]
        for ports, endpoints, base in plan:
            base = base or (spare.pop(0) if spare else None)
            wanted = eps.build_slice(svc, ports, endpoints, trigger, base)
            if base is None:
                self.api.create(rt, rt.version, namespace, wanted)
            elif not eps.same_content(base, wanted):
                self.api.update(rt, base, wanted, "", WriteOptions())
        for stale in spare:
            self._delete(rt, stale)

    # ------------------------------------------------------------ namespaces

    def ensure_service_account(self, namespace: str) -> None:
        rt = self._type("/serviceaccounts")
        ns = self.api.store.get("/namespaces", "", namespace)
        if rt is None or ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.api.store.get(rt.key, namespace, "default") is None:
            self.api.create(rt, "v1", namespace, {"metadata": {"name": "default"}})

    def publish_root_ca(self, namespace: str) -> None:
        """root-ca-cert-publisher: ``kube-root-ca.crt`` in every namespace."""
        rt = self._type("/configmaps")
        ns = self.api.store.get("/namespaces", "", namespace)
        if rt is None or ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.api.store.get(rt.key, namespace, rootca.NAME) is None:
            self.api.create(rt, "v1", namespace, rootca.configmap(self.root_ca()))

    def root_ca(self) -> str:
        if not self._root_ca:
            kept = self.api.store.get("/configmaps", "kube-system", rootca.NAME)
            pem = ((kept or {}).get("data") or {}).get("ca.crt")
            self._root_ca = str(pem) if pem else rootca.new_ca_pem()
        return self._root_ca

    def clean_namespace(self, name: str) -> None:
        nss = self._type("/namespaces")
        ns = self.api.store.get("/namespaces", "", name)
        if nss is None or ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for rt in self.api.registry:
            if not rt.namespaced:
                continue
            for obj in list(self.api.store.iter(rt.key, name)):
                self._delete(rt, obj)
            remaining += self.api.store.count(rt.key, name)
        if remaining:
            return
        spec_fins = [f for f in (ns.get("spec") or {}).get("finalizers") or [] if f != "kubernetes"]
        new = copy.deepcopy(ns)
        new.setdefault("spec", {})["finalizers"] = spec_fins
        if not spec_fins:
            new["spec"].pop("finalizers")
        self.api.commit_update(nss, ns, new)

    # ------------------------------------------------------------ CRDs

    def establish_crd(self, name: str) -> None:
        """Naming and establishing controllers: accept the names and set the conditions
        (the cleanup finalizer comes with the DELETE, see ``lifecycle.CRD_FINALIZER``)."""
        crds = self._type(CRD_KEY)
        crd = self.api.store.get(CRD_KEY, "", name)
        if crds is None or crd is None or crd["metadata"].get("deletionTimestamp"):
            return
        if (crd.get("status") or {}).get("conditions"):
            return
        new = copy.deepcopy(crd)
        new["status"] = crd_established_status(crd, timestamp())
        self.api.commit_update(crds, crd, new)

    def cleanup_crd(self, name: str) -> None:
        crds = self._type(CRD_KEY)
        crd = self.api.store.get(CRD_KEY, "", name)
        if crds is None or crd is None or not crd["metadata"].get("deletionTimestamp"):
            return
        rt = crd_resource_type(crd)
        for obj in list(self.api.store.iter(rt.key)):
            self._delete(rt, obj)
        if self.api.store.count(rt.key):
            return
        fins = [f for f in crd["metadata"].get("finalizers") or [] if f != CRD_FINALIZER]
        self._set_finalizers(crds, crd, fins)


def _foreground(obj: Obj) -> bool:
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and "foregroundDeletion" in (
        meta.get("finalizers") or []
    )
