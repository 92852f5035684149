"""The NetworkPolicy e2e environment: real Neutron/OVN ports in netns, a private Kubernetes
API emulator, and the policy controller running in-process (its own event loop thread).

Until the KuryrPort reconciler calls the placement, this environment plays its part: each
pod's Neutron port is created with the SGs :class:`PolicyPlacement` answers (waiting while
it says ResourceNotReady) and :meth:`PolicyEnv.sync_ports` moves ports to the SGs the
placement answers now (what the reconciler will do on each reconcile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fixtures.sandbox import Sandbox
from kuryr_k8s.controller.crds import ensure_crds
from kuryr_k8s.controller.health import HealthState
from kuryr_k8s.controller.kuryrports import PodNetwork, PodSubnet
from kuryr_k8s.controller.placement import StaticPlacement
from kuryr_k8s.controller.policies import PolicyParts, build_policy_parts
from kuryr_k8s.controller.policy_identities import (
    SYNC_KEY,
    IdentityParts,
    build_identity_parts,
)
from kuryr_k8s.controller.service import Controller
from kuryr_k8s.k8s import EventRecorder, KubeClient, objects
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.informer import Informer
from kuryr_k8s.k8s.resources import PODS
from kuryr_k8s.model import kuryrnetwork
from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.openstack.neutron import Neutron, SdkTransport
from kuryr_k8s.openstack.security import SecurityApi
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.openstack.services import OvsVswitchd
from kuryr_k8s.sandbox.process import run
from netpol_truth import Endpoint

T = TypeVar("T")
AGENT = str(Path(__file__).with_name("agent.py"))
TCP_PORTS = [80, 81, 8080, 5001]
UDP_PORTS = [53]
PROBE_SOURCES_AT_ONCE = 2
PROBES = [("TCP", 80), ("TCP", 81), ("TCP", 8080), ("TCP", 5001), ("UDP", 53), ("ICMP", 0)]
TEST_DEVICE_OWNER = "compute:kuryr-e2e"
"""Not ``compute:kuryr``: a controller of the shared sandbox taking over from upstream
adopts unowned ``compute:kuryr`` ports on the pod network as upstream's free pool ports
(seen 2026-11-28: it took this suite's ports, and their SGs, into its pools)."""


class VswitchdRestarted(UserWarning):
    """ovs-vswitchd died and its ``--monitor`` parent started it again during a case (OVS
    3.1's userspace conntrack assertion, docs/design/network-policy.md)."""


def dump(name: str, text: str, *, append: bool = False) -> None:
    """Keep ``text`` as ``name`` in ``$KURYR_TEST_DUMP_DIR`` when it is set (for diagnosis)."""
    where = os.environ.get("KURYR_TEST_DUMP_DIR")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        with Path(where, name).open("a" if append else "w") as f:
            f.write(text)


def row_parts(row: str) -> tuple[str, str, str, int, str]:
    """``"src -> dst PROTO/port: verdict"`` (a row of :func:`diff`) as its parts."""
    head, _, verdict = row.partition(": ")
    pair, _, probe = head.rpartition(" ")
    src, _, dst = pair.partition(" -> ")
    proto, _, port = probe.partition("/")
    return src, dst, proto, int(port), verdict


def sandbox_pod_network(topo: topology.Topology) -> PodNetwork:
    """The sandbox's default pod network (net1, default SG) as a placement describes it."""
    return PodNetwork(
        topo.project_id,
        topo.net1_id,
        topo.subnet1_id,
        (topo.default_sg_id,),
        (PodSubnet(topo.subnet1_id, topo.subnet1_cidr, None),),
        topo.mtu,
    )


@dataclass
class Member:
    endpoint: Endpoint
    port: Any
    netns: str
    server: subprocess.Popen[bytes]


@dataclass
class PolicyEnv:
    sandbox: Sandbox
    api_url_kubeconfig: Path
    http: Any  # the tests' sync Kubernetes client
    cluster_id: str = field(default_factory=lambda: f"ktnp-{uuid.uuid4().hex[:8]}")
    members: dict[str, Member] = field(default_factory=dict)
    netnses: list[str] = field(default_factory=list)
    ns_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    tag: str = ""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    parts: PolicyParts | IdentityParts | None = None
    mode: str = field(default_factory=lambda: os.environ.get("KURYR_TEST_NP_MODE", "policy"))
    """``policy`` (an SG per policy) or ``identity`` (an SG per pod identity)."""
    network: PodNetwork | None = None
    placement: Any = None
    neutron: Neutron | None = None
    _task: Any = None
    _thread: Any = None
    _vswitchd_last: str = ""

    # ---- the controller thread --------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def flush_conntrack(self) -> None:
        """Drop the userspace datapath's conntrack entries. OVS 3.1's userspace conntrack
        asserts (``conn->conn_type == CT_CONN_TYPE_DEFAULT`` in ``conn_update_state``) and
        ovs-vswitchd dies when new probes meet stale entries of earlier NAT'd (load
        balancer) connections: seen after the Services suite (docs/design/services.md,
        network-policy.md). Nothing of these suites needs an entry older than the suite."""
        self._vswitchd("dpctl/flush-conntrack")

    def _vswitchd(self, *args: str) -> str:
        """The answer of ``ovs-appctl`` to ovs-vswitchd (its error, if it refused)."""
        ctl = str(self.sandbox.ctx.paths.run / "ovs-vswitchd.ctl")
        done = run(["ovs-appctl", "-t", ctl, *args], check=False)
        return done.stdout if done.returncode == 0 else done.stdout + done.stderr

    def _vswitchd_pid(self) -> str:
        pid = OvsVswitchd(self.sandbox.ctx).pid()
        return str(pid) if pid is not None else "none (not running)"

    def vswitchd_restarts(self) -> str:
        """Since the last call: "" if ovs-vswitchd kept running, else what its log says
        about the crash (its monitor restarts it; the probes meanwhile may fail)."""
        pid = self._vswitchd_pid()
        if pid == self._vswitchd_last:
            return ""
        before, self._vswitchd_last = self._vswitchd_last, pid
        log = self.sandbox.ctx.paths.logfile("ovs-vswitchd")
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        emer = [x for x in lines if "|EMER|" in x or "(monitor)|ERR|" in x][-2:]
        return f"ovs-vswitchd restarted (pid {before} -> {pid}); its log: " + " / ".join(emer)

    def start(self) -> None:
        self.flush_conntrack()
        self._vswitchd_last = self._vswitchd_pid()
        self.tag = f"kuryr-test-{self.cluster_id}"
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self._start())

    async def _start(self) -> None:
        topo = self.sandbox.topo
        self.client = KubeClient.from_settings(load_kubeconfig(self.api_url_kubeconfig))
        await ensure_crds(self.client, kuryrnetwork.crd_manifests())
        self.neutron = Neutron(SdkTransport(topology.connect(self.sandbox.settings)))
        pods = Informer(self.client, PODS)
        sec = SecurityApi(self.neutron)
        events = EventRecorder(self.client, "kuryr-controller")
        if self.mode == "identity":
            self.parts = build_identity_parts(
                self.client,
                sec,
                cluster_id=self.cluster_id,
                project_id=topo.project_id,
                pods=pods,
                events=events,
            )
        else:
            self.parts = build_policy_parts(
                self.client,
                sec,
                cluster_id=self.cluster_id,
                project_id=topo.project_id,
                pods=pods,
                events=events,
                address_groups=os.environ.get("KURYR_TEST_NP_ADDRESS_GROUPS") == "1",
            )
        self.network = sandbox_pod_network(topo)
        self.placement = self.parts.placement(StaticPlacement(self.network))
        controller = Controller(
            informers=[],
            engines=[self.parts.engine],
            elector=None,
            health=HealthState(),
            startup=[self.parts.startup, self._open_sgs],
            caches=[pods, *self.parts.caches],
        )
        self._task = asyncio.ensure_future(controller.run())
        deadline = time.monotonic() + 60
        while len(self.parts.cluster.ids) < 2:
            if self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                raise AssertionError("the policy controller did not start in 60 s")
            await asyncio.sleep(0.1)

    async def _open_sgs(self) -> None:
        """The open SGs the VM port uses (the per-policy mode's startup makes them too)."""
        assert self.parts is not None
        await self.parts.cluster.ensure()

    def stop(self) -> None:
        async def _stop() -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
            await self.client.aclose()
            if self.neutron is not None:
                self.neutron.close()

        with contextlib.suppress(Exception):
            self.call(_stop(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()

    # ---- Kubernetes objects -------------------------------------------------------------

    def namespace(self, name: str, labels: dict[str, str]) -> None:
        self.ns_labels[name] = dict(labels)
        r = self.http.post("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})
        assert r.status_code == 201, r.text

    def delete_namespaces(self, timeout: float = 120) -> list[str]:
        """Delete the namespaces this environment made and wait until they are gone (the
        next environment on the same API server reuses their names); those still there."""
        for name in self.ns_labels:
            r = self.http.delete(f"/api/v1/namespaces/{name}")
            assert r.status_code in (200, 202, 404), r.text
        deadline = time.monotonic() + timeout
        left = list(self.ns_labels)
        while left and time.monotonic() < deadline:
            left = [n for n in left if self.http.get(f"/api/v1/namespaces/{n}").status_code != 404]
            time.sleep(0.2)
        return left

    def label_namespace(self, name: str, labels: dict[str, str]) -> None:
        patch = {k: None for k in self.ns_labels.get(name, {}) if k not in labels} | labels
        self.ns_labels[name] = dict(labels)
        r = self.http.patch(f"/api/v1/namespaces/{name}", {"metadata": {"labels": patch}}, "merge")
        assert r.status_code == 200, r.text

    def apply_policy(self, policy: dict[str, Any]) -> None:
        ns = policy["metadata"]["namespace"]
        r = self.http.post(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", policy)
        assert r.status_code == 201, r.text

    def delete_policy(self, ns: str, name: str) -> None:
        r = self.http.delete(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}")
        assert r.status_code in (200, 202, 404), r.text

    def _store_pod(self, ns: str, name: str) -> dict[str, Any] | None:
        assert self.parts is not None
        return self.parts.world.pods.get(f"{ns}/{name}")

    def _wait_store(self, what: str, check: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen by the controller's caches in {timeout} s")
            time.sleep(0.05)

    def sgs_for(self, ns: str, name: str, timeout: float = 60) -> tuple[str, ...]:
        """What the placement answers for the pod now (waits while ResourceNotReady)."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self._store_pod(ns, name)
            assert pod is not None and self.network is not None
            try:
                return self.call(self.placement.security_groups_for(pod, self.network))
            except ResourceNotReady:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def add_pod(self, ep: Endpoint) -> Member:
        """Pod object first, then its port with the SGs the placement answers, plugged in a
        netns running the agent; then the pod's IP in its status (as the kubelet would)."""
        assert ep.namespace
        ports = [
            {"name": n, "protocol": p, "containerPort": c} for (n, p), c in ep.named_ports.items()
        ]
        body = {
            "metadata": {"name": ep.name, "labels": ep.labels},
            "spec": {"containers": [{"name": "c", "image": "agent", "ports": ports}]},
        }
        r = self.http.post(f"/api/v1/namespaces/{ep.namespace}/pods", body)
        assert r.status_code == 201, r.text
        self._wait_store(ep.name, lambda: self._store_pod(ep.namespace or "", ep.name) is not None)
        sgs = self.sgs_for(ep.namespace, ep.name)
        member = self._plug(ep, self.sandbox.topo.net1_id, self.sandbox.topo.subnet1_id, sgs)
        status = {
            "phase": "Running",
            "podIP": member.endpoint.ip,
            "podIPs": [{"ip": member.endpoint.ip}],
        }
        r = self.http.patch(
            f"/api/v1/namespaces/{ep.namespace}/pods/{ep.name}/status", {"status": status}, "merge"
        )
        assert r.status_code == 200, r.text
        return member

    def add_vm(self, name: str) -> Member:
        """The outside peer: a port on the VM network (net0) allowing everything both ways."""
        assert self.parts is not None
        sgs = tuple(sorted(self.parts.cluster.ids.values()))
        return self._plug(
            Endpoint(name, ""), self.sandbox.topo.net0_id, self.sandbox.topo.subnet0_id, sgs
        )

    def _plug(self, ep: Endpoint, net_id: str, subnet_id: str, sgs: tuple[str, ...]) -> Member:
        conn = self.sandbox.conn
        port = conn.network.create_port(
            network_id=net_id,
            project_id=self.sandbox.topo.project_id,
            name=f"{self.cluster_id}-{ep.name}",
            device_owner=TEST_DEVICE_OWNER,
            binding_host_id=self.sandbox.settings.hostname,
            security_group_ids=list(sgs),
            tags=[self.tag],
        )
        if self.tag not in (port.tags or []):
            conn.network.set_tags(port, [self.tag])
        ip = port.fixed_ips[0]["ip_address"]
        endpoint = Endpoint(ep.name, ip, ep.namespace, ep.labels, ep.named_ports)
        netns = f"kt-{uuid.uuid4().hex[:10]}"
        self.netnses.append(netns)  # unplugged at clean-up even if plugging fails
        subnet = conn.network.get_subnet(subnet_id)
        hostplug.plug(self.sandbox.ctx, netns, port, subnet, mtu=self.sandbox.topo.mtu)
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                AGENT,
                "serve",
                json.dumps(TCP_PORTS),
                json.dumps(UDP_PORTS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        member = Member(endpoint, port, netns, server)
        self.members[ep.name] = member
        deadline = time.monotonic() + 60
        while conn.network.get_port(port.id).status != "ACTIVE":
            assert time.monotonic() < deadline, f"port of {ep.name} not ACTIVE"
            time.sleep(0.1)
        return member

    def relabel_pod(self, name: str, labels: dict[str, str]) -> None:
        m = self.members[name]
        ns = m.endpoint.namespace
        patch = {k: None for k in m.endpoint.labels if k not in labels} | labels
        r = self.http.patch(
            f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"labels": patch}}, "merge"
        )
        assert r.status_code == 200, r.text
        m.endpoint = Endpoint(name, m.endpoint.ip, ns, dict(labels), m.endpoint.named_ports)

    # ---- convergence -----------------------------------------------------------------

    def sync_ports(self) -> int:
        """Ports to the SGs the placement answers now (the KuryrPort reconciler's job)."""
        changed = 0
        for m in self.members.values():
            if not m.endpoint.is_pod:
                continue
            ns = m.endpoint.namespace or ""
            self._wait_store(
                m.endpoint.name,
                lambda ns=ns, m=m: (
                    objects.labels(self._store_pod(ns, m.endpoint.name) or {}) == m.endpoint.labels
                ),
            )
            want = sorted(self.sgs_for(ns, m.endpoint.name))
            have = sorted(self.sandbox.conn.network.get_port(m.port.id).security_group_ids)
            if want != have:
                self.sandbox.conn.network.update_port(m.port.id, security_group_ids=want)
                changed += 1
        return changed

    def converged(self) -> bool:
        assert self.parts is not None
        parts = self.parts

        async def check() -> bool:
            return parts.converged()

        return self.call(check())

    def wait_enforced(self, policies: list[dict[str, Any]], timeout: float = 120) -> float:
        """Until the controller sees exactly ``policies``, the KNPs match their plans and
        every port has its SGs; seconds it took."""
        t0 = time.monotonic()
        assert self.parts is not None
        want = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in policies}
        world = self.parts.world
        self._wait_store("the policies", lambda: set(world.policies.keys()) == want)
        while True:
            # label/namespace changes must reach the caches first
            for ns, labels in self.ns_labels.items():
                self._wait_store(ns, lambda ns=ns, labels=labels: self._ns_seen(ns, labels))
            moved = self.sync_ports()
            if moved == 0 and self.converged() and self.sync_ports() == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"policies not enforced after {timeout} s")
            assert self.parts is not None
            keys = list(self.parts.world.knps.keys()) + list(self.parts.world.policies.keys())
            if self.mode == "identity":
                keys = [SYNC_KEY]
            self.loop.call_soon_threadsafe(self.parts.engine.enqueue_all, keys)
            time.sleep(0.3)

    def _ns_seen(self, ns: str, labels: dict[str, str]) -> bool:
        assert self.parts is not None
        obj = self.parts.world.namespaces.get(ns)
        if obj is None:
            return False
        have = {k: v for k, v in objects.labels(obj).items() if not k.startswith("kubernetes.io/")}
        return have == labels

    # ---- traffic -----------------------------------------------------------------------

    def observe_pair(self, src: str, dst: str) -> dict[tuple[str, str, str, int], bool]:
        return self.observe(only=(src, {dst}))

    def observe(
        self,
        probes: list[tuple[str, int]] = PROBES,
        only: tuple[str, set[str]] | None = None,
    ) -> dict[tuple[str, str, str, int], bool]:
        """Every (from, to, proto, port) tried for real, one agent run per source, in
        parallel; ``only``: one source and the destinations to try."""
        results: dict[tuple[str, str, str, int], bool] = {}
        sources = [s for s in self.members.values() if only is None or s.endpoint.name == only[0]]
        # a few sources at a time: hundreds of parallel connections through the shared
        # userspace conntrack while ACLs change is where ovs-vswitchd crashed twice
        for wave in range(0, len(sources), PROBE_SOURCES_AT_ONCE):
            procs = {}
            for src in sources[wave : wave + PROBE_SOURCES_AT_ONCE]:
                targets = [
                    (dst.endpoint.name, dst.endpoint.ip, proto, port)
                    for dst in self.members.values()
                    if dst is not src and (only is None or dst.endpoint.name in only[1])
                    for proto, port in probes
                ]
                p = subprocess.Popen(
                    ["ip", "netns", "exec", src.netns, sys.executable, AGENT, "probe"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert p.stdin is not None
                p.stdin.write(json.dumps([[ip, proto, port] for _, ip, proto, port in targets]))
                p.stdin.close()
                procs[src.endpoint.name] = (p, targets)
            for name, (p, targets) in procs.items():
                assert p.stdout is not None
                out = json.loads(p.stdout.read())
                p.stdout.close()
                p.wait(timeout=60)
                for (dst, _, proto, port), ok in zip(targets, out, strict=True):
                    results[(name, dst, proto, port)] = ok
        return results

    def pipeline_allows(self, src: str, dst: str, proto: str, port: int) -> bool | None:
        """What br-int's OpenFlow tables (the pipeline OVN compiled from the SG rules) do
        with a new connection's first packet, by ``ofproto/trace``; unlike a probe, this
        does not go through the datapath's flow cache. None: not traceable (not TCP/UDP,
        or the two ports are on different networks)."""
        if proto not in ("TCP", "UDP"):
            return None
        net = self.sandbox.conn.network
        a, b = net.get_port(self.members[src].port.id), net.get_port(self.members[dst].port.id)
        if a.network_id != b.network_id:
            return None
        find = ("--bare", "--columns=name", "find", "Interface")
        names = [self.sandbox.ctx.vsctl(*find, f"external_ids:iface-id={p.id}").strip()
                 for p in (a, b)]  # fmt: skip
        fields = (
            f"in_port={names[0]},{proto.lower()},dl_src={a.mac_address},dl_dst={b.mac_address},"
            f"nw_src={self.members[src].endpoint.ip},nw_dst={self.members[dst].endpoint.ip},"
            f"nw_ttl=64,tp_src=40000,tp_dst={port}" + (",tcp_flags=syn" if proto == "TCP" else "")
        )
        new = ["--ct-next", "trk,new"] * 4  # one per conntrack pass (source's, destination's)
        out = self._vswitchd("ofproto/trace", "br-int", fields, *new)
        actions = [x for x in out.splitlines() if x.startswith("Datapath actions:")]
        shown = self._vswitchd("dpctl/show").splitlines()
        dp_port = next((x.split(":")[0].split()[-1] for x in shown
                        if x.strip().endswith(f": {names[1]}")), None)  # fmt: skip
        dump("trace.txt", f"### {src} -> {dst} {proto}/{port} (dp port {dp_port})\n{out}\n",
             append=True)  # fmt: skip
        if not actions or dp_port is None:
            return None
        # the trace prints datapath port numbers: the last pass outputs to the destination
        return any(re.search(rf"(^|[:,\s]){dp_port}$", x) for x in actions)

    def pipeline_agrees(self, wrong: list[str]) -> list[str]:
        """The differing rows where the OpenFlow pipeline itself does what the model wants
        (drops what was seen open, forwards what was seen closed): only state held in the
        datapath (cached flows, connection tracking) can have made the probe differ."""
        out = []
        for row in wrong:
            src, dst, proto, port, verdict = row_parts(row)
            want_open = verdict.endswith("want open")
            if self.pipeline_allows(src, dst, proto, port) is want_open:
                out.append(row)
        return out

    def datapath_flows(self, src: str, dst: str, port: int) -> list[str]:
        """The datapath's cached flows from one pod to another's ``port`` (exact matches)."""
        a, b = self.members[src].endpoint.ip, self.members[dst].endpoint.ip
        flows = self._vswitchd("dpctl/dump-flows", "-m").splitlines()
        to_port = re.compile(rf"(tcp|udp|sctp)\(src=[^,]*,dst={port}(/0x[0-9a-f]+)?\)")
        return [f for f in flows if f"src={a}," in f and f"dst={b}," in f and to_port.search(f)]

    def revalidate_datapath(self, purge: bool) -> None:
        """Wait for the revalidators' next full pass over the cached datapath flows or,
        with ``purge``, delete every cached flow (the next packets are translated anew)."""
        self._vswitchd("revalidator/purge" if purge else "revalidator/wait")

    def explain(self, src: str, dst: str) -> str:
        """What Neutron, OVN and conntrack hold for one pair (for a failure message)."""
        net = self.sandbox.conn.network
        ctx = self.sandbox.ctx
        a, b = self.members[src], self.members[dst]
        lines = [f"{src} {a.endpoint.ip} -> {dst} {b.endpoint.ip}:"]
        for m in (a, b):
            port = net.get_port(m.port.id)
            lines.append(f"  {m.endpoint.name} port {port.id} SGs {port.security_group_ids}")
            for sg_id in port.security_group_ids:
                for r in net.security_group_rules(security_group_id=sg_id):
                    lines.append(
                        f"    {sg_id[:8]} {r.direction} {r.protocol} "
                        f"{r.port_range_min}-{r.port_range_max} {r.remote_ip_prefix} "
                        f"group={r.remote_group_id} ag={getattr(r, 'remote_address_group_id', '')}"
                    )
            iface = ctx.vsctl("--columns=name,external_ids", "find", "Interface",
                              f"external_ids:iface-id={port.id}")  # fmt: skip
            lines.append(f"  OVS: {' '.join(iface.split())}")
            nbctl = ["ovn-nbctl", f"--db=unix:{ctx.paths.nb_sock}", "--bare"]
            lsp = run([*nbctl, "--columns=_uuid", "find", "Logical_Switch_Port",
                       f"name={port.id}"], check=False).stdout.strip()  # fmt: skip
            pgs = run([*nbctl, "--columns=name", "find", "Port_Group", f"ports{{>=}}{lsp}"],
                      check=False).stdout.split()  # fmt: skip
            lines.append(f"  OVN port groups: {pgs}")
            if m is b:  # the ACLs the destination's to-lport stage evaluates
                for pg in pgs:
                    acls = run([*nbctl[:2], "acl-list", pg],
                               check=False).stdout.splitlines()  # fmt: skip
                    lines += [f"    acl {pg[:11]}: {' '.join(x.split())}" for x in acls
                              if "to-lport" in x][:25]  # fmt: skip
        ct = self._vswitchd("dpctl/dump-conntrack")
        ips = (a.endpoint.ip, b.endpoint.ip)
        pair = [c for c in ct.splitlines() if all(f"={ip}," in c for ip in ips)]
        # the source's own ct zone first: a probe that never entered it skipped its ACLs
        pair.sort(key=lambda c: (f"src={a.endpoint.ip}," not in c.split("reply=")[0], c))
        lines += [f"  ct: {c}" for c in pair[:60]]
        lines.append(f"  ({len(pair)} conntrack entries for the pair)")
        # OpenFlow of br-int that names the source's address: a flow left from an earlier
        # policy's ACL (ip-prefix mode writes /32 matches) would show here
        flows = run(
            ["ovs-ofctl", "dump-flows", f"unix:{ctx.paths.run / 'br-int.mgmt'}"], check=False
        ).stdout
        named = [f for f in flows.splitlines() if f"nw_src={a.endpoint.ip}," in f
                 or f"nw_src={a.endpoint.ip} " in f or f"reg2={a.endpoint.ip}" in f]  # fmt: skip
        lines += [f"  of: {' '.join(f.split()[5:])}" for f in named[:20]]
        if os.environ.get("KURYR_TEST_DUMP_DIR"):
            dump("flows.txt", flows)
            dump("ct.txt", ct)
            sb = run(["ovn-sbctl", f"--db=unix:{ctx.paths.sb_sock}", "lflow-list"], check=False)
            dump("lflows.txt", sb.stdout)
            nb = run(["ovn-nbctl", f"--db=unix:{ctx.paths.nb_sock}", "show"], check=False)
            dump("nb.txt", nb.stdout)
            dump("dpflows.txt", self._vswitchd("dpctl/dump-flows", "-m"))
        lines.append(f"  ({len(named)} br-int flows match nw_src={a.endpoint.ip} exactly)")
        return "\n".join(lines)

    def endpoints(self) -> list[Endpoint]:
        return [m.endpoint for m in self.members.values()]

    # ---- clean-up ----------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Everything this environment made in Neutron, the host and the loop; what leaked."""
        conn = self.sandbox.conn
        for m in self.members.values():
            m.server.kill()
            m.server.wait()
            if m.server.stdout is not None:
                m.server.stdout.close()
        leaks: list[str] = []
        for netns in self.netnses:
            for attempt in range(3):  # ovs-vsctl may time out while the shared host is busy
                try:
                    hostplug.unplug(self.sandbox.ctx, netns)
                    break
                except Exception as exc:
                    if attempt == 2:
                        leaks.append(f"netns {netns} ({exc})")
                    time.sleep(2)
        for port in conn.network.ports(tags=self.tag):
            conn.network.delete_port(port, ignore_missing=True)
        self.stop()
        cluster_tag = f"kuryr.cluster:{self.cluster_id}"
        for _ in range(3):
            for sg in conn.network.security_groups(tags=cluster_tag):
                with contextlib.suppress(Exception):
                    conn.network.delete_security_group(sg, ignore_missing=True)
            for ag in conn.network.address_groups():
                if ag.name.startswith(f"kuryr:{self.cluster_id}:"):
                    with contextlib.suppress(Exception):
                        conn.network.delete_address_group(ag, ignore_missing=True)
        self.flush_conntrack()
        leaks += [f"port {p.id}" for p in conn.network.ports(tags=self.tag)]
        leaks += [f"SG {sg.id}" for sg in conn.network.security_groups(tags=cluster_tag)]
        leaks += [
            f"address group {ag.id}"
            for ag in conn.network.address_groups()
            if ag.name.startswith(f"kuryr:{self.cluster_id}:")
        ]
        return leaks


def diff(
    env: PolicyEnv, policies: list[dict[str, Any]], observed: dict[tuple[str, str, str, int], bool]
) -> list[str]:
    """Rows where observed traffic differs from the model (empty: all as Kubernetes says)."""
    from netpol_truth import allowed

    by_name = {e.name: e for e in env.endpoints()}
    out = []
    for (s, d, proto, port), ok in sorted(observed.items()):
        want = allowed(policies, env.ns_labels, by_name[s], by_name[d], proto, port)
        if ok != want:
            seen, expected = ("open" if ok else "closed"), ("open" if want else "closed")
            out.append(f"{s} -> {d} {proto}/{port}: observed {seen}, want {expected}")
    return out
