"""Pods plugged through the installed ``kuryr-cni`` and a real ``kuryr daemon``.

The runtime side is :class:`Runtime` (exec with the CNI_* environment and the conflist's
config on stdin); the controller side is :class:`Cluster` (Pods and KuryrPorts written by
the test). Traffic is real: ICMP and TCP between pods, and to a "VM" on net0 via router1.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.cni.conftest import HostScope
from functional.cni.harness import Cluster, Daemon, Pod, Runtime
from functional.traffic import ping, tcp_echo
from kuryr_k8s.cni import spec

pytestmark = pytest.mark.e2e


def add(runtime: Runtime, pod: Pod) -> dict[str, Any]:
    rc, result = runtime.exec("ADD", container_id=pod.container_id, netns=pod.netns, pod=pod.ident)
    assert rc == 0, result
    return dict(result)


def delete(runtime: Runtime, pod: Pod, result: dict[str, Any] | None = None) -> None:
    rc, out = runtime.exec(
        "DEL", container_id=pod.container_id, netns=pod.netns, pod=pod.ident, prev_result=result
    )
    assert (rc, out) == (0, None)


def check(runtime: Runtime, pod: Pod, result: dict[str, Any]) -> tuple[int, Any]:
    return runtime.exec(
        "CHECK", container_id=pod.container_id, netns=pod.netns, pod=pod.ident, prev_result=result
    )


def assert_pingable(src: Pod, ip: str) -> None:
    out = ping(src.netns_name, ip)
    assert out.returncode == 0, f"{src.name} → {ip}: {out.stdout}{out.stderr}"


def test_pods_talk_to_each_other_and_to_a_vm(
    cni_dirs: Runtime,
    daemon_factory: Callable[..., Daemon],
    cluster: Cluster,
    sandbox: Sandbox,
    neutron: NeutronTracker,
    netns_factory: Any,
    host: HostScope,
) -> None:
    daemon = daemon_factory()
    a, b = cluster.pod("pod-a"), cluster.pod("pod-b")
    res_a, res_b = add(cni_dirs, a), add(cni_dirs, b)

    assert res_a["cniVersion"] == "1.1.0"
    assert res_a["interfaces"] == [
        {"name": "eth0", "mac": a.vif.mac_address, "mtu": a.vif.mtu, "sandbox": a.netns}
    ]
    assert res_a["ips"][0]["address"] == a.vif.ips[0].interface
    for pod in (a, b):
        assert neutron.wait_port_status(pod.vif.port_id, "ACTIVE").status == "ACTIVE"

    topo = sandbox.topo
    vm_port = neutron.port(
        topo.net0_id,
        binding_host_id=sandbox.settings.hostname,
        device_owner="compute:kuryr-vm",
        security_group_ids=[topo.default_sg_id],
    )
    vm = netns_factory(vm_port, sandbox.conn.network.get_subnet(topo.subnet0_id))
    neutron.wait_port_status(vm_port.id, "ACTIVE")

    assert_pingable(a, b.ip)
    assert_pingable(b, a.ip)
    assert_pingable(a, vm.ip)
    assert tcp_echo(a.netns_name, a.ip, b.netns_name, payload="b-to-a") == "echo:b-to-a"
    assert tcp_echo(b.netns_name, b.ip, a.netns_name, payload="a-to-b") == "echo:a-to-b"
    assert tcp_echo(vm.netns, vm.ip, a.netns_name, payload="pod-to-vm") == "echo:pod-to-vm"
    assert tcp_echo(a.netns_name, a.ip, vm.netns, payload="vm-to-pod") == "echo:vm-to-pod"

    assert check(cni_dirs, a, res_a) == (0, None)
    assert check(cni_dirs, b, res_b) == (0, None)
    metrics = daemon.metrics()
    assert 'kuryr_cni_request_duration_seconds_count{command="ADD",outcome="ok"} 2.0' in metrics

    for pod, res in ((a, res_a), (b, res_b)):
        delete(cni_dirs, pod, res)
        delete(cni_dirs, pod, res)
    assert host.residue(netns=False) == {}
    rc, out = check(cni_dirs, a, res_a)
    assert rc != 0 and "no eth0 plugged" in out["details"]


def test_daemon_restart_keeps_pods_working_and_cleans_up_gone_ones(
    cni_dirs: Runtime,
    daemon_factory: Callable[..., Daemon],
    cluster: Cluster,
    neutron: NeutronTracker,
    host: HostScope,
) -> None:
    daemon = daemon_factory()
    a, b, gone = cluster.pod("pod-a"), cluster.pod("pod-b"), cluster.pod("pod-gone")
    res_a, res_b = add(cni_dirs, a), add(cni_dirs, b)
    add(cni_dirs, gone)
    assert_pingable(a, b.ip)

    # A ping runs across the whole restart: the daemon is not in the data path.
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a.netns_name, "ping", "-c", "50", "-i", "0.1", b.ip],
        stdout=subprocess.PIPE,
        text=True,
    )
    daemon.stop()
    # While the daemon is down: the runtime cannot reach it, and one pod goes away.
    rc, out = cni_dirs.exec("ADD", container_id="x1", netns=a.netns, pod=a.ident)
    assert rc != 0 and out["code"] == spec.TRY_AGAIN_LATER and "not running" in out["msg"]
    subprocess.run(["ip", "netns", "delete", gone.netns_name], check=True)

    daemon.start()
    assert {p for p in (i.name for i in host.ovsdb.owned_interfaces(host.node))} == {
        a.vif.host_ifname,
        b.vif.host_ifname,
    }, "the restarted daemon must drop the gone pod's row and keep the others"
    out, _ = pinger.communicate(timeout=60)
    assert " 50 received, 0% packet loss" in out, out
    assert_pingable(a, b.ip)
    assert tcp_echo(b.netns_name, b.ip, a.netns_name, payload="after-restart") == (
        "echo:after-restart"
    )
    assert check(cni_dirs, a, res_a) == (0, None)
    delete(cni_dirs, gone)  # its netns is gone and so is its attachment: still success
    delete(cni_dirs, a, res_a)
    delete(cni_dirs, b, res_b)
    delete(cni_dirs, b, res_b)
    assert host.residue(netns=False) == {}


def test_many_pods_plugged_in_parallel(
    cni_dirs: Runtime, daemon_factory: Callable[..., Daemon], cluster: Cluster, host: HostScope
) -> None:
    daemon_factory()
    pods = [cluster.pod(f"pod-{i}") for i in range(6)]
    with ThreadPoolExecutor(len(pods)) as pool:
        results = list(pool.map(lambda p: add(cni_dirs, p), pods))
    assert [r["ips"][0]["address"] for r in results] == [p.vif.ips[0].interface for p in pods]
    assert_pingable(pods[0], pods[-1].ip)
    with ThreadPoolExecutor(len(pods)) as pool:
        list(pool.map(lambda p: delete(cni_dirs, p), pods))
    assert host.residue(netns=False) == {}


def test_status_and_gc(
    cni_dirs: Runtime, daemon_factory: Callable[..., Daemon], cluster: Cluster, host: HostScope
) -> None:
    daemon_factory()
    assert cni_dirs.exec("STATUS") == (0, None)
    keep, drop = cluster.pod("pod-keep"), cluster.pod("pod-drop")
    add(cni_dirs, keep)
    add(cni_dirs, drop)
    valid = [{"containerID": keep.container_id, "ifname": "eth0"}]
    assert cni_dirs.exec("GC", config={"cni.dev/valid-attachments": valid}) == (0, None)
    assert [i.name for i in host.ovsdb.owned_interfaces(host.node)] == [keep.vif.host_ifname]
    delete(cni_dirs, keep)
    assert host.residue(netns=False) == {}


def test_bad_input_fails_precisely_and_leaves_nothing(
    cni_dirs: Runtime,
    daemon_factory: Callable[..., Daemon],
    cluster: Cluster,
    host: HostScope,
    tmp_path: Any,
) -> None:
    daemon = daemon_factory(vif_timeout=2.0)
    good = cluster.pod("pod-good")

    def fails(code: int, words: str, **kw: Any) -> None:
        kw.setdefault("container_id", "c-bad")
        rc, out = cni_dirs.exec("ADD", **kw)
        assert rc != 0, out
        assert out["code"] == code, out
        assert words in out["msg"] + " " + out.get("details", ""), out
        assert host.residue(netns=False) == {}

    fails(spec.DECODE_FAILURE, "decode", netns=good.netns, pod=good.ident, stdin="{oops")
    fails(spec.INVALID_ENVIRONMENT, "CNI_IFNAME", netns=good.netns, pod=good.ident, ifname="")
    fails(spec.INVALID_ENVIRONMENT, "K8S_POD_NAME", netns=good.netns)
    fails(spec.UNKNOWN_CONTAINER, "does not exist", netns=str(tmp_path / "nope"), pod=good.ident)
    ghost = (cluster.namespace, "no-such-pod", "")
    fails(spec.UNKNOWN_CONTAINER, "no-such-pod", netns=good.netns, pod=ghost)

    novif = cluster.pod("pod-novif", with_vif=False)
    fails(spec.TRY_AGAIN_LATER, "no VIF yet", netns=novif.netns, pod=novif.ident)

    nobridge = cluster.pod("pod-nobridge", with_kuryrport=False)
    cluster.kuryrport(nobridge.name, nobridge.uid, cluster.port_vif(bridge="br-kuryr-nope"))
    fails(spec.TRY_AGAIN_LATER, "br-kuryr-nope", netns=nobridge.netns, pod=nobridge.ident)

    vlan = cluster.pod("pod-vlan", with_kuryrport=False)
    cluster.kuryrport(vlan.name, vlan.uid, cluster.port_vif(vifType="vlan", vlanId=101))
    fails(spec.UNSUPPORTED_VIF, "vlan", netns=vlan.netns, pod=vlan.ident)

    # DEL of something never added, and of another container's attachment, succeed.
    res = add(cni_dirs, good)
    rc, out = cni_dirs.exec("DEL", container_id="someone-else", netns=good.netns, pod=good.ident)
    assert (rc, out) == (0, None)
    assert check(cni_dirs, good, res) == (0, None)
    delete(cni_dirs, good, res)

    metrics = daemon.metrics()
    for reason in ("UnknownContainer", "VifTimeout", "BridgeMissing", "UnsupportedVif"):
        assert f'reason="{reason}"' in metrics, reason
    assert "DecodeFailure" not in metrics  # plugin-side failures never reach the daemon

    daemon.stop()
    fails(spec.TRY_AGAIN_LATER, "not running", netns=good.netns, pod=good.ident)
