"""The daemon touches only what is its own (issue 14), and re-plugs what vanished (issue 15).

Two clusters' daemons on one host, as the issue found them: the same node name, each with
its own cluster id, socket, CNI dirs and Kubernetes API (cluster A on the session's API,
cluster B on a private emulator), both on the sandbox's OVS. Restarting either daemon and
a GC of each leave the other's pods alone (rows, links, traffic). Then a pod whose host
veth is deleted by hand is plugged again by its daemon, and told so by Events.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi, KubeClient, KubeConfig, create_namespace
from fixtures.sandbox import ACTIVE_TIMEOUT, NeutronTracker, Sandbox
from functional.cni.conftest import HostScope
from functional.cni.harness import Cluster, Daemon, Pod, Runtime, free_port
from functional.traffic import ping
from kuryr_k8s.cni.host import links
from kuryr_k8s.model.kuryrport import crd_manifests
from kuryr_k8s.sandbox.kubeapi.process import EmulatorProcess

pytestmark = pytest.mark.e2e

REPLUG_TIMEOUT = 120.0
"""The daemon looks every 10 s; plugging takes well under a second."""


def install_crds(client: KubeClient) -> None:
    for crd in crd_manifests():
        resp = client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert resp.status_code in (201, 409), resp.text
    deadline = time.monotonic() + 30
    while client.get("/apis/openstack.org/v1/kuryrports").status_code != 200:
        assert time.monotonic() < deadline, "the KuryrPort CRD is not served"
        time.sleep(0.1)


def node_side(
    work: Path, kubeconfig: Path, node: str, ovs_sock: Path, cluster_id: str
) -> tuple[Runtime, Daemon]:
    """One cluster's CNI install (own dirs and socket) and its daemon (not started)."""
    sock = work / "run" / "cni.sock"
    bin_dir, conf_dir = work / "bin", work / "net.d"
    subprocess.run(
        [sys.executable, "-m", "kuryr_k8s.cli.main", "cni", "install", "--bin-dir",
         str(bin_dir), "--conf-dir", str(conf_dir), "--socket", str(sock), "--timeout", "120"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    conf = work / "kuryr.conf"
    conf.write_text(f"[neutron_defaults]\ncluster_id = {cluster_id}\n")
    port = free_port()
    args = [
        "--config-file", str(conf), "--kubeconfig", str(kubeconfig), "--node-name", node,
        "--socket", str(sock), "--metrics-address", f"127.0.0.1:{port}",
        "--ovsdb", f"unix:{ovs_sock}", "--vif-timeout", "30", "--ready-timeout", "60",
        "--log-level", "DEBUG",
    ]  # fmt: skip
    daemon = Daemon(args, sock, f"http://127.0.0.1:{port}", work / "daemon.log")
    return Runtime(bin_dir, conf_dir), daemon


def add(runtime: Runtime, pod: Pod) -> None:
    rc, result = runtime.exec("ADD", container_id=pod.container_id, netns=pod.netns, pod=pod.ident)
    assert rc == 0, result


def delete(runtime: Runtime, pod: Pod) -> None:
    rc, out = runtime.exec("DEL", container_id=pod.container_id, netns=pod.netns, pod=pod.ident)
    assert (rc, out) == (0, None)


def gc(runtime: Runtime, *valid: Pod) -> None:
    items = [{"containerID": p.container_id, "ifname": "eth0"} for p in valid]
    assert runtime.exec("GC", config={"cni.dev/valid-attachments": items}) == (0, None)


def assert_pingable(src: Pod, ip: str) -> None:
    out = ping(src.netns_name, ip)
    assert out.returncode == 0, f"{src.name} → {ip}: {out.stdout}{out.stderr}"


def host_state(host: HostScope) -> dict[str, tuple[str, bool]]:
    """Our node's OVS rows: name → (kuryr-cluster, does its veth exist)."""
    alive = set(links.host_aliases())
    return {
        i.name: (i.external_ids.get("kuryr-cluster", ""), i.name in alive)
        for i in host.ovsdb.owned_interfaces(host.node)
    }


@dataclass
class SecondApi:
    kubeconfig: Path
    client: KubeClient


@pytest.fixture
def second_api(tmp_path: Path) -> Iterator[SecondApi]:
    """Cluster B's own Kubernetes API: a private emulator with the KuryrPort CRD."""
    work = tmp_path / "api-b"
    work.mkdir()
    proc = EmulatorProcess(work / "kubeconfig", log_file=work / "emulator.log")
    proc.start()
    client = KubeClient(KubeConfig.load(proc.kubeconfig))
    try:
        install_crds(client)
        yield SecondApi(proc.kubeconfig, client)
    finally:
        client.close()
        proc.stop()


def test_two_clusters_daemons_on_one_host_leave_each_other_alone(
    kube_api: KubeApi,
    kube_client: KubeClient,
    kube_namespace: str,
    kuryrport_crd: None,
    second_api: SecondApi,
    sandbox: Sandbox,
    neutron: NeutronTracker,
    host: HostScope,
    tmp_path: Path,
) -> None:
    ovs_sock = sandbox.ctx.paths.ovs_db_sock
    suffix = uuid.uuid4().hex[:6]
    ids = {"a": f"kuryr-a-{suffix}", "b": f"kuryr-real-{suffix}"}
    rt_a, daemon_a = node_side(tmp_path / "a", kube_api.kubeconfig, host.node, ovs_sock, ids["a"])
    rt_b, daemon_b = node_side(tmp_path / "b", second_api.kubeconfig, host.node, ovs_sock, ids["b"])
    cluster_a = Cluster(kube_client, kube_namespace, host.node, sandbox, neutron, host)
    ns_b = create_namespace(second_api.client)
    cluster_b = Cluster(second_api.client, ns_b, host.node, sandbox, neutron, host)
    pinger: subprocess.Popen[str] | None = None
    try:
        daemon_a.start()
        daemon_b.start()
        a1, a2 = cluster_a.pod("pod-a1"), cluster_a.pod("pod-a2")
        b1, b2 = cluster_b.pod("pod-b1"), cluster_b.pod("pod-b2")
        for runtime, pod in ((rt_a, a1), (rt_a, a2), (rt_b, b1), (rt_b, b2)):
            add(runtime, pod)
            neutron.wait_port_status(pod.vif.port_id, "ACTIVE")
        everything = {
            **{p.vif.host_ifname: (ids["a"], True) for p in (a1, a2)},
            **{p.vif.host_ifname: (ids["b"], True) for p in (b1, b2)},
        }
        assert host_state(host) == everything, "each row is stamped with its cluster id"
        assert_pingable(a1, a2.ip)
        assert_pingable(b1, b2.ip)
        assert_pingable(a1, b1.ip)
        # One ping from a pod of A to a pod of B runs across every step below.
        pinger = subprocess.Popen(
            ["ip", "netns", "exec", a1.netns_name, "ping", "-i", "0.2", b1.ip],
            stdout=subprocess.PIPE,
            text=True,
        )

        for daemon in (daemon_b, daemon_a):  # B's cache knows none of A's pods, and back
            daemon.stop()
            daemon.start()
            assert host_state(host) == everything, f"after restarting {daemon.log.parent.name}"
            log = daemon.log.read_text()
            assert "reconcile: unplugging" not in log and "NOT unplugging" not in log, log
            assert "leaving attachments of cluster(s)" in log, "it saw the other's, and left them"

        gc(rt_a, a1, a2)
        gc(rt_b, b1, b2)
        assert host_state(host) == everything, "GC of one cluster removed the other's pods"
        gc(rt_a, a1)  # GC still works on what is its own
        del everything[a2.vif.host_ifname]
        assert host_state(host) == everything
        assert_pingable(b1, b2.ip)
        assert_pingable(b2, a1.ip)

        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=30)
        pinger = None
        assert " 0% packet loss" in out, out

        for runtime, pod in ((rt_a, a1), (rt_b, b1), (rt_b, b2)):
            delete(runtime, pod)
        delete(rt_a, a2)  # already GC'd: still success
        assert host.residue(netns=False) == {}
    finally:
        if pinger is not None:
            pinger.kill()
            pinger.wait()
        daemon_a.stop()
        daemon_b.stop()


def events_of(client: KubeClient, pod: Pod) -> list[tuple[str, str]]:
    resp = client.get(f"/api/v1/namespaces/{pod.namespace}/events")
    assert resp.status_code == 200, resp.text
    items = sorted(
        (e for e in resp.json()["items"] if e["involvedObject"].get("name") == pod.name),
        key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]),
    )
    return [(e["type"], e["reason"]) for e in items]


def test_a_vanished_veth_is_plugged_again_and_the_pod_is_told(
    cni_dirs: Runtime,
    daemon_factory: Callable[..., Daemon],
    cluster: Cluster,
    neutron: NeutronTracker,
    host: HostScope,
    kube_client: KubeClient,
) -> None:
    daemon = daemon_factory()
    a, b = cluster.pod("pod-a"), cluster.pod("pod-b")
    add(cni_dirs, a)
    add(cni_dirs, b)
    for pod in (a, b):
        neutron.wait_port_status(pod.vif.port_id, "ACTIVE")
    assert_pingable(a, b.ip)

    subprocess.run(["ip", "link", "del", a.vif.host_ifname], check=True)
    assert links.pod_link(a.netns, "eth0") is None, "deleting the host end took the pod end"

    deadline = time.monotonic() + REPLUG_TIMEOUT
    while links.pod_link(a.netns, "eth0") is None or (
        host.ovsdb.interface(a.vif.host_ifname) is None
    ):
        assert time.monotonic() < deadline, f"not re-plugged: {daemon.log.read_text()[-3000:]}"
        time.sleep(0.5)
    link = links.pod_link(a.netns, "eth0")
    assert link is not None and a.vif.ips[0].interface in link.addresses
    assert link.mac == a.vif.mac_address
    deadline = time.monotonic() + ACTIVE_TIMEOUT
    while (out := ping(a.netns_name, b.ip)).returncode != 0:
        assert time.monotonic() < deadline, out.stdout + out.stderr
    assert_pingable(b, a.ip)

    replugs = 'kuryr_cni_replugs_total{outcome="replugged",vif_type="ovs"} 1.0'
    assert replugs in daemon.metrics()
    deadline = time.monotonic() + 30  # Events are written in the background
    while (seen := events_of(kube_client, a)) != [
        ("Warning", "PortDown"),
        ("Normal", "PortRecovered"),
    ]:
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    assert events_of(kube_client, b) == []

    delete(cni_dirs, a)
    delete(cni_dirs, b)
    assert host.residue(netns=False) == {}
