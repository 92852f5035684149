"""The main job's Service: a ClusterIP Service over the seed's bare-metal pods.

There is no kube-proxy: the sandbox's kuryr-controller makes the Service an Octavia load
balancer (ovn provider) whose VIP is the clusterIP; the emulator's EndpointSlice
controller gives it the pods as endpoints. The pods are labelled ``app=demo-web`` (with
kubectl, as a user would), each serves HTTP on ``HTTP_PORT`` answering with its name, and
the clusterIP is asked ``REQUESTS`` times from a bare-metal pod and from a nested pod
(inside its worker VM), each request a new connection: the check passes when every request
is answered and every backend answered some (the pool spreads connections by source
IP and port). A rerun finds the Service (``kubectl apply``: unchanged) and its load
balancer, and checks again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.demo import Check, Endpoint, kubectl
from kuryr_k8s.sandbox.kuryr_components import nodeagent_state
from kuryr_k8s.sandbox.nodeagent.exec import find_sandbox
from kuryr_k8s.sandbox.openstack.topology import HTTP_PORT

Progress = Callable[[str], None]

SERVICE = "demo-web"
LABEL = ("app", SERVICE)
SERVICE_PORT = 80
REQUESTS = 20
LB_TIMEOUT = 300.0
"""Seconds the first answer may take: Octavia builds the load balancer meanwhile (seconds
with the ovn provider; generous)."""

MANIFEST = f"""\
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE}
spec:
  type: ClusterIP
  selector:
    {LABEL[0]}: {LABEL[1]}
  ports:
  - name: http
    protocol: TCP
    port: {SERVICE_PORT}
    targetPort: {HTTP_PORT}
"""


def ensure_service(ctx: Context, backends: Sequence[Endpoint], progress: Progress) -> None:
    """Label the backend pods and apply the Service (both idempotent)."""
    names = [b.name for b in backends]
    kubectl(ctx, "label", "pod", *names, f"{LABEL[0]}={LABEL[1]}", "--overwrite")
    out = kubectl(ctx, "apply", "-f", "-", input_text=MANIFEST).strip()
    progress(f"  kubectl apply (ClusterIP Service over {', '.join(names)}): {out}")


def pod_netns(ctx: Context, name: str) -> str:
    """The network namespace of a bare-metal pod of ``default``."""
    return find_sandbox("default", name, state_dir=nodeagent_state(ctx)).netns


def cluster_ip(ctx: Context) -> str:
    svc = json.loads(kubectl(ctx, "get", "service", SERVICE, "-o", "json", timeout=60))
    return str(svc["spec"]["clusterIP"])


def load_balancer(ctx: Context) -> str:
    """``LB <id prefix> (<n> members)`` from the KuryrLoadBalancer's status, or why not."""
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={ctx.paths.kubeconfig}", "get", "kuryrloadbalancer",
         SERVICE, "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return "no KuryrLoadBalancer"
    status = json.loads(proc.stdout).get("status") or {}
    lb_id = str((status.get("loadbalancer") or {}).get("id", "?"))[:8]
    return f"LB {lb_id} ({len(status.get('members') or [])} members)"


ENDPOINTS_TIMEOUT = 60.0
"""Seconds the backends may take to appear as ready endpoints (the API emulator's
EndpointSlice controller acts within a loop turn)."""


def ready_endpoints(ctx: Context) -> list[str]:
    """The addresses the Service's EndpointSlices give as ready."""
    selector = f"kubernetes.io/service-name={SERVICE}"
    out = kubectl(ctx, "get", "endpointslices", "-l", selector, "-o", "json", timeout=60)
    data = json.loads(out)
    return sorted(
        addr
        for es in data.get("items") or []
        for ep in es.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready") is not False
        for addr in ep.get("addresses") or []
    )


def wait_endpoints(ctx: Context, backends: Sequence[Endpoint]) -> str:
    """Empty when every backend is a ready endpoint within ENDPOINTS_TIMEOUT, else why not."""
    want = sorted(b.ip for b in backends)
    deadline = time.monotonic() + ENDPOINTS_TIMEOUT
    have = ready_endpoints(ctx)
    while have != want and time.monotonic() < deadline:
        time.sleep(1)
        have = ready_endpoints(ctx)
    if have == want:
        return ""
    return (
        f"EndpointSlices of {SERVICE} list {have or 'no ready endpoint'}, want {want} after "
        f"{ENDPOINTS_TIMEOUT:.0f} s (an API emulator started before its EndpointSlice "
        "controller existed gives none: restart kube-api)"
    )


def probe_script(ip: str, port: int, requests: int, timeout: float) -> str:
    """Python for a client: wait for a first answer, then ``requests`` more, each on a new
    connection; prints ``{"answers": {body: count}, "failed": n, "first_s": t}``."""
    return (
        "import json,time,urllib.request\n"
        f"url='http://{ip}:{port}/'\n"
        "def get():\n"
        "    return urllib.request.urlopen(url, timeout=5).read().decode().strip()\n"
        "t=time.monotonic(); err=''\n"
        f"while time.monotonic()-t<{timeout}:\n"
        "    try:\n"
        "        get(); break\n"
        "    except OSError as e:\n"
        "        err=str(e); time.sleep(1)\n"
        "else:\n"
        "    print(json.dumps({'answers': {}, 'failed': -1, 'error': err})); raise SystemExit(1)\n"
        "first=round(time.monotonic()-t, 1); answers={}; failed=0\n"
        f"for i in range({requests}):\n"
        "    try:\n"
        "        body=get(); answers[body]=answers.get(body, 0)+1\n"
        "    except OSError:\n"
        "        failed+=1\n"
        "print(json.dumps({'answers': answers, 'failed': failed, 'first_s': first}))\n"
    )


def service_check(name: str, rc: int, out: str, backends: Sequence[str], lb: str) -> Check:
    """One Check from a probe's output: every request answered, every backend answered."""
    try:
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Check(name, False, None, f"exit {rc}: {out.strip()[-200:]}")
    answers = {str(k).removeprefix("hello from "): int(v) for k, v in result["answers"].items()}
    if result["failed"] < 0:
        return Check(name, False, None, f"{lb}; no answer: {result.get('error')}")
    spread = ", ".join(f"{b} {answers.get(b, 0)}" for b in backends)
    others = {k: v for k, v in answers.items() if k not in backends}
    ok = rc == 0 and result["failed"] == 0 and all(answers.get(b) for b in backends)
    detail = f"{lb}; {REQUESTS - result['failed']}/{REQUESTS} answered: {spread}"
    if others:
        detail += f"; unexpected {others}"
    return Check(name, ok and not others, None, detail)


def checks(
    ctx: Context,
    backends: Sequence[Endpoint],
    host_client: tuple[str, str],
    nested_client: tuple[Any, str, str],
) -> list[Check]:
    """Ask the clusterIP from a bare-metal pod (``(name, netns)``) and from a nested pod
    (``(worker VM, name, netns)``). The backends must be serving HTTP already."""
    ip = cluster_ip(ctx)
    target = f"service {SERVICE} ({ip}:{SERVICE_PORT})"
    vm, nested_name, nested_netns = nested_client
    host_name, host_netns = host_client
    missing = wait_endpoints(ctx, backends)
    if missing:
        return [Check(f"HTTP {c} -> {target}", False, None, missing)
                for c in (host_name, nested_name)]  # fmt: skip
    script = probe_script(ip, SERVICE_PORT, REQUESTS, LB_TIMEOUT)
    names = [b.name for b in backends]
    proc = subprocess.run(
        ["ip", "netns", "exec", host_netns, "python3", "-c", script],
        capture_output=True, text=True, timeout=LB_TIMEOUT + 120, check=False,
    )  # fmt: skip
    lb = load_balancer(ctx)
    out = [service_check(f"HTTP {host_name} -> {target}", proc.returncode, proc.stdout, names, lb)]
    guest = vm.exec(["ip", "netns", "exec", nested_netns, "python3", "-c", script],
                    timeout=LB_TIMEOUT + 120)  # fmt: skip
    text = bytes(guest.stdout).decode(errors="replace")
    out.append(service_check(f"HTTP {nested_name} -> {target}", guest.returncode, text, names, lb))
    return out
