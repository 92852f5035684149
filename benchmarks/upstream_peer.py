"""Upstream kuryr-kubernetes 10.0.0 as a peer on the running sandbox.

What it does (each step idempotent, cached under ``/var/cache/kuryr-sandbox/upstream-10.0.0``):

* a venv (``/usr/bin/python3.11``) with ``kuryr-kubernetes==10.0.0`` from PyPI and the pins
  it needs (``pyroute2==0.7.12``: newer pyroute2 breaks its daemon);
* its CRDs, which ship only in the sdist (``pip download --no-binary``);
* a ``kuryr.conf`` for this sandbox: the same Neutron (noauth), project, pod subnet and
  security group as the sandbox's own generated ``kuryr.conf``, the same Kubernetes API
  (the emulator, from the sandbox kubeconfig), its own ``resource_tags`` so its pool never
  adopts our ports, ``vif_pool_driver = neutron | noop``; a second copy for its CNI
  executable with a ``log_file`` (without one oslo.log writes the CNI's log lines to
  stdout, before the result JSON, and a runtime cannot parse the result);
* a CNI bin dir and conflist for it (``kuryr-cni`` is its Python executable), so a
  runtime calls it the way it calls ours;
* its controller and CNI daemon as processes (own process groups, so the privsep helpers
  go with them), and on stop: nothing left (processes, its Neutron ports, its KuryrPorts).

The CRD swap (``CrdSwap``): upstream's ``kuryrports`` CRD has no ``status`` subresource
and it writes ``status`` through the main resource; with ours installed those writes are
dropped. The swap replaces the CRD's spec in place (no delete: KuryrPorts of others
survive) and the restore puts our spec back. No controller of ours may run meanwhile.

CLI (for poking at it by hand; the benchmark drives it from ``pod_wiring.py``)::

    .venv/bin/python benchmarks/upstream_peer.py setup
    .venv/bin/python benchmarks/upstream_peer.py conf --mode pool
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import copy
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.resources import CRDS
from kuryr_k8s.sandbox.components import Context

VERSION = "10.0.0"
PINS = (f"kuryr-kubernetes=={VERSION}", "pyroute2==0.7.12")
PYTHON = "/usr/bin/python3.11"
CACHE = Path(f"/var/cache/kuryr-sandbox/upstream-{VERSION}")
TAG = "kuryr-upstream-bench"
"""Its ``[neutron_defaults] resource_tags`` in pool mode: without tags its pool adopts every
``compute:kuryr`` port nobody of its own references, ours included."""
CONTROLLER_HEALTH = "127.0.0.1:8282"
CNI_HEALTH = "127.0.0.1:8290"
DAEMON_BIND = "127.0.0.1:5036"
KURYRPORTS_CRD = "kuryrports.openstack.org"


def _run(argv: list[str], timeout: float = 900) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def ensure_venv(cache: Path = CACHE) -> Path:
    """The venv with upstream and its pins; created once (a marker names the pins)."""
    venv = cache / "venv"
    marker = venv / "kuryr-peer-pins.txt"
    if marker.is_file() and marker.read_text() == "\n".join(PINS):
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    print(f"-- creating {venv} with {' '.join(PINS)} (once)", flush=True)
    _run([PYTHON, "-m", "venv", "--clear", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "-q", *PINS])
    marker.write_text("\n".join(PINS))
    return venv


def ensure_crds(cache: Path = CACHE) -> dict[str, dict[str, Any]]:
    """Upstream's CRDs (from the sdist), by name."""
    crd_dir = cache / "crds"
    if not crd_dir.is_dir() or not any(crd_dir.glob("*.yaml")):
        venv = ensure_venv(cache)
        sdist_dir = cache / "sdist"
        sdist_dir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                str(venv / "bin" / "pip"),
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(sdist_dir),
                PINS[0],
            ]
        )
        crd_dir.mkdir(exist_ok=True)
        (sdist,) = sdist_dir.glob(f"kuryr-kubernetes-{VERSION}.tar.gz")
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                if "/kubernetes_crds/" in member.name and member.name.endswith(".yaml"):
                    data = tar.extractfile(member)
                    assert data is not None
                    (crd_dir / Path(member.name).name).write_bytes(data.read())
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["metadata"]["name"]] = doc
    if KURYRPORTS_CRD not in crds:
        raise SystemExit(f"no {KURYRPORTS_CRD} CRD in {crd_dir}: remove it and retry")
    return crds


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxFacts:
    """What upstream must share with our controller, read from the sandbox's own files."""

    neutron: str
    project: str
    pod_subnet: str
    pod_security_groups: str
    ovs_bridge: str
    api_root: str
    ovsdb: str
    ovs_rundir: Path

    @classmethod
    def read(cls, ctx: Context) -> SandboxFacts:
        conf = configparser.ConfigParser()
        conf.read(ctx.paths.etc / "kuryr.conf")
        kubeconfig = yaml.safe_load(ctx.paths.kubeconfig.read_text())
        server = str(kubeconfig["clusters"][0]["cluster"]["server"])
        if not server.startswith("http://"):
            raise SystemExit(
                f"{ctx.paths.kubeconfig}: API server {server} needs TLS credentials; "
                "the peer supports the sandbox emulator's plain HTTP only"
            )
        return cls(
            neutron=conf["neutron"]["endpoint_override"],
            project=conf["neutron_defaults"]["project"],
            pod_subnet=conf["neutron_defaults"]["pod_subnet"],
            pod_security_groups=conf["neutron_defaults"]["pod_security_groups"],
            ovs_bridge=conf["neutron_defaults"].get("ovs_bridge", "br-int"),
            api_root=server,
            # its os-vif speaks OVSDB over TCP; the sandbox's ovsdb-server listens there too
            ovsdb="tcp:127.0.0.1:6640",
            ovs_rundir=ctx.paths.run,
        )


def upstream_conf(
    facts: SandboxFacts, mode: str, pool_min: int, lock_path: Path, log_file: Path | None
) -> str:
    pool = mode == "pool"
    text = f"""\
# Written by benchmarks/upstream_peer.py for kuryr-kubernetes {VERSION} on this sandbox.
[DEFAULT]
debug = false
{f"log_file = {log_file}" if log_file else ""}

[kubernetes]
api_root = {facts.api_root}
# empty: no service account token (the emulator needs none)
token_file =
ssl_verify_server_crt = false
pod_vif_driver = neutron-vif
vif_pool_driver = {"neutron" if pool else "noop"}
pod_subnets_driver = default
pod_security_groups_driver = default
enabled_handlers = vif,kuryrport
port_debug = false
use_events = true
watch_reconcile_period = 0

[neutron]
auth_type = none
endpoint = {facts.neutron}

[neutron_defaults]
project = {facts.project}
pod_subnet = {facts.pod_subnet}
pod_security_groups = {facts.pod_security_groups}
ovs_bridge = {facts.ovs_bridge}
resource_tags = {TAG if pool else ""}

[vif_pool]
ports_pool_min = {pool_min}
ports_pool_batch = {max(10, pool_min)}
ports_pool_max = 0
ports_pool_update_frequency = 20

[cni_daemon]
bind_address = {DAEMON_BIND}
vif_annotation_timeout = 120
worker_num = 30

[health_server]
port = {CONTROLLER_HEALTH.split(":")[1]}

[cni_health_server]
port = {CNI_HEALTH.split(":")[1]}

[os_vif_ovs]
ovsdb_connection = {facts.ovsdb}

[oslo_concurrency]
lock_path = {lock_path}
"""
    return text


# -- the running peer -------------------------------------------------------------------


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@dataclass
class UpstreamPeer:
    """Upstream's controller + CNI daemon against the sandbox, in one pool mode."""

    ctx: Context
    mode: str
    pool_min: int = 0
    cache: Path = CACHE
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.cache / "run"

    @property
    def conf_path(self) -> Path:
        return self.work / "kuryr.conf"

    @property
    def cni_bin_dir(self) -> Path:
        return self.work / "cni" / "bin"

    @property
    def cni_conf_dir(self) -> Path:
        return self.work / "cni" / "net.d"

    def logfile(self, what: str) -> Path:
        return self.ctx.paths.logfile(f"upstream-{what}")

    def prepare(self) -> None:
        venv = ensure_venv(self.cache)
        self.work.mkdir(parents=True, exist_ok=True)
        locks = self.work / "locks"
        locks.mkdir(exist_ok=True)
        facts = SandboxFacts.read(self.ctx)
        self.conf_path.write_text(upstream_conf(facts, self.mode, self.pool_min, locks, None))
        cni_conf = self.work / "kuryr-cni.conf"
        cni_conf.write_text(
            upstream_conf(facts, self.mode, self.pool_min, locks, self.logfile("cni"))
        )
        self.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        link = self.cni_bin_dir / "kuryr-cni"
        link.unlink(missing_ok=True)
        link.symlink_to(venv / "bin" / "kuryr-cni")
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "0.3.1",
            "name": "kuryr",
            "plugins": [{"type": "kuryr-cni", "kuryr_conf": str(cni_conf), "debug": False}],
        }
        (self.cni_conf_dir / "10-kuryr.conflist").write_text(json.dumps(conflist, indent=2))

    def env(self) -> dict[str, str]:
        venv = self.cache / "venv"
        env = {
            k: v
            for k, v in os.environ.items()
            # these override its API server CA file (research: TLS fails with them set)
            if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "VIRTUAL_ENV")
        }
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["OVS_RUNDIR"] = str(self.ctx.paths.run)
        return env

    def start(self) -> None:
        self.prepare()
        bin_dir = self.cache / "venv" / "bin"
        for what, exe in (("controller", "kuryr-k8s-controller"), ("daemon", "kuryr-daemon")):
            with open(self.logfile(what), "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [str(bin_dir / exe), "--config-file", str(self.conf_path)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self.env(),
                        start_new_session=True,  # its privsep helpers die with the group
                    )
                )
        deadline = time.monotonic() + 180
        while True:
            up = [
                _http_status(f"http://{CONTROLLER_HEALTH}/ready"),
                _http_status(f"http://{CNI_HEALTH}/ready"),
            ]
            if up == [200, 200]:
                return
            dead = [str(p.args) for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(
                    f"upstream {self.mode} did not get ready (health {up}, exited {dead}); "
                    f"see {self.logfile('controller')} and {self.logfile('daemon')}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # the group: privsep helpers that outlived their parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def upstream_ports(conn: Any, namespaces: list[str]) -> list[Any]:
    """Its Neutron ports: tagged (pool mode) or named ``<namespace>/<pod>`` (noop mode)."""
    found = {p.id: p for p in conn.network.ports(tags=TAG)}
    for port in conn.network.ports(device_owner="compute:kuryr"):
        if any(port.name.startswith(f"{ns}/") for ns in namespaces):
            found[port.id] = port
    return list(found.values())


def delete_upstream_ports(conn: Any, namespaces: list[str]) -> int:
    ports = upstream_ports(conn, namespaces)
    for port in ports:
        conn.network.delete_port(port, ignore_missing=True)
    return len(ports)


# -- the CRD swap -----------------------------------------------------------------------


@dataclass
class CrdSwap:
    """Upstream's kuryrports CRD spec in, ours back. ``saved`` is ours as it was."""

    saved: dict[str, Any] | None = None

    async def swap_in(self, client: KubeClient, crds: dict[str, dict[str, Any]]) -> None:
        ours = await client.get(CRDS, KURYRPORTS_CRD)
        self.saved = copy.deepcopy(ours)
        body = copy.deepcopy(ours)
        body["spec"] = crds[KURYRPORTS_CRD]["spec"]
        await client.replace(CRDS, body)
        # Only kuryrports: with handlers vif,kuryrport upstream reads no other CRD, and
        # adding CRDs of the same names as ours (kuryrloadbalancers, ...) would change
        # what other sessions' controllers find on this shared API.
        await _wait_established(client, [KURYRPORTS_CRD])

    async def restore(self, client: KubeClient) -> None:
        if self.saved is not None:
            current = await client.get(CRDS, KURYRPORTS_CRD)
            body = copy.deepcopy(current)
            body["spec"] = self.saved["spec"]
            # and its annotations as they were: the in-place upgrade's annotation would
            # mark this shared API as one upstream ran, whose unowned compute:kuryr ports
            # the next controller start would take as upstream's (takeover.py)
            body["metadata"]["annotations"] = self.saved["metadata"].get("annotations") or {}
            await client.replace(CRDS, body)
            self.saved = None


async def _wait_established(client: KubeClient, names: list[str]) -> None:
    deadline = time.monotonic() + 30
    for name in names:
        while True:
            crd = await client.get(CRDS, name)
            conds = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"CRD {name} not Established after 30 s")
            await asyncio.sleep(0.2)


# -- CLI --------------------------------------------------------------------------------


def main() -> None:
    from kuryr_k8s.sandbox import manager
    from kuryr_k8s.sandbox.settings import settings_from_env

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="create the venv and fetch the CRDs (cached)")
    conf = sub.add_parser("conf", help="write and print its kuryr.conf for this sandbox")
    conf.add_argument("--mode", choices=("pool", "nopool"), default="pool")
    conf.add_argument("--pool-min", type=int, default=5)
    args = p.parse_args()
    if args.cmd == "setup":
        venv = ensure_venv()
        crds = ensure_crds()
        print(f"venv {venv}; CRDs: {', '.join(sorted(crds))}")
    elif args.cmd == "conf":
        ctx = manager.context(settings_from_env())
        peer = UpstreamPeer(ctx, args.mode, args.pool_min)
        peer.prepare()
        print(peer.conf_path.read_text())


if __name__ == "__main__":
    main()
