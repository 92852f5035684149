"""One cluster, one controller, two kinds of node (``pod_vif_driver = mixed``).

The sandbox's own cluster (the undercloud) runs its controller in ``mixed`` mode: this
host is a bare-metal node (its InternalIP is in no worker-nodes subnet: ``ovs`` VIFs on
br-int), and this test adds a real VM on a trunk as a second node of the *same* cluster
(its address is on subnet0, the worker-nodes subnet, and its port is a trunk parent:
``vlan`` VIFs). Upstream needed one driver per cluster. Checks: VIF kinds per node, the
nested pod's port is a subport of the VM's trunk with the VIF's VLAN id, traffic both
ways, and after deletion nothing of the test is left (pods, subports, VM, trunk, Node).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.openstack.ports import TRUNK_TAG_PREFIX
from kuryr_k8s.sandbox import demo, manager, overcloud
from kuryr_k8s.sandbox import vm as vms
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kuryr_components import KuryrController, kuryr_conf_path, nodeagent_state
from kuryr_k8s.sandbox.nodeagent import exec_in_pod, netns_name

pytestmark = pytest.mark.e2e
TIMEOUT = 300


def quiet(msg: str) -> None:
    print(msg, flush=True)


def kubectl(ctx: Context, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={ctx.paths.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 30,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def undercloud(sandbox: Sandbox) -> Context:
    """The sandbox cluster with its product running, the controller in mixed mode."""
    settings = dataclasses.replace(sandbox.settings, kuryr=True)
    ctx = manager.context(settings)
    conf = kuryr_conf_path(ctx)
    if conf.exists() and "pod_vif_driver = mixed" not in conf.read_text():
        KuryrController(ctx).stop()  # started from an older config: 'up' rewrites it
    manager.up(settings, quiet)
    assert "pod_vif_driver = mixed" in conf.read_text()
    return ctx


@pytest.fixture
def vm_node(sandbox: Sandbox, undercloud: Context) -> Iterator[Any]:
    """A VM on a trunk, registered as a node of the undercloud by its own node agent."""
    name = f"ktm{uuid.uuid4().hex[:5]}"
    vm = vms.ensure_vm(undercloud, sandbox.conn, sandbox.topo, vms.VmSpec(name, trunk=True), quiet)
    trunk_id = vm.info.trunk_id
    try:
        kubeconfig = overcloud.as_seen_from_guest(undercloud.paths.kubeconfig.read_text())
        overcloud.start_node_side(vm, name, vm.info.ip, kubeconfig, schedule=False)
        overcloud.wait_daemon_ready(vm)
        deadline = time.monotonic() + TIMEOUT
        while not overcloud.node_ready(lambda *a: kubectl(undercloud, *a), name):
            assert time.monotonic() < deadline, vm.log_of("node-agent")
            time.sleep(1)
        yield vm
    finally:
        vms.delete(undercloud, sandbox.conn, name, quiet)
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={undercloud.paths.kubeconfig}",
                "delete",
                "node",
                name,
                "--ignore-not-found",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        net = sandbox.conn.network
        for port in net.ports(tags=[f"{TRUNK_TAG_PREFIX}{trunk_id}"]):
            net.delete_port(port)  # the pool's subports, detached with the trunk


def pod(name: str, node: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"]}],
            },
        }
    )


def ping_ok(proc: Any) -> bool:
    return bool(proc.returncode == 0)


def test_one_controller_serves_bare_metal_and_vm_nodes(
    sandbox: Sandbox, undercloud: Context, vm_node: Any
) -> None:
    ctx = undercloud
    ns = f"kt-mixed-{uuid.uuid4().hex[:5]}"
    kubectl(ctx, "create", "namespace", ns)
    host = sandbox.settings.hostname
    try:
        kubectl(ctx, "-n", ns, "apply", "-f", "-", stdin=pod("bm", host))
        kubectl(ctx, "-n", ns, "apply", "-f", "-", stdin=pod("nested", vm_node.name))
        kubectl(
            ctx,
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            f"--timeout={TIMEOUT}s",
            "pod/bm",
            "pod/nested",
        )
        kps = {
            kp["metadata"]["name"]: kp
            for kp in json.loads(kubectl(ctx, "-n", ns, "get", "kuryrports", "-o", "json"))["items"]
        }
        bm_vif = kps["bm"]["status"]["vifs"]["eth0"]["vif"]
        nested_vif = kps["nested"]["status"]["vifs"]["eth0"]["vif"]
        assert bm_vif["vifType"] == "ovs" and bm_vif.get("bridge") == "br-int"
        assert nested_vif["vifType"] == "vlan" and "bridge" not in nested_vif
        subports = sandbox.conn.network.get_trunk_subports(vm_node.info.trunk_id)["sub_ports"]
        vlan_of = {s["port_id"]: s["segmentation_id"] for s in subports}
        assert vlan_of.get(nested_vif["portId"]) == nested_vif["vlanId"], subports
        assert bm_vif["portId"] not in vlan_of

        bm_ip = bm_vif["ips"][0]["address"]
        nested_ip = nested_vif["ips"][0]["address"]
        uid = kps["nested"]["spec"]["podUid"]
        guest_netns = netns_name(ns, "nested", uid)
        to_bm = vm_node.exec(["ip", "netns", "exec", guest_netns, *demo.ping_argv(bm_ip)])
        assert ping_ok(to_bm), to_bm.out + to_bm.err
        to_nested = exec_in_pod(
            ns,
            "bm",
            demo.ping_argv(nested_ip),
            state_dir=nodeagent_state(ctx),
            capture_output=True,
        )
        assert to_nested.returncode == 0, to_nested.stdout.decode()

        kubectl(ctx, "-n", ns, "delete", "pod", "nested", "--wait=true", f"--timeout={TIMEOUT}s")
        port = sandbox.conn.network.find_port(nested_vif["portId"])
        assert port is None or port.device_id != uid, "the subport still names the deleted pod"
        listed = vm_node.exec(["ip", "netns", "list"]).out.split()
        assert guest_netns not in listed
    finally:
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={ctx.paths.kubeconfig}",
                "delete",
                "namespace",
                ns,
                "--wait=true",
                f"--timeout={TIMEOUT}s",
            ],
            capture_output=True,
            timeout=TIMEOUT + 30,
            check=False,
        )
