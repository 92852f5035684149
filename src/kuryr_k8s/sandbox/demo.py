"""The main job: the seed's side-by-side ("undercloud") scenario on the sandbox.

Real OVS/OVN/Neutron, the Kubernetes API emulator, kuryr-controller, kuryr-daemon and a
node agent playing kubelet; a "VM" on net0 (a Neutron port plugged into br-int from a
network namespace, as a VM's tap would be); the seed's busybox pod created with kubectl;
then pod -> VM, VM -> pod and pod -> pod checks. Every step is idempotent, so a second
run reuses what exists and checks again.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kuryr_k8s.sandbox import manager, process
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kuryr_components import DEMO_VM_NETNS, nodeagent_state
from kuryr_k8s.sandbox.nodeagent import exec_in_pod
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.process import SandboxError
from kuryr_k8s.sandbox.settings import SandboxSettings

Progress = Callable[[str], None]

VM_NAME = "vm0"
VM_NETNS = DEMO_VM_NETNS
PODS = ("busybox-sleep", "busybox-sleep-2")
POD_FILES = ("pod1.yml", "pod2.yml")
READY_TIMEOUT = 180


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "pod" or "VM"
    name: str
    ip: str
    port_id: str
    node: str


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    rtt_ms: float | None
    detail: str


def kubectl(
    ctx: Context,
    *args: str,
    input_text: str | None = None,
    kubeconfig: Path | None = None,
    timeout: float = READY_TIMEOUT + 30,
) -> str:
    """kubectl against the sandbox's cluster (or the one ``kubeconfig`` names)."""
    return process.run(
        ["kubectl", f"--kubeconfig={kubeconfig or ctx.paths.kubeconfig}", *args],
        timeout=timeout,
        input_text=input_text,
    ).stdout


def ensure_vm(ctx: Context, conn: Any, topo: topology.Topology, progress: Progress) -> Endpoint:
    """A Neutron port on net0 plugged from netns ``kuryr-vm0``, like a VM's tap."""
    net = conn.network
    port = next(iter(net.ports(name=VM_NAME, network_id=topo.net0_id)), None)
    if port is None:
        port = net.create_port(
            name=VM_NAME,
            network_id=topo.net0_id,
            project_id=topo.project_id,
            device_owner="compute:sandbox-vm",
            binding_host_id=ctx.settings.hostname,
            security_group_ids=[topo.default_sg_id],
        )
        net.set_tags(port, [topology.TAG])
        progress(f"  created VM port {VM_NAME} ({port.id})")
    if not hostplug.is_plugged(ctx, VM_NETNS):
        hostplug.unplug(ctx, VM_NETNS)  # a half-made one from an interrupted run
        hostplug.plug(ctx, VM_NETNS, port, net.get_subnet(topo.subnet0_id), mtu=topo.mtu)
        progress(f"  plugged VM port into br-int from netns {VM_NETNS}")
    deadline = time.monotonic() + 60
    while net.get_port(port.id).status != "ACTIVE":
        if time.monotonic() > deadline:
            raise SandboxError(f"VM port {port.id} is not ACTIVE after 60 s")
        time.sleep(0.1)
    return Endpoint("VM", VM_NAME, port.fixed_ips[0]["ip_address"], port.id, ctx.settings.hostname)


def ensure_pods(ctx: Context, progress: Progress) -> list[Endpoint]:
    """Create the pods with kubectl, as a user would, and wait until they are Ready."""
    for fname in POD_FILES:
        manifest = (resources.files("kuryr_k8s.sandbox") / "data" / fname).read_text()
        out = kubectl(ctx, "apply", "-f", "-", input_text=manifest).strip()
        progress(f"  kubectl apply -f {fname}: {out}")
    t0 = time.monotonic()
    kubectl(
        ctx,
        "wait",
        "--for=condition=Ready",
        f"--timeout={READY_TIMEOUT}s",
        *(f"pod/{p}" for p in PODS),
    )
    progress(f"  pods Ready after {time.monotonic() - t0:.1f} s")
    pods = json.loads(kubectl(ctx, "get", "pods", "-o", "json", *PODS))["items"]
    kps = json.loads(kubectl(ctx, "get", "kuryrports", "-o", "json", *PODS))["items"]
    port_of = {kp["metadata"]["name"]: kp["status"]["vifs"]["eth0"]["vif"]["portId"] for kp in kps}
    return [
        Endpoint(
            "pod",
            p["metadata"]["name"],
            p["status"]["podIP"],
            port_of[p["metadata"]["name"]],
            p["spec"]["nodeName"],
        )
        for p in pods
    ]


_RTT = re.compile(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/")


def _ping_result(name: str, proc: subprocess.CompletedProcess[bytes]) -> Check:
    out = proc.stdout.decode(errors="replace")
    match = _RTT.search(out)
    loss = re.search(r"(\d+)% packet loss", out)
    detail = f"{loss.group(1)}% loss" if loss else out.strip().splitlines()[-1:]
    return Check(name, proc.returncode == 0, float(match.group(1)) if match else None, str(detail))


def ping_argv(ip: str) -> list[str]:
    return ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-w", "20", ip]


def run_checks(ctx: Context, vm: Endpoint, pods: list[Endpoint]) -> list[Check]:
    pod1, pod2 = pods
    state = nodeagent_state(ctx)

    def from_pod(pod: Endpoint, target: Endpoint) -> Check:
        proc = exec_in_pod(
            "default", pod.name, ping_argv(target.ip), state_dir=state, capture_output=True
        )
        return _ping_result(f"{pod.name} -> {target.name} ({target.ip})", proc)

    def from_vm(target: Endpoint) -> Check:
        proc = subprocess.run(
            ["ip", "netns", "exec", VM_NETNS, *ping_argv(target.ip)],
            capture_output=True,
            check=False,
            timeout=60,
        )
        return _ping_result(f"{vm.name} -> {target.name} ({target.ip})", proc)

    return [from_pod(pod1, vm), from_vm(pod1), from_pod(pod1, pod2), from_pod(pod2, vm)]


def format_inventory(vm: Endpoint, pods: list[Endpoint]) -> str:
    rows = [("KIND", "NAME", "IP", "NEUTRON PORT", "NODE")]
    rows += [(e.kind, e.name, e.ip, e.port_id, e.node) for e in [vm, *pods]]
    return _table(rows)


def format_checks(checks: list[Check]) -> str:
    rows = [("CHECK", "RESULT", "RTT avg", "DETAIL")]
    rows += [
        (
            c.name,
            "ok" if c.ok else "FAILED",
            f"{c.rtt_ms:.2f} ms" if c.rtt_ms is not None else "-",
            c.detail,
        )
        for c in checks
    ]
    return _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def run(settings: SandboxSettings, progress: Progress) -> tuple[bool, str]:
    """Bring everything up and check connectivity.

    Returns whether every check passed, and how to look around (with the real IPs)."""
    t0 = time.monotonic()
    progress(
        "[1/5] bringing up the sandbox (OVS, OVN, MariaDB, Neutron, Octavia, "
        "Kubernetes API, kuryr-controller, kuryr-daemon, node agent)"
    )
    manager.up(settings, progress)
    ctx = manager.context(settings)
    conn = topology.connect(settings)
    try:
        progress("[2/5] base topology: net0, net1, router1, default SG (ICMP, SSH)")
        topo = topology.ensure_base_topology(conn, progress)
        progress("[3/5] a VM on net0: a Neutron port plugged into br-int from a netns")
        vm = ensure_vm(ctx, conn, topo, progress)
    finally:
        conn.close()
    progress("[4/5] the seed's busybox pods, created with kubectl")
    pods = ensure_pods(ctx, progress)
    progress("[5/5] connectivity checks")
    checks = run_checks(ctx, vm, pods)
    progress("")
    progress(format_inventory(vm, pods))
    progress("")
    progress(format_checks(checks))
    ok = all(c.ok for c in checks)
    progress("")
    progress(
        f"{'all checks passed' if ok else 'SOME CHECKS FAILED'} "
        f"({time.monotonic() - t0:.1f} s in all)"
    )
    return ok, LOOK_AROUND.format(vm_ip=vm.ip, pod_ip=pods[0].ip)


LOOK_AROUND = """\
Look around (kuryr is .venv/bin/kuryr in a checkout):
  eval "$(kuryr sandbox env)"                 # KUBECONFIG, OS_CLOUD, OVS_RUNDIR ...
  kubectl get pods,kuryrports -o wide
  kuryr sandbox exec busybox-sleep -- ping -c 3 {vm_ip}
  ip netns exec kuryr-vm0 ping -c 3 {pod_ip}   # from the VM
  openstack port list
  ovs-vsctl show
  kuryr sandbox status
Tear down:
  kubectl delete pod busybox-sleep busybox-sleep-2   # ports go back to the pool
  kuryr sandbox down                          # stop everything (state kept)
  kuryr sandbox reset                         # and wipe it (pods' and VM's netns too)
"""
