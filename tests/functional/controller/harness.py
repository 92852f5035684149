"""Run ``kuryr controller`` as a subprocess against the sandbox Neutron and a Kubernetes API.

* :func:`private_api`: the controller watches pods of *all* namespaces, so against the
  emulator each test module gets an emulator of its own (other tests' pods must not get
  ports from us); given a real cluster (``--kubeconfig``) that cluster is used.
* :class:`ControllerProcess`: start, wait until ``/readyz``, SIGKILL, restart, logs.
* :class:`Kube`: the few synchronous API calls the tests make.
* :class:`Ports`: what Neutron holds for a cluster id.

Nothing here is timed: waits poll the state with generous deadlines (one Neutron worker).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openstack.exceptions import ConflictException

from fixtures.kubeapi import KubeApi, KubeClient, KubeConfig
from kuryr_k8s.sandbox.kubeapi import EmulatorProcess

Obj = dict[str, Any]
KP_PATH = "/apis/openstack.org/v1"
WAIT = 300.0
"""Seconds any convergence may take: far above what it needs, never asserted on."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def private_api(kube_api: KubeApi, workdir: Path) -> Iterator[KubeApi]:
    if not kube_api.is_emulator:
        yield kube_api
        return
    proc = EmulatorProcess(workdir / "kubeconfig", log_file=workdir / "emulator.log")
    proc.start()
    try:
        yield KubeApi(proc.kubeconfig, proc.url, True, KubeConfig.load(proc.kubeconfig))
    finally:
        proc.stop()


def write_conf(
    path: Path,
    *,
    sandbox: Any,
    cluster_id: str,
    extra_tag: str,
    lease_namespace: str,
    health_port: int,
    pool: bool = True,
    lease: tuple[float, float, float] = (6.0, 4.0, 1.0),
    gc_grace: float = 3600.0,
    pod_subnet: str | None = None,
    pod_vif_driver: str = "neutron-vif",
    worker_subnets: tuple[str, ...] = (),
    pool_batch: int = 10,
    kubernetes_extra: str = "",
) -> Path:
    topo = sandbox.topo
    duration, deadline, retry = lease
    nested = (
        f"\n[pod_vif_nested]\nworker_nodes_subnets = {','.join(worker_subnets)}\n"
        if worker_subnets
        else ""
    )
    path.write_text(
        f"""[neutron]
endpoint_override = http://127.0.0.1:9696
auth_type = none
timeout = 120

[neutron_defaults]
project = {topo.project_id}
pod_subnet = {pod_subnet or topo.subnet1_id}
pod_security_groups = {topo.default_sg_id}
cluster_id = {cluster_id}
resource_tags = {extra_tag}
ovs_bridge = br-int

[kubernetes]
pod_vif_driver = {pod_vif_driver}
vif_pool_driver = {"neutron" if pool else "noop"}
controller_ha = true
leader_lease_namespace = {lease_namespace}
leader_lease_name = kuryr-controller-{cluster_id}
leader_lease_duration = {duration}
leader_renew_deadline = {deadline}
leader_retry_period = {retry}
port_status_poll_max = 5
port_sweep_interval = 3
{kubernetes_extra}

[vif_pool]
ports_pool_min = 3
ports_pool_batch = {pool_batch}
ports_pool_update_frequency = 5

[garbage_collection]
interval = 5
grace_period = {gc_grace}

[health_server]
port = {health_port}
{nested}"""
    )
    return path


@dataclass
class ControllerProcess:
    conf: Path
    kubeconfig: Path
    log: Path
    health_port: int
    identity: str = field(default_factory=lambda: f"ctl-{secrets.token_hex(3)}")
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> ControllerProcess:
        assert self.proc is None or self.proc.poll() is not None
        cmd = [
            sys.executable,
            "-m",
            "kuryr_k8s.cli.main",
            "controller",
            "--config-file",
            str(self.conf),
            "--kubeconfig",
            str(self.kubeconfig),
            "--identity",
            self.identity,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=dict(os.environ))
        self.starts += 1
        return self

    def readyz(self) -> tuple[int, str]:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=5)
        except httpx.HTTPError:
            return 0, ""
        return r.status_code, r.text

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text

    def metric(self, line_prefix: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix + " ") or line.startswith(line_prefix + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def is_leader(self) -> bool:
        return self.readyz() == (200, "leader")

    def wait_role(self, role: str, timeout: float = WAIT) -> None:
        def check() -> bool:
            assert self.alive(), f"controller exited; see {self.log}"
            return self.readyz() == (200, role)

        wait_for(f"controller {self.identity} to be {role}", check, timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP: a leader that freezes (GC pause, overloaded node, partition) and later
        wakes up believing it still leads."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


class Kube:
    """Synchronous calls on a test namespace."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.c = client
        self.ns = namespace

    def create_pod(self, name: str, node: str, *, host_network: bool = False) -> Obj:
        spec: Obj = {
            "nodeName": node,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
        }
        if host_network:
            spec["hostNetwork"] = True
        r = self.c.post(
            f"/api/v1/namespaces/{self.ns}/pods", {"metadata": {"name": name}, "spec": spec}
        )
        assert r.status_code == 201, r.text
        body: Obj = r.json()
        return body

    def node(self, name: str, *internal_ips: str) -> None:
        """Register a Node (idempotent) with these InternalIP addresses."""
        r = self.c.post("/api/v1/nodes", {"metadata": {"name": name}})
        assert r.status_code in (201, 409), r.text
        addresses = [{"type": "InternalIP", "address": ip} for ip in internal_ips]
        addresses.append({"type": "Hostname", "address": name})
        r = self.c.patch(f"/api/v1/nodes/{name}/status", {"status": {"addresses": addresses}})
        assert r.status_code == 200, r.text

    def delete_node(self, name: str) -> None:
        r = self.c.delete(f"/api/v1/nodes/{name}")
        assert r.status_code in (200, 202, 404), r.text

    def delete_pod(self, name: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        r = self.c.delete(f"/api/v1/namespaces/{self.ns}/pods/{name}", body)
        assert r.status_code in (200, 202, 404), r.text

    def pods(self) -> list[Obj]:
        r = self.c.get(f"/api/v1/namespaces/{self.ns}/pods")
        assert r.status_code == 200, r.text
        items: list[Obj] = r.json()["items"]
        return items

    def kuryrports(self) -> list[Obj]:
        r = self.c.get(f"{KP_PATH}/namespaces/{self.ns}/kuryrports")
        if r.status_code == 404:
            return []
        assert r.status_code == 200, r.text
        items: list[Obj] = r.json()["items"]
        return items

    def events(self) -> list[Obj]:
        r = self.c.get(f"/api/v1/namespaces/{self.ns}/events")
        assert r.status_code == 200, r.text
        items: list[Obj] = r.json()["items"]
        return items


def allocated(kp: Obj) -> bool:
    status = kp.get("status") or {}
    return status.get("state") in ("Allocated", "Active") and bool(status.get("vifs"))


def port_id_of(kp: Obj) -> str:
    return str(kp["status"]["vifs"]["eth0"]["vif"]["portId"])


@dataclass
class Ports:
    """Neutron's view of one cluster id (openstacksdk, synchronous)."""

    conn: Any
    cluster_id: str

    def all(self) -> list[Any]:
        return list(self.conn.network.ports(tags=f"kuryr.cluster:{self.cluster_id}"))

    @staticmethod
    def owner(port: Any) -> str:
        if port.device_id:
            return str(port.device_id)
        for tag in port.tags or []:
            if tag.startswith("kuryr.owner:"):
                return str(tag[len("kuryr.owner:") :])
        return ""

    @staticmethod
    def trunk(port: Any) -> str:
        for tag in port.tags or []:
            if tag.startswith("kuryr.trunk:"):
                return str(tag[len("kuryr.trunk:") :])
        return ""

    def delete_all(self, settle: float = 8.0) -> None:
        """Delete every port of the cluster; if there were any, look again after ``settle``
        seconds: a bulk create a killed controller had already sent (a pool refill) can
        land in Neutron after the first sweep (seen in CI: 10 pool ports 4 s later)."""
        if self._delete_listed():
            time.sleep(settle)
            self._delete_listed()

    def _delete_listed(self) -> int:
        ports = self.all()
        by_trunk: dict[str, list[dict[str, str]]] = {}
        for port in ports:
            if port.device_owner == "trunk:subport" and self.trunk(port):
                by_trunk.setdefault(self.trunk(port), []).append({"port_id": port.id})
        for trunk, subports in by_trunk.items():  # Neutron refuses to delete a subport
            try:
                self.conn.network.delete_trunk_subports(trunk, subports)
            except Exception:  # one is not attached (any more): one by one
                for one in subports:
                    with contextlib.suppress(Exception):
                        self.conn.network.delete_trunk_subports(trunk, [one])
        # A few at a time (the Neutron adapter shares one connection across threads too).
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(self._delete, ports))
        return len(ports)

    def _delete(self, port: Any) -> None:
        """Delete; a killed controller's attach may still land after the list: detach then."""
        for _ in range(5):
            try:
                self.conn.network.delete_port(port, ignore_missing=True)
                return
            except ConflictException:
                with contextlib.suppress(Exception):
                    self.conn.network.delete_trunk_subports(
                        self.trunk(port), [{"port_id": port.id}]
                    )
                time.sleep(1)
        self.conn.network.delete_port(port, ignore_missing=True)


def converged(kube: Kube, live: set[str]) -> bool:
    """Exactly the ``live`` pods exist, each with an allocated KuryrPort, and nothing else."""
    pods = {p["metadata"]["name"] for p in kube.pods()}
    kps = {k["metadata"]["name"]: k for k in kube.kuryrports()}
    return pods == live and set(kps) == live and all(allocated(k) for k in kps.values())


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
