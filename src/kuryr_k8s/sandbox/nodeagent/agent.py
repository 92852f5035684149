"""The node agent: kubelet, container runtime and a trivial scheduler for sandbox nodes.

One level-triggered reconcile per pod key (``namespace/name``), fed by a pod informer::

    stale records of the key (pod gone, deleting, or another uid) ─▶ CNI DEL, delete netns
    pod unscheduled, default scheduler        ─▶ bind to one of our nodes (round-robin)
    pod on our node, deleting                  ─▶ (after teardown) delete with grace 0
    pod on our node, not yet running           ─▶ record, netns, CNI ADD, status Running
                              CNI ADD failed   ─▶ Warning FailedCreatePodSandBox, CNI DEL, retry

On start every stored record is reconciled too, so netns of pods deleted while the agent
was down are torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from typing import Any

from kuryr_k8s.controller.engine import Engine, EngineSettings, Result
from kuryr_k8s.k8s import (
    LEASES,
    NODES,
    PODS,
    AlreadyExists,
    Backoff,
    Conflict,
    EventRecorder,
    Informer,
    KubeClient,
    NotFound,
)
from kuryr_k8s.k8s import objects as o
from kuryr_k8s.k8s.objects import Obj
from kuryr_k8s.k8s.timing import Clock, SystemClock
from kuryr_k8s.model.errors import KuryrError, TemporaryError
from kuryr_k8s.sandbox.nodeagent import netns as ns
from kuryr_k8s.sandbox.nodeagent.cni import CniError, CniRuntime, RuntimeConf, pod_ips
from kuryr_k8s.sandbox.nodeagent.config import NodeAgentConfig
from kuryr_k8s.sandbox.nodeagent.records import RecordStore, SandboxRecord

LOG = logging.getLogger(__name__)
COMPONENT = "kuryr-nodeagent"
DEFAULT_SCHEDULERS = (None, "", "default-scheduler")


def container_id(uid: str) -> str:
    """The sandbox ("infra container") id of a pod incarnation: 64 hex, stable across restarts."""
    return hashlib.sha256(f"kuryr-sandbox/{uid}".encode()).hexdigest()


class NodeAgent:
    """Runs pods of ``config.nodes`` on this host. Build once, ``await run()``."""

    kind = "pod"
    """For the reconcile engine's logs and metrics."""

    def __init__(
        self,
        client: KubeClient,
        config: NodeAgentConfig,
        *,
        cni: CniRuntime | None = None,
        records: RecordStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not config.nodes:
            raise ValueError("a node agent needs at least one node")
        self.client = client
        self.config = config
        self.cni = cni or CniRuntime(
            config.cni_conf_dir, config.cni_bin_dirs, timeout=config.cni_timeout
        )
        self.records = records or RecordStore(config.state_dir / "sandboxes")
        self.clock: Clock = clock or SystemClock()
        self.events = EventRecorder(client, COMPONENT, host=config.nodes[0], clock=self.clock)
        self.pods = Informer(client, PODS)
        self.engine = Engine(
            self,
            EngineSettings(
                workers=config.workers,
                backoff_base=config.retry_base,
                backoff_cap=config.retry_cap,
            ),
            clock=self.clock,
        )
        self.pods.add_handler(self.engine.enqueue)
        self._next_node = 0
        self.ready = asyncio.Event()
        """Set once nodes are registered, the pod cache is synced and records are queued."""

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Register the nodes, then run pods until cancelled."""
        await self._register_all()
        tasks = [
            asyncio.create_task(self.pods.run(), name="pod informer"),
            asyncio.create_task(self._heartbeats(), name="node heartbeats"),
            asyncio.create_task(self.engine.run(), name="pod reconcilers"),
        ]
        try:
            await self.pods.wait_synced()
            self.engine.enqueue_all(record.key for record in self._records())
            self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _records(self, key: str | None = None) -> list[SandboxRecord]:
        """Sandbox records of our nodes (another agent may share the state directory)."""
        found = self.records.all() if key is None else self.records.for_key(key)
        return [r for r in found if r.node in self.config.nodes]

    async def _register_all(self) -> None:
        """Register every node, retrying while the API is unreachable or failing."""
        backoff = Backoff(base=self.config.retry_base, cap=self.config.retry_cap)
        for node in self.config.nodes:
            while True:
                try:
                    await self.register_node(node)
                    break
                except TemporaryError as exc:
                    delay = backoff.next()
                    LOG.warning("registering node %s: %s; retrying in %.1fs", node, exc, delay)
                    await self.clock.sleep(delay)

    async def remove_all_sandboxes(self) -> None:
        """Tear down every sandbox of our nodes on this host (CNI DEL, netns), pods or not."""
        for record in self._records():
            record.del_failures = max(record.del_failures, self.config.del_attempts - 1)
            await self._teardown(record, None)

    # -- nodes ---------------------------------------------------------------------------

    def _node_status(self) -> Obj:
        now = o.timestamp(self.clock.now())
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kuryr sandbox node agent is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        capacity = {"cpu": "8", "memory": "16Gi", "pods": "110"}
        return {
            "conditions": [ready],
            "addresses": [],
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "kubeletVersion": "v1.31.0-kuryr-sandbox",
                "containerRuntimeVersion": "kuryr-sandbox://0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "kuryr sandbox",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def register_node(self, node: str) -> None:
        """Create the Node (if missing) and post a Ready status with our addresses."""
        labels = {
            "kubernetes.io/hostname": node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **self.config.labels,
        }
        status = self._node_status()
        status["addresses"] = [
            {"type": "InternalIP", "address": self.config.node_ip},
            {"type": "Hostname", "address": node},
        ]
        body: Obj = {"metadata": {"name": node, "labels": labels}, "spec": {}, "status": status}
        with contextlib.suppress(AlreadyExists):
            await self.client.create(NODES, body)
        await self.client.patch(NODES, node, {"status": status}, subresource="status")

    async def _heartbeats(self) -> None:
        while True:
            await self.clock.sleep(self.config.heartbeat_interval)
            for node in self.config.nodes:
                try:
                    await self._heartbeat(node)
                except NotFound:
                    await self.register_node(node)
                except KuryrError as exc:
                    LOG.warning("heartbeat of node %s failed: %s", node, exc)

    async def _heartbeat(self, node: str) -> None:
        status = self._node_status()
        status.pop("addresses")
        current = await self.client.get(NODES, node)
        for cond in (current.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                status["conditions"][0]["lastTransitionTime"] = cond.get("lastTransitionTime")
        await self.client.patch(NODES, node, {"status": status}, subresource="status")
        now = o.micro_timestamp(self.clock.now())
        lease = {"spec": {"holderIdentity": node, "renewTime": now, "leaseDurationSeconds": 40}}
        try:
            await self.client.patch(LEASES, node, lease, "kube-node-lease")
        except NotFound:
            body = {"metadata": {"name": node, "namespace": "kube-node-lease"}, **lease}
            with contextlib.suppress(KuryrError):  # no kube-node-lease namespace: fine
                await self.client.create(LEASES, body, "kube-node-lease")

    # -- pods ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        pod = self.pods.store.get(key)
        for record in self._records(key):
            if pod is None or o.uid(pod) != record.uid or o.is_deleting(pod):
                await self._teardown(record, pod)
        if pod is None:
            return Result()
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node:
            default_scheduler = spec.get("schedulerName") in DEFAULT_SCHEDULERS
            if self.config.schedule and default_scheduler and not o.is_deleting(pod):
                await self._bind(pod)
            return Result()
        if node not in self.config.nodes:
            return Result()
        if o.is_deleting(pod):
            await self._finish_deletion(pod)
            return Result()
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return Result()
        await self._ensure_sandbox(pod, node)
        return Result()

    async def _bind(self, pod: Obj) -> None:
        node = self.config.nodes[self._next_node % len(self.config.nodes)]
        self._next_node += 1
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": o.name(pod), "namespace": o.namespace(pod), "uid": o.uid(pod)},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            await self.client.post_subresource(
                PODS, o.name(pod), "binding", binding, o.namespace(pod)
            )
        except (Conflict, AlreadyExists, NotFound) as exc:
            LOG.info("not binding %s: %s", o.key(pod), exc)
            return
        await self.events.emit(pod, "Scheduled", f"Successfully assigned {o.key(pod)} to {node}")

    def _runtime_conf(self, record: SandboxRecord) -> RuntimeConf:
        return RuntimeConf(
            container_id=record.container_id,
            netns=ns.netns_path(record.netns),
            ifname=self.config.ifname,
            pod_namespace=record.namespace,
            pod_name=record.name,
            pod_uid=record.uid,
        )

    async def _ensure_sandbox(self, pod: Obj, node: str) -> None:
        uid = o.uid(pod)
        spec = pod.get("spec") or {}
        mine = [r for r in self._records(o.key(pod)) if r.uid == uid]
        if spec.get("hostNetwork"):
            await self._mark_running(pod, [self.config.node_ip], None)
            return
        record = mine[0] if mine else self._new_record(pod, node)
        path = ns.netns_path(record.netns)
        if record.result is not None and not path.exists():
            LOG.warning("%s: netns %s vanished; recreating the sandbox", record.key, path)
            await self._cni_del(record, cached=record.result, tolerate=True)
            self.records.remove(record)
            record = self._new_record(pod, node)  # named as this agent names them now
        await ns.ensure_netns(record.netns)
        if record.result is None:
            record.result = await self._cni_add(pod, record)
            record.started_at = o.timestamp(self.clock.now())
            self.records.save(record)
        await self._mark_running(pod, pod_ips(record.result), record)

    def _new_record(self, pod: Obj, node: str) -> SandboxRecord:
        uid = o.uid(pod)
        namespace = o.namespace(pod) or "default"
        record = SandboxRecord(
            namespace=namespace,
            name=o.name(pod),
            uid=uid,
            node=node,
            netns=ns.netns_name(namespace, o.name(pod), uid, self.config.netns_owner),
            container_id=container_id(uid),
        )
        self.records.save(record)  # before the netns exists: never leak it
        return record

    async def _cni_add(self, pod: Obj, record: SandboxRecord) -> dict[str, Any]:
        rt = self._runtime_conf(record)
        try:
            net = self.cni.network()
            return await self.cni.add(rt, net)
        except CniError as exc:
            message = (
                "Failed to create pod sandbox: failed to setup network for sandbox "
                f'"{record.container_id[:12]}": {exc}'
            )
            await self.events.emit(pod, "FailedCreatePodSandBox", message, type="Warning")
            # The spec: after a failed ADD, DEL every plugin of the list before retrying.
            await self._cni_del(record, cached=None, tolerate=True)
            await self._mark_creating(pod)
            raise TemporaryError(message) from exc

    def _status(
        self, pod: Obj, phase: str, conditions: list[Obj], containers: list[Obj], start: str
    ) -> Obj:
        old = pod.get("status") or {}
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.config.node_ip,
            "hostIPs": [{"ip": self.config.node_ip}],
            "startTime": old.get("startTime") or start,
            "containerStatuses": containers,
            "qosClass": old.get("qosClass") or "BestEffort",
        }

    async def _mark_creating(self, pod: Obj) -> None:
        """What ``kubectl get pods`` shows while the sandbox fails: Pending/ContainerCreating."""
        status = pod.get("status") or {}
        waiting = [
            (c.get("state") or {}).get("waiting", {}).get("reason")
            for c in status.get("containerStatuses") or []
        ]
        if status.get("phase") == "Pending" and waiting and set(waiting) == {"ContainerCreating"}:
            return
        now = o.timestamp(self.clock.now())
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
             "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
             "lastTransitionTime": now},
        ]  # fmt: skip
        creating: Obj = {"waiting": {"reason": "ContainerCreating"}}
        new_status = self._status(pod, "Pending", conditions, _containers(pod, creating, None), now)
        with contextlib.suppress(NotFound):
            await self.client.patch(
                PODS, o.name(pod), {"status": new_status}, o.namespace(pod), subresource="status"
            )

    async def _cni_del(
        self, record: SandboxRecord, *, cached: dict[str, Any] | None, tolerate: bool
    ) -> None:
        try:
            net = self.cni.network()
            await self.cni.delete(self._runtime_conf(record), net, cached)
        except CniError as exc:
            if not tolerate:
                raise
            LOG.warning("%s: CNI DEL failed (ignored): %s", record.key, exc)

    async def _teardown(self, record: SandboxRecord, pod: Obj | None) -> None:
        """CNI DEL (retried ``del_attempts`` times), then remove the netns and the record."""
        if ns.netns_path(record.netns).exists() or record.result is not None:
            try:
                await self._cni_del(record, cached=record.result, tolerate=False)
            except CniError as exc:
                record.del_failures += 1
                self.records.save(record)
                if pod is not None and o.uid(pod) == record.uid:
                    await self.events.emit(
                        pod, "FailedKillPodSandbox", f"error killing pod: {exc}", type="Warning"
                    )
                if record.del_failures < self.config.del_attempts:
                    raise TemporaryError(f"CNI DEL of {record.key}: {exc}") from exc
                LOG.error(
                    "%s: CNI DEL failed %d times, removing netns %s anyway: %s",
                    record.key,
                    record.del_failures,
                    record.netns,
                    exc,
                )
        await ns.delete_netns(record.netns)
        self.records.remove(record)
        LOG.info("%s: sandbox %s torn down", record.key, record.netns)

    async def _finish_deletion(self, pod: Obj) -> None:
        """The containers are stopped: delete the pod for good, as kubelet does."""
        if o.meta(pod).get("deletionGracePeriodSeconds") == 0:
            return  # already asked; finalizers (if any) hold it now
        with contextlib.suppress(NotFound, Conflict):
            await self.client.delete(
                PODS,
                o.name(pod),
                o.namespace(pod),
                grace_period_seconds=0,
                precondition_uid=o.uid(pod),
            )

    async def _mark_running(self, pod: Obj, ips: list[str], record: SandboxRecord | None) -> None:
        status = pod.get("status") or {}
        pod_ip = ips[0] if ips else None
        if (
            status.get("phase") == "Running"
            and status.get("podIP") == pod_ip
            and _condition(status, "Ready") == "True"
        ):
            return
        now = o.timestamp(self.clock.now())
        started = (record.started_at if record else None) or now
        conditions = [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for t in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ]
        running: Obj = {"running": {"startedAt": started}}
        cid = record.container_id if record else None
        new_status = self._status(
            pod, "Running", conditions, _containers(pod, running, cid), started
        )
        new_status["podIP"] = pod_ip
        new_status["podIPs"] = [{"ip": ip} for ip in ips]
        await self.client.patch(
            PODS, o.name(pod), {"status": new_status}, o.namespace(pod), subresource="status"
        )


def _containers(pod: Obj, state: Obj, container_id: str | None) -> list[Obj]:
    """containerStatuses: all running (with the sandbox id) or all waiting."""
    running = "running" in state
    statuses: list[Obj] = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        cs: Obj = {
            "name": c.get("name", ""),
            "image": c.get("image", ""),
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }
        if container_id:
            cs["containerID"] = f"kuryr-sandbox://{container_id}"
        statuses.append(cs)
    return statuses


def _condition(status: Obj, kind: str) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def default_node_ip() -> str:
    """The host's primary IPv4 address (the source of its default route), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by connect()
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
