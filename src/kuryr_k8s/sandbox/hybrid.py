"""The main job: the seed's hybrid scenario, on real OpenStack networking and real VMs.

* **undercloud** (this host): Neutron ML2/OVN, the Kubernetes API, kuryr-controller,
  kuryr-daemon and a node agent for the bare-metal node; the seed's busybox pods on
  ``net1``, plugged into ``br-int`` side by side with the VMs' taps;
* a **plain VM** ``vm0`` on ``net0`` (a real QEMU guest; the network-namespace stand-in of
  the side-by-side demo stays as an extra peer);
* the **overcloud**: worker VMs ``worker0``/``worker1``, each on a port of ``net0`` that is
  the parent of a trunk (the seed's ``port0``/``trunk0``), forming a second Kubernetes
  cluster whose controller runs in ``nested-vlan`` mode against the same Neutron
  (``overcloud.py``); their pods are VLAN subports on ``net1``.

Checks, with real traffic: bare-metal pod → VM, VM → both kinds of pod, nested pod →
bare-metal pod and → VM, nested pod → nested pod on the other worker, and HTTP over TCP
between nested and bare-metal pods both ways. Every step is idempotent, so a second run
reuses the VMs and the pods (verifying them) and checks again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuryr_k8s.sandbox import demo, demo_namespaces, demo_service, manager, naming, overcloud
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.demo import Check, Endpoint
from kuryr_k8s.sandbox.kuryr_components import nodeagent_state
from kuryr_k8s.sandbox.nodeagent import netns_name
from kuryr_k8s.sandbox.nodeagent.exec import find_sandbox
from kuryr_k8s.sandbox.openstack import topology
from kuryr_k8s.sandbox.process import SandboxError
from kuryr_k8s.sandbox.settings import SandboxSettings

Progress = Callable[[str], None]

PLAIN_VM = "vm0"
WORKERS = ("worker0", "worker1")
NESTED_PODS = {"nested-1": "worker0", "nested-2": "worker1", "nested-3": "worker0"}
"""Nested pods and their worker: two on worker0's trunk (two VLAN ids), one on worker1's."""
READY_TIMEOUT = 300
HTTP_PORT = topology.HTTP_PORT


@dataclass(frozen=True)
class NestedPod:
    endpoint: Endpoint
    uid: str
    vlan_id: int | None
    trunk_id: str


def okubectl(ctx: Context, *args: str, input_text: str | None = None) -> str:
    """kubectl against the overcloud's API."""
    okube = overcloud.overcloud_kubeconfig(ctx)
    return demo.kubectl(
        ctx, *args, input_text=input_text, kubeconfig=okube, timeout=READY_TIMEOUT + 30
    )


def nested_manifest(name: str, node: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "nested"}},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "busybox", "image": "busybox", "command": ["sleep", "1000000"]}
                ],
            },
        }
    )


def ensure_vms(ctx: Context, topo: topology.Topology, progress: Progress) -> dict[str, Any]:
    """The plain VM and the worker VMs (trunk parents), booted two at a time, verified.

    A running worker started with other code than ``src/kuryr_k8s`` has now is restarted:
    its node side must run the same version as the controllers."""
    from kuryr_k8s.sandbox import vm

    stale = [name for name in WORKERS if _runs_stale_code(ctx, name)]
    for name in stale:
        progress(f"  {name} runs older kuryr code than this checkout: restarting it")
    specs = [vm.VmSpec(name=PLAIN_VM, network="net0")]
    specs += [vm.VmSpec(name=name, network="net0", trunk=True) for name in WORKERS]
    return dict(vm.ensure_vms(ctx, topo, specs, progress, restart=stale))


def _runs_stale_code(ctx: Context, name: str) -> bool:
    from kuryr_k8s.sandbox import vm

    running = any(i.name == name and i.state == "running" for i in vm.list_vms(ctx))
    return running and not vm.get_vm(ctx, name).runs_current_code()


def ensure_overcloud_nodes(ctx: Context, workers: dict[str, Any], progress: Progress) -> None:
    """The node side in every worker VM, until its Node is Ready and its daemon serves."""
    for name, vm in workers.items():
        overcloud.start_node_side(vm, name, vm.info.ip, overcloud.guest_kubeconfig(ctx))
    for name, vm in workers.items():
        took = overcloud.wait_daemon_ready(vm)
        deadline = time.monotonic() + READY_TIMEOUT
        while not overcloud.node_ready(lambda *a: okubectl(ctx, *a), name):
            if time.monotonic() > deadline:
                log = vm.exec_sh("tail -n 30 /var/log/node-agent.log", timeout=60)
                raise SandboxError(
                    f"overcloud node {name} is not Ready after {READY_TIMEOUT} s; node agent log:"
                    f"\n{bytes(log.stdout).decode(errors='replace')}"
                )
            time.sleep(1.0)
        progress(f"  {name}: node Ready in the overcloud, kuryr daemon ready ({took:.1f} s)")


def repair_nested_pods(ctx: Context, workers: dict[str, Any], progress: Progress) -> None:
    """A nested pod whose network namespace is missing in its worker (the VM restarted:
    its disk is fresh at every boot) is deleted, so that it is created again."""
    data = json.loads(okubectl(ctx, "get", "pods", "-o", "json"))
    for pod in (data or {}).get("items", []):
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        if name not in NESTED_PODS or node not in workers:
            continue
        netns = netns_name("default", name, pod["metadata"]["uid"])
        listed = workers[node].exec(["ip", "netns", "list"], timeout=60).out.split()
        if netns in listed:
            continue
        progress(f"  repairing {name}: its netns {netns} is gone from {node}; re-creating it")
        okubectl(ctx, "delete", "pod", name, "--wait=true", f"--timeout={READY_TIMEOUT}s")


def ensure_nested_pods(ctx: Context, progress: Progress) -> list[NestedPod]:
    for name, node in NESTED_PODS.items():
        out = okubectl(ctx, "apply", "-f", "-", input_text=nested_manifest(name, node)).strip()
        progress(f"  kubectl --kubeconfig <overcloud> apply {name} (on {node}): {out}")
    t0 = time.monotonic()
    okubectl(
        ctx,
        "wait",
        "--for=condition=Ready",
        f"--timeout={READY_TIMEOUT}s",
        *(f"pod/{p}" for p in NESTED_PODS),
    )
    progress(f"  nested pods Ready after {time.monotonic() - t0:.1f} s")
    pods = json.loads(okubectl(ctx, "get", "pods", "-o", "json", *NESTED_PODS))["items"]
    kps = json.loads(okubectl(ctx, "get", "kuryrports", "-o", "json", *NESTED_PODS))["items"]
    vif_of = {kp["metadata"]["name"]: kp["status"]["vifs"]["eth0"]["vif"] for kp in kps}
    nested: list[NestedPod] = []
    for p in pods:
        name = p["metadata"]["name"]
        vif = vif_of[name]
        nested.append(
            NestedPod(
                Endpoint(
                    "nested pod", name, p["status"]["podIP"], vif["portId"], p["spec"]["nodeName"]
                ),
                p["metadata"]["uid"],
                vif.get("vlanId"),
                "",
            )
        )
    return nested


def with_trunks(conn: Any, nested: list[NestedPod], workers: dict[str, Any]) -> list[NestedPod]:
    """Confirm each nested pod's port is a subport of its worker's trunk with its VLAN id."""
    out = []
    for pod in nested:
        vm = workers[pod.endpoint.node]
        trunk_id = vm.info.trunk_id
        subports = conn.network.get_trunk_subports(trunk_id)["sub_ports"]
        vlan = next(
            (s["segmentation_id"] for s in subports if s["port_id"] == pod.endpoint.port_id), None
        )
        if vlan is None or vlan != pod.vlan_id:
            raise SandboxError(
                f"nested pod {pod.endpoint.name}: port {pod.endpoint.port_id} is not a subport "
                f"of trunk {trunk_id} with VLAN {pod.vlan_id} (the trunk has {subports})"
            )
        out.append(NestedPod(pod.endpoint, pod.uid, vlan, trunk_id))
    return out


# ---- checks ------------------------------------------------------------------------------


def _ping(name: str, proc: Any) -> Check:
    completed = subprocess.CompletedProcess(
        args=[], returncode=proc.returncode, stdout=bytes(proc.stdout), stderr=b""
    )
    return demo._ping_result(name, completed)


def ping_from_host_pod(ctx: Context, pod: Endpoint, target: Endpoint) -> Check:
    from kuryr_k8s.sandbox.nodeagent import exec_in_pod

    proc = exec_in_pod(
        "default",
        pod.name,
        demo.ping_argv(target.ip),
        state_dir=nodeagent_state(ctx),
        capture_output=True,
    )
    return demo._ping_result(f"{pod.name} -> {target.name} ({target.ip})", proc)


def nested_netns(pod: NestedPod) -> str:
    return netns_name("default", pod.endpoint.name, pod.uid)


def ping_from_nested(vm: Any, pod: NestedPod, target: Endpoint) -> Check:
    argv = ["ip", "netns", "exec", nested_netns(pod), *demo.ping_argv(target.ip)]
    proc = vm.exec(argv, timeout=90)
    return _ping(f"{pod.endpoint.name} -> {target.name} ({target.ip})", proc)


def ping_from_vm(vm: Any, vm_name: str, target: Endpoint) -> Check:
    proc = vm.exec(demo.ping_argv(target.ip), timeout=90)
    return _ping(f"{vm_name} -> {target.name} ({target.ip})", proc)


class HttpServers:
    """Small HTTP servers in pod namespaces, answering with the pod's name; stopped on exit."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        """The sandbox id: host-side folders are ``/tmp/kuryr-http-<owner>-<pod>``."""
        self._host: list[subprocess.Popen[bytes]] = []
        self._guest: list[tuple[Any, str]] = []
        self._roots: list[str] = []

    def in_host_pod(self, netns: str, name: str, ip: str) -> None:
        root = f"/tmp/kuryr-http-{self.owner}-{name}"
        Path(root).mkdir(parents=True, exist_ok=True)
        Path(root, "index.html").write_text(f"hello from {name}\n")
        self._roots.append(root)
        self._host.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    "python3",
                    "-m",
                    "http.server",
                    str(HTTP_PORT),
                    "--bind",
                    ip,
                    "--directory",
                    root,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def in_guest_pod(self, vm: Any, netns: str, name: str, ip: str) -> None:
        root = f"/tmp/kuryr-http-{name}"
        script = (
            f"mkdir -p {root} && echo 'hello from {name}' > {root}/index.html && "
            f"(nohup ip netns exec {netns} python3 -m http.server {HTTP_PORT} --bind {ip} "
            f"--directory {root} >/tmp/http-{name}.log 2>&1 & echo $! > /tmp/http-{name}.pid)"
        )
        vm.exec_sh(script, timeout=60).check()
        self._guest.append((vm, name))

    def stop(self) -> None:
        for root in self._roots:
            shutil.rmtree(root, ignore_errors=True)
        for proc in self._host:
            proc.terminate()
        for proc in self._host:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for vm, name in self._guest:
            vm.exec_sh(
                f"kill $(cat /tmp/http-{name}.pid) 2>/dev/null; rm -rf /tmp/kuryr-http-{name}",
                timeout=60,
            )


def _fetch_script(ip: str) -> str:
    return (
        "import sys,time,urllib.request\n"
        "t=time.monotonic()\n"
        "for i in range(40):\n"
        "    try:\n"
        f"        body=urllib.request.urlopen('http://{ip}:{HTTP_PORT}/', timeout=5).read()\n"
        "        print(body.decode().strip(), round((time.monotonic()-t)*1000, 1)); sys.exit(0)\n"
        "    except OSError as e:\n"
        "        err=e; time.sleep(0.5)\n"
        "print('failed:', err); sys.exit(1)\n"
    )


def _http_check(name: str, rc: int, out: str, want: str) -> Check:
    ok = rc == 0 and want in out
    return Check(name, ok, None, out.strip().splitlines()[-1] if out.strip() else f"exit {rc}")


def http_checks(
    ctx: Context, bm: Endpoint, nested: NestedPod, vm: Any, servers: HttpServers
) -> list[Check]:
    bm_netns = find_sandbox("default", bm.name, state_dir=nodeagent_state(ctx)).netns
    servers.in_host_pod(bm_netns, bm.name, bm.ip)
    servers.in_guest_pod(vm, nested_netns(nested), nested.endpoint.name, nested.endpoint.ip)
    n2b = vm.exec(
        ["ip", "netns", "exec", nested_netns(nested), "python3", "-c", _fetch_script(bm.ip)],
        timeout=120,
    )
    b2n = subprocess.run(
        ["ip", "netns", "exec", bm_netns, "python3", "-c", _fetch_script(nested.endpoint.ip)],
        capture_output=True,
        check=False,
        timeout=120,
    )
    return [
        _http_check(
            f"HTTP {nested.endpoint.name} -> {bm.name} ({bm.ip}:{HTTP_PORT})",
            n2b.returncode,
            bytes(n2b.stdout).decode(errors="replace"),
            f"hello from {bm.name}",
        ),
        _http_check(
            f"HTTP {bm.name} -> {nested.endpoint.name} ({nested.endpoint.ip}:{HTTP_PORT})",
            b2n.returncode,
            b2n.stdout.decode(errors="replace"),
            f"hello from {nested.endpoint.name}",
        ),
    ]


def run_checks(
    ctx: Context,
    vms: dict[str, Any],
    plain_vm: Endpoint,
    bm_pods: list[Endpoint],
    nested: list[NestedPod],
) -> list[Check]:
    bm = bm_pods[0]
    by_name = {p.endpoint.name: p for p in nested}
    n1, n2, n3 = (by_name[name] for name in NESTED_PODS)
    w1 = vms[n1.endpoint.node]
    w2 = vms[n2.endpoint.node]
    vm0 = vms[PLAIN_VM]
    checks = [
        ping_from_host_pod(ctx, bm, plain_vm),
        ping_from_vm(vm0, PLAIN_VM, bm),
        ping_from_vm(vm0, PLAIN_VM, n1.endpoint),
        ping_from_nested(w1, n1, bm),
        ping_from_nested(w1, n1, plain_vm),
        ping_from_nested(w1, n1, n2.endpoint),
        ping_from_nested(w2, n2, bm),
        ping_from_host_pod(ctx, bm, n2.endpoint),
        ping_from_nested(vms[n3.endpoint.node], n3, n1.endpoint),
    ]
    servers = HttpServers(naming.sandbox_id(ctx.paths.root))
    try:
        checks += http_checks(ctx, bm, n1, w1, servers)
        for pod in bm_pods[1:]:  # bm serves already: the Service's backends are bm_pods
            servers.in_host_pod(demo_service.pod_netns(ctx, pod.name), pod.name, pod.ip)
        host_client = (bm.name, demo_service.pod_netns(ctx, bm.name))
        nested_client = (w1, n1.endpoint.name, nested_netns(n1))
        checks += demo_service.checks(ctx, bm_pods, host_client, nested_client)
    finally:
        servers.stop()
    return checks


def format_inventory(rows: list[tuple[str, ...]]) -> str:
    head = ("KIND", "NAME", "IP", "NEUTRON PORT", "NODE / VM", "TRUNK", "VLAN")
    return demo._table([head, *rows])


def inventory(
    ctx: Context,
    plain_vm: Endpoint,
    stand_in: Endpoint,
    workers: dict[str, Any],
    bm_pods: list[Endpoint],
    nested: list[NestedPod],
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("VM", plain_vm.name, plain_vm.ip, plain_vm.port_id, "QEMU, net0", "-", "-"),
        (
            "VM stand-in",
            f"netns {demo.vm_netns(ctx)}",
            stand_in.ip,
            stand_in.port_id,
            "br-int, net0",
            "-",
            "-",
        ),
    ]
    for name, vm in workers.items():
        info = vm.info
        rows.append(("worker VM", name, info.ip, info.port_id, "QEMU, net0", info.trunk_id, "-"))
    rows += [(e.kind, e.name, e.ip, e.port_id, e.node, "-", "-") for e in bm_pods]
    for pod in nested:
        e = pod.endpoint
        rows.append((e.kind, e.name, e.ip, e.port_id, e.node, pod.trunk_id, str(pod.vlan_id)))
    return rows


def run(settings: SandboxSettings, progress: Progress) -> tuple[bool, str]:
    """The hybrid scenario; returns whether every check passed, and how to look around."""
    t0 = time.monotonic()
    progress(
        "[1/7] sandbox: OVS, OVN, MariaDB, Neutron, Octavia; undercloud Kubernetes API, "
        "kuryr-controller, kuryr-daemon, node agent; overcloud Kubernetes API and "
        "kuryr-controller (nested-vlan)"
    )
    started = manager.up(settings, progress, reuse=False)
    ctx = manager.context(settings)
    conn = topology.connect(settings)
    try:
        progress("[2/7] base topology: net0, net1, router1, default SG (ICMP, SSH, HTTP)")
        topo = topology.ensure_base_topology(conn, progress)
        progress("[3/7] undercloud: a VM stand-in (netns) on net0 and the seed's busybox pods")
        stand_in = demo.ensure_vm(ctx, conn, topo, progress)
        demo.repair_pods(ctx, progress, settle=manager.NODE_AGENT in started)
        bm_pods = demo.ensure_pods(ctx, progress)
        demo_service.ensure_service(ctx, bm_pods, progress)
        progress(f"[4/7] VMs (QEMU): {PLAIN_VM} on net0, {', '.join(WORKERS)} on trunks")
        vms = ensure_vms(ctx, topo, progress)
        workers = {name: vms[name] for name in WORKERS}
        info = vms[PLAIN_VM].info
        plain_vm = Endpoint("VM", PLAIN_VM, info.ip, info.port_id, "QEMU")
        progress("[5/7] overcloud nodes: node agent + kuryr daemon + kuryr-cni in each worker VM")
        ensure_overcloud_nodes(ctx, workers, progress)
        progress("[6/7] nested pods, created with kubectl against the overcloud")
        repair_nested_pods(ctx, workers, progress)
        nested = with_trunks(conn, ensure_nested_pods(ctx, progress), workers)
    finally:
        conn.close()
    progress("[7/7] connectivity checks (ICMP, HTTP, a ClusterIP Service)")
    checks = run_checks(ctx, vms, plain_vm, bm_pods, nested)
    progress("")
    progress(format_inventory(inventory(ctx, plain_vm, stand_in, workers, bm_pods, nested)))
    progress("")
    progress(demo_namespaces.show(settings, ctx))
    progress("")
    progress(demo.format_checks(checks))
    ok = all(c.ok for c in checks)
    vlan_of = {p.endpoint.name: p.vlan_id for p in nested}
    vlans = [vlan_of[name] for name in NESTED_PODS]
    progress("")
    progress(
        f"{'all checks passed' if ok else 'SOME CHECKS FAILED'} "
        f"({len(checks)} checks, nested VLAN ids {vlans}, {time.monotonic() - t0:.1f} s in all)"
    )
    return ok, LOOK_AROUND.format(
        okube=overcloud.overcloud_kubeconfig(ctx),
        nested_ip=nested[0].endpoint.ip,
        bm_ip=bm_pods[0].ip,
        trunk=nested[0].trunk_id,
    )


LOOK_AROUND = """\
Look around (kuryr is .venv/bin/kuryr in a checkout):
  eval "$(kuryr sandbox env)"                       # KUBECONFIG (undercloud), OS_CLOUD, OVS_RUNDIR
  kubectl get pods,kuryrports -o wide               # bare-metal pods
  kubectl --kubeconfig {okube} get pods,kuryrports -o wide   # nested pods
  kubectl get service,endpointslices,kuryrloadbalancers       # the Service and its Octavia LB
  openstack network trunk show {trunk}              # the worker's subports and VLAN ids
  kuryr sandbox vm list
  kuryr sandbox vm exec worker0 -- ip -d link       # the VLAN devices live in pod netns
  kuryr sandbox exec busybox-sleep -- ping -c 3 {nested_ip}
Quick side-by-side-only run: kuryr sandbox demo --side-by-side
Tear down:
  kuryr sandbox down                                # stops everything, VMs too (state kept)
  kuryr sandbox reset                               # and wipes it
"""
