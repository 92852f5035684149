"""The main job: the seed's side-by-side ("undercloud") scenario on the sandbox.

Real OVS/OVN/Neutron, the Kubernetes API emulator, kuryr-controller, kuryr-daemon and a
node agent playing kubelet; a "VM" on net0 (a Neutron port plugged into br-int from a
network namespace, as a VM's tap would be); the seed's busybox pod created with kubectl;
then pod -> VM, VM -> pod and pod -> pod checks. Every step is idempotent, so a second
run reuses what exists and checks again; what it reuses is verified first (the stand-in's
MAC, IP and br-int plug; each pod's KuryrPort Active and eth0 with its address) and what is
broken is made again, one printed "repaired ..." line each.
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

from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.sandbox import demo_namespaces, manager, naming, process
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kuryr_components import nodeagent_state
from kuryr_k8s.sandbox.nodeagent import exec_in_pod, find_sandbox
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.process import SandboxError
from kuryr_k8s.sandbox.settings import SandboxSettings

Progress = Callable[[str], None]

VM_NAME = "vm0"
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


def vm_netns(ctx: Context) -> str:
    """The VM stand-in's network namespace: ``kuryr-<sandbox id>_vm0``."""
    return naming.stand_in_netns(naming.sandbox_id(ctx.paths.root), VM_NAME)


def find_vm_port(conn: Any, net0_id: str) -> Any:
    return next(iter(conn.network.ports(name=VM_NAME, network_id=net0_id)), None)


def ensure_vm(ctx: Context, conn: Any, topo: topology.Topology, progress: Progress) -> Endpoint:
    """A Neutron port on net0 plugged from netns ``kuryr-<sandbox id>_vm0``, like a VM's
    tap. A stand-in that exists is verified first and plugged again if anything is off."""
    net = conn.network
    port = find_vm_port(conn, topo.net0_id)
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
    ensure_stand_in(ctx, port, net.get_subnet(topo.subnet0_id), topo.mtu, progress)
    deadline = time.monotonic() + 60
    while net.get_port(port.id).status != "ACTIVE":
        if time.monotonic() > deadline:
            raise SandboxError(f"VM port {port.id} is not ACTIVE after 60 s")
        time.sleep(0.1)
    return Endpoint("VM", VM_NAME, port.fixed_ips[0]["ip_address"], port.id, ctx.settings.hostname)


def ensure_stand_in(ctx: Context, port: Any, subnet: Any, mtu: int, progress: Progress) -> bool:
    """Verify the stand-in's plug of ``port`` (netns, MAC, IP, veth, br-int row with the
    port's iface-id) and make it again when anything is off. True if it did."""
    netns = vm_netns(ctx)
    _remove_legacy_stand_in(ctx, port, progress)
    existed = netns in hostplug.list_netns()  # else: first run, or after 'down'
    found = hostplug.problems(ctx, netns, port, subnet)
    if not found:
        return False
    hostplug.unplug(ctx, netns)
    hostplug.plug(ctx, netns, port, subnet, mtu=mtu)
    if existed:
        progress(
            f"  repaired VM stand-in {VM_NAME} (netns {netns}, port {port.id}): "
            f"{'; '.join(found)}; plugged it again"
        )
    else:
        progress(f"  plugged VM port into br-int from netns {netns}")
    return True


LEGACY_VM_NETNS = "kuryr-vm0"
"""The stand-in's netns before names carried the sandbox id."""


def _remove_legacy_stand_in(ctx: Context, port: Any, progress: Progress) -> None:
    """An old ``kuryr-vm0`` is this sandbox's only if this sandbox's br-int has its host
    end with this sandbox's VM port as iface-id; then it goes (another's is left alone)."""
    if LEGACY_VM_NETNS not in hostplug.list_netns():
        return
    host = hostplug.legacy_host_ifname(LEGACY_VM_NETNS)
    ids = hostplug.ovs_ids(ctx, host)
    if ids is None or ids.get("iface-id") != port.id:
        return
    hostplug.unplug(ctx, LEGACY_VM_NETNS, host=host)
    progress(f"  removed the old VM stand-in netns {LEGACY_VM_NETNS} (now {vm_netns(ctx)})")


def _manifest(fname: str) -> str:
    return (resources.files("kuryr_k8s.sandbox") / "data" / fname).read_text()


def ensure_pods(ctx: Context, progress: Progress) -> list[Endpoint]:
    """Create the pods with kubectl, as a user would, and wait until they are Ready."""
    for fname in POD_FILES:
        out = kubectl(ctx, "apply", "-f", "-", input_text=_manifest(fname)).strip()
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


# ---- verifying and repairing what a rerun reuses -----------------------------------------

SETTLE_TIMEOUT = 90.0
"""How long a pod's problems may take to clear by themselves right after the node agent
started (it plugs again the pods whose netns ``down`` removed)."""


def _items(ctx: Context, kind: str) -> dict[str, Any]:
    data = json.loads(kubectl(ctx, "get", kind, "-o", "json", timeout=60) or "{}")
    return {i["metadata"]["name"]: i for i in (data.get("items") or [])}


def pod_problems(pod: Any, kp: Any | None, ctx: Context) -> list[str]:
    """What is wrong with a running seed pod: its KuryrPort is not Active, or its eth0 is
    missing from its netns or lacks its address or MAC. Empty: nothing."""
    name = pod["metadata"]["name"]
    state = ((kp or {}).get("status") or {}).get("state")
    found = []
    if state != "Active":
        reasons = [
            f"{c.get('type')}={c.get('status')} {c.get('reason', '')}".strip()
            for c in ((kp or {}).get("status") or {}).get("conditions") or []
            if c.get("status") != "True"
        ]
        found.append(
            f"KuryrPort is {state or 'missing'}{' (' + ', '.join(reasons) + ')' if reasons else ''}"
        )
    try:
        netns = find_sandbox("default", name, state_dir=nodeagent_state(ctx)).netns
    except ResourceNotReady as exc:
        return [*found, str(exc)]
    proc = process.run(["ip", "-j", "-n", netns, "addr", "show", "dev", "eth0"], check=False)
    links = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []
    if not links:
        return [*found, f"eth0 is missing in netns {netns}"]
    want_ip = (pod.get("status") or {}).get("podIP")
    have = [a["local"] for a in links[0].get("addr_info", []) if a.get("family") == "inet"]
    if want_ip and want_ip not in have:
        found.append(f"eth0 in {netns} has {have or 'no address'}, the pod has {want_ip}")
    vif = (((kp or {}).get("status") or {}).get("vifs") or {}).get("eth0", {}).get("vif") or {}
    mac = str(vif.get("macAddress", "")).lower()
    if mac and str(links[0].get("address", "")).lower() != mac:
        found.append(f"eth0 in {netns} has MAC {links[0].get('address')}, the port has {mac}")
    return found


def broken_pods(ctx: Context) -> dict[str, list[str]]:
    """Seed pods that run (phase Running, not being deleted) but are broken, with why."""
    pods = _items(ctx, "pods")
    running = [
        pods[name]
        for name in PODS
        if name in pods
        and not pods[name]["metadata"].get("deletionTimestamp")
        and (pods[name].get("status") or {}).get("phase") == "Running"
    ]  # a pod still starting: ensure_pods waits for it
    if not running:
        return {}
    kps = _items(ctx, "kuryrports")
    broken = {}
    for pod in running:
        name = pod["metadata"]["name"]
        found = pod_problems(pod, kps.get(name), ctx)
        if found:
            broken[name] = found
    return broken


def repair_pods(ctx: Context, progress: Progress, *, settle: bool = False) -> list[str]:
    """Delete and create again each seed pod that is broken (``broken_pods``), printing
    one line per pod. ``settle``: first give the node agent ``SETTLE_TIMEOUT`` to plug
    the pods again by itself (it just started). Returns the repaired pods."""
    broken = broken_pods(ctx)
    deadline = time.monotonic() + (SETTLE_TIMEOUT if settle else 0)
    while broken and time.monotonic() < deadline:
        time.sleep(2)
        broken = broken_pods(ctx)
    for name, found in broken.items():
        progress(f"  repaired pod {name}: {'; '.join(found)}; deleted it to create it again")
        kubectl(ctx, "delete", "pod", name, "--wait=true", f"--timeout={READY_TIMEOUT}s")
    for name in broken:
        kubectl(ctx, "apply", "-f", "-", input_text=_manifest(POD_FILES[PODS.index(name)]))
    if broken:
        kubectl(ctx, "wait", "--for=condition=Ready", f"--timeout={READY_TIMEOUT}s",
                *(f"pod/{p}" for p in broken))  # fmt: skip
    return list(broken)


def repair_stand_in(ctx: Context, progress: Progress) -> bool:
    """``up``'s check of an existing VM stand-in (the demo makes a missing one). One whose
    Neutron port is gone is removed. True if something was repaired or removed."""
    netns = vm_netns(ctx)
    present = hostplug.list_netns()
    if netns not in present and LEGACY_VM_NETNS not in present:
        return False
    conn = topology.connect(ctx.settings)
    try:
        nets = list(conn.network.networks(name="net0", project_id=topology.PROJECT_ID))
        port = find_vm_port(conn, nets[0].id) if nets else None
        if port is None:
            if netns in present:
                hostplug.unplug(ctx, netns)
                progress(f"  removed VM stand-in netns {netns}: its Neutron port is gone")
                return True
            return False
        subnet = conn.network.get_subnet(port.fixed_ips[0]["subnet_id"])
        return ensure_stand_in(ctx, port, subnet, int(nets[0].mtu), progress)
    finally:
        conn.close()


def repair_reused(ctx: Context, progress: Progress, *, settle: bool = False) -> None:
    """Verify the demo's objects that exist (VM stand-in, seed pods) and repair them."""
    repair_stand_in(ctx, progress)
    repair_pods(ctx, progress, settle=settle)


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
            ["ip", "netns", "exec", vm_netns(ctx), *ping_argv(target.ip)],
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
    started = manager.up(settings, progress, reuse=False)
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
    repair_pods(ctx, progress, settle=manager.NODE_AGENT in started)
    pods = ensure_pods(ctx, progress)
    progress("[5/5] connectivity checks")
    checks = run_checks(ctx, vm, pods)
    progress("")
    progress(format_inventory(vm, pods))
    progress("")
    progress(demo_namespaces.show(settings, ctx))
    progress("")
    progress(format_checks(checks))
    ok = all(c.ok for c in checks)
    progress("")
    progress(
        f"{'all checks passed' if ok else 'SOME CHECKS FAILED'} "
        f"({time.monotonic() - t0:.1f} s in all)"
    )
    return ok, LOOK_AROUND.format(vm_ip=vm.ip, pod_ip=pods[0].ip, vm_netns=vm_netns(ctx))


LOOK_AROUND = """\
Look around (kuryr is .venv/bin/kuryr in a checkout):
  eval "$(kuryr sandbox env)"                 # KUBECONFIG, OS_CLOUD, OVS_RUNDIR ...
  kubectl get pods,kuryrports -o wide
  kuryr sandbox exec busybox-sleep -- ping -c 3 {vm_ip}
  ip netns exec {vm_netns} ping -c 3 {pod_ip}   # from the VM
  openstack port list
  ovs-vsctl show
  kuryr sandbox status
Tear down:
  kubectl delete pod busybox-sleep busybox-sleep-2   # ports go back to the pool
  kuryr sandbox down                          # stop everything, remove its netns (state kept)
  kuryr sandbox reset                         # and wipe it
"""
