"""E2E harness: the installed ``kuryr-cni`` driven as a runtime drives it, a real
``kuryr daemon`` process, KuryrPorts written by the test (standing in for the controller)
in the Kubernetes API (emulator, or a real cluster), real Neutron ports and netns.

The host guard (``host``) of the functional CNI tests applies: every test ends with no
OVS row, link or netns of its own left, even when it fails. The e2e test modules import
these fixtures (``tests/e2e`` has no package or conftest of ours).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.kubeapi import KubeApi, KubeClient
from fixtures.sandbox import NeutronTracker, Sandbox
from functional.cni.conftest import HostScope, vif_of
from kuryr_k8s.model.kuryrport import NODE_LABEL, crd_manifests
from kuryr_k8s.model.vif import Vif

DAEMON_START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runtime:
    """What libcni does with a conflist: pick the first, inject name/cniVersion (and
    prevResult), exec the plugin found in CNI_PATH with the CNI_* environment."""

    def __init__(self, bin_dir: Path, conf_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.conf_dir = conf_dir

    def network(self) -> dict[str, Any]:
        first = sorted(self.conf_dir.glob("*.conflist"))[0]
        doc: dict[str, Any] = json.loads(first.read_text())
        return doc

    def exec(
        self,
        command: str,
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "eth0",
        pod: tuple[str, str, str] | None = None,
        prev_result: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        net = self.network()
        plugin = net["plugins"][0]
        conf = {**plugin, "name": net["name"], "cniVersion": net["cniVersion"], **(config or {})}
        if prev_result is not None:
            conf["prevResult"] = prev_result
        cni_env = {
            "CNI_COMMAND": command,
            "CNI_PATH": str(self.bin_dir),
            "PATH": os.environ["PATH"],
        }
        if command in ("ADD", "DEL", "CHECK"):
            cni_env.update(CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME=ifname)
        if pod is not None:
            ns, name, uid = pod
            cni_env["CNI_ARGS"] = (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};"
                f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
            )
        cni_env.update(env or {})
        proc = subprocess.run(
            [str(self.bin_dir / plugin["type"])],
            input=json.dumps(conf) if stdin is None else stdin,
            env=cni_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        if proc.returncode == 0:
            assert out is None or "code" not in out, out
        else:
            assert isinstance(out, dict) and isinstance(out.get("code"), int), proc.stdout
        return proc.returncode, out


@dataclass
class Daemon:
    """``kuryr daemon`` as a child process of the test."""

    args: list[str]
    socket: Path
    metrics_url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kuryr_k8s.cli.main", "daemon", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.metrics_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"daemon not ready: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def metrics(self) -> str:
        return httpx.get(f"{self.metrics_url}/metrics", timeout=5).text


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    netns: str
    container_id: str
    vif: Vif

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.namespace, self.name, self.uid)

    @property
    def netns_name(self) -> str:
        return Path(self.netns).name

    @property
    def ip(self) -> str:
        return self.vif.ips[0].address


class Cluster:
    """Writes what the controller would: Pods and their KuryrPorts, for one node."""

    def __init__(
        self,
        api: KubeClient,
        namespace: str,
        node: str,
        sandbox: Sandbox,
        neutron: NeutronTracker,
        host: HostScope,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.node = node
        self.sandbox = sandbox
        self.neutron = neutron
        self.host = host

    def pod(self, name: str, *, with_vif: bool = True, with_kuryrport: bool = True) -> Pod:
        body = {
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"nodeName": self.node, "containers": [{"name": "c", "image": "busybox"}]},
        }
        resp = self.api.post(f"/api/v1/namespaces/{self.namespace}/pods", body)
        assert resp.status_code == 201, resp.text
        uid = resp.json()["metadata"]["uid"]
        vif = self.port_vif()
        if with_kuryrport:
            self.kuryrport(name, uid, vif if with_vif else None)
        netns = self.host.netns(name)
        return Pod(self.namespace, name, uid, netns, uuid.uuid4().hex, vif)

    def port_vif(self, **kw: Any) -> Vif:
        topo = self.sandbox.topo
        port = self.neutron.port(
            topo.net1_id,
            binding_host_id=self.sandbox.settings.hostname,
            device_owner="compute:kuryr",
            security_group_ids=[topo.default_sg_id],
        )
        subnet = self.sandbox.conn.network.get_subnet(topo.subnet1_id)
        vif = vif_of(port, subnet, topo.mtu, **kw)
        self.host.host_ifnames.add(vif.host_ifname)
        return vif

    def kuryrport(self, name: str, uid: str, vif: Vif | None) -> None:
        path = f"/apis/openstack.org/v1/namespaces/{self.namespace}/kuryrports"
        body = {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrPort",
            "metadata": {"name": name, "labels": {NODE_LABEL: self.node}},
            "spec": {"podUid": uid, "podNodeName": self.node},
        }
        resp = self.api.post(path, body)
        assert resp.status_code == 201, resp.text
        if vif is not None:
            self.set_vif(name, vif)

    def set_vif(self, name: str, vif: Vif) -> None:
        path = f"/apis/openstack.org/v1/namespaces/{self.namespace}/kuryrports/{name}/status"
        status = {"status": {"vifs": {"eth0": {"default": True, "vif": vif.to_dict()}}}}
        resp = self.api.patch(path, status)
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="session")
def kuryrport_crd(kube_client: KubeClient) -> None:
    for crd in crd_manifests():
        resp = kube_client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert resp.status_code in (201, 409), resp.text
    deadline = time.monotonic() + 30
    while kube_client.get("/apis/openstack.org/v1/kuryrports").status_code != 200:
        assert time.monotonic() < deadline, "the KuryrPort CRD is not served"
        time.sleep(0.1)


@pytest.fixture
def cni_dirs(tmp_path: Path) -> Runtime:
    sock = tmp_path / "run" / "cni.sock"
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kuryr_k8s.cli.main",
            "cni",
            "install",
            "--bin-dir",
            str(bin_dir),
            "--conf-dir",
            str(conf_dir),
            "--socket",
            str(sock),
            "--timeout",
            "120",
        ],
        check=True,
        capture_output=True,
    )
    return Runtime(bin_dir, conf_dir)


@pytest.fixture
def daemon_factory(
    kube_api: KubeApi,
    kuryrport_crd: None,
    sandbox: Sandbox,
    host: HostScope,
    cni_dirs: Runtime,
    tmp_path: Path,
) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(vif_timeout: float = 5.0, ready_timeout: float = 60.0) -> Daemon:
        port = free_port()
        sock = Path(cni_dirs.network()["plugins"][0]["daemonSocket"])
        args = [
            "--kubeconfig",
            str(kube_api.kubeconfig),
            "--node-name",
            host.node,
            "--socket",
            str(sock),
            "--metrics-address",
            f"127.0.0.1:{port}",
            "--ovsdb",
            f"unix:{sandbox.ctx.paths.ovs_db_sock}",
            "--vif-timeout",
            str(vif_timeout),
            "--ready-timeout",
            str(ready_timeout),
            "--log-level",
            "DEBUG",
        ]
        daemon = Daemon(args, sock, f"http://127.0.0.1:{port}", tmp_path / "daemon.log")
        started.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture
def cluster(
    kube_client: KubeClient,
    kube_namespace: str,
    sandbox: Sandbox,
    neutron: NeutronTracker,
    host: HostScope,
) -> Cluster:
    return Cluster(kube_client, kube_namespace, host.node, sandbox, neutron, host)
