"""The product itself as sandbox components: kuryr-controller, kuryr-daemon (with the CNI
plugin installed) and the node agent that plays kubelet for this host's node.

They are enabled by ``kuryr sandbox up --kuryr`` (the demo does that), start after the
Kubernetes API emulator, and share one generated ``<state>/etc/kuryr.conf``.

They run as the manifests (``deploy/``) run them: kuryr.conf, the controller's and the
daemon's arguments and the CNI install all come from :mod:`kuryr_k8s.deploy.spec`, with
the sandbox's values (:func:`site`) and paths (:func:`layout`) in place of the
manifests' placeholders and in-pod paths (``tests/unit/deploy`` compares them).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from kuryr_k8s.deploy import spec
from kuryr_k8s.k8s import NAMESPACES, AlreadyExists, KubeClient, load_kubeconfig
from kuryr_k8s.sandbox import naming
from kuryr_k8s.sandbox.components import Component, Context, http_ok
from kuryr_k8s.sandbox.kubeapi.accounts import component_kubeconfig
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.process import run

CLUSTER_ID = "kuryr-sandbox"
CONTROLLER_HEALTH = f"127.0.0.1:{spec.CONTROLLER_HEALTH_PORT}"
DAEMON_HEALTH = f"127.0.0.1:{spec.DAEMON_HEALTH_PORT}"


def kuryr_argv(*args: str) -> list[str]:
    """``kuryr ARGS``: the manifests' containers run the image's ``kuryr``, the same
    ``kuryr_k8s.cli.main``."""
    return [sys.executable, "-m", "kuryr_k8s.cli.main", *args]


def kuryr_conf_path(ctx: Context) -> Path:
    return ctx.paths.etc / "kuryr.conf"


def cni_socket(ctx: Context) -> Path:
    return ctx.paths.run / "kuryr-cni.sock"


def cni_dirs(ctx: Context) -> tuple[Path, Path]:
    """(bin dir, conf dir) of the sandbox node: private, not /opt/cni and /etc/cni."""
    return ctx.paths.root / "cni" / "bin", ctx.paths.root / "cni" / "net.d"


def nodeagent_state(ctx: Context) -> Path:
    return ctx.paths.root / "nodeagent"


def layout(ctx: Context) -> spec.Layout:
    """Where the sandbox keeps what the manifests' pods find at :data:`spec.IN_POD`:
    everything under the state dir, health servers on loopback."""
    bin_dir, conf_dir = cni_dirs(ctx)
    return spec.Layout(
        conf_path=str(kuryr_conf_path(ctx)),
        socket_path=str(cni_socket(ctx)),
        ovsdb_socket=str(ctx.paths.ovs_db_sock),
        listen_host="127.0.0.1",
        cni_bin_dir=str(bin_dir),
        cni_conf_dir=str(conf_dir),
        cni_bundle_dir=str(ctx.paths.root / "cni" / "kuryr-cni"),
    )


def site(ctx: Context, topo: topology.Topology, cluster_id: str = CLUSTER_ID) -> spec.Site:
    """The sandbox's values for what the manifests leave to the operator: keystone-less
    Neutron (and Octavia when the sandbox runs it), pods on subnet1 with the default SG,
    VMs (trunk parents) on subnet0."""
    s = ctx.settings
    services = bool(s.octavia and topo.service_subnet_id)
    return spec.Site(
        neutron=(("endpoint_override", s.neutron_url), ("auth_type", "none")),
        project=topo.project_id,
        pod_subnet=topo.subnet1_id,
        pod_security_groups=topo.default_sg_id,
        cluster_id=cluster_id,
        worker_nodes_subnets=topo.subnet0_id,
        service_subnet=topo.service_subnet_id if services else "",
        external_svc_net=topo.external_net_id if services else "",
        octavia_endpoint=s.octavia_url if services else "",
    )


def neutron_sections(ctx: Context, topo: topology.Topology, cluster_id: str) -> str:
    """``[neutron]`` and ``[neutron_defaults]`` of a sandbox controller: pods on subnet1
    with the default SG, ports tagged with ``cluster_id``."""
    return spec.neutron_sections(site(ctx, topo, cluster_id))


def services_only_conf(
    ctx: Context, topo: topology.Topology, cluster_id: str, health_port: int, *, ha: bool = True
) -> str:
    """kuryr.conf of a controller that serves only Services (tests and benchmarks run one
    beside the sandbox's): its own cluster id and lease, no pod handlers, GC every 10 s."""
    return f"""\
[neutron]
endpoint_override = {ctx.settings.neutron_url}
auth_type = none
timeout = 120

[neutron_defaults]
project = {topo.project_id}
pod_subnet = {topo.subnet1_id}
pod_security_groups = {topo.default_sg_id}
cluster_id = {cluster_id}
service_subnet = {topo.service_subnet_id}
external_svc_net = {topo.external_net_id}

[kubernetes]
enabled_handlers = service,endpoints,kuryrloadbalancer
endpoints_driver_octavia_provider = ovn
vif_pool_driver = noop
controller_ha = {str(ha).lower()}
leader_lease_name = kuryr-controller-{cluster_id}

[octavia_defaults]
endpoint_override = {ctx.settings.octavia_url}

[garbage_collection]
interval = 10
grace_period = 20

[health_server]
port = {health_port}
"""


def kuryr_conf(ctx: Context, topo: topology.Topology) -> str:
    """The manifests' kuryr.conf (``deploy/kuryr.conf``) with the sandbox's site values
    and layout: one file for the controller and the daemon."""
    header = "Generated by 'kuryr sandbox up --kuryr': deploy/kuryr.conf, sandbox values."
    return spec.kuryr_conf(site(ctx, topo), layout(ctx), header=header)


async def ensure_namespace(kubeconfig: Path, name: str) -> None:
    """The manifests' namespace (``deploy/base/namespace.yaml``): the leader Lease lives
    there (``[kubernetes] leader_lease_namespace``)."""
    body = {"metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kuryr"}}}
    async with KubeClient.from_settings(load_kubeconfig(kubeconfig)) as client:
        with contextlib.suppress(AlreadyExists):
            await client.create(NAMESPACES, body)


class _KuryrComponent(Component):
    def enabled(self) -> bool:
        return self.ctx.settings.kuryr


class _KuryrService(_KuryrComponent):
    """``kuryr <subcommand>`` with the shared kuryr.conf, probed on its health server."""

    subcommand: str
    health: str

    @property
    def conf_path(self) -> Path:
        return kuryr_conf_path(self.ctx)

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig this service runs with (the seam for per-ServiceAccount
        kubeconfigs: ``launch`` passes whatever this returns)."""
        return self.ctx.paths.kubeconfig

    def args(self, kubeconfig: Path) -> list[str]:
        """``kuryr`` arguments (after the interpreter and module)."""
        return [
            self.subcommand,
            "--config-file",
            str(self.conf_path),
            "--kubeconfig",
            str(kubeconfig),
        ]

    service_account = ""
    """The manifests' ServiceAccount (kuryr-system) the service runs as, with the RBAC of
    deploy/base/rbac.yaml and a kubeconfig of its own; empty: the administrator's."""

    def launch(self) -> None:
        kubeconfig = self.kubeconfig
        if self.service_account:
            kubeconfig = component_kubeconfig(kubeconfig, self.ctx.paths.kube, self.service_account)
        self.spawn(kuryr_argv(*self.args(kubeconfig)), self.name, pidfile=self.pidfile)

    def probe(self) -> bool:
        return http_ok(f"http://{self.health}/readyz")

    def api_probe(self) -> bool:
        return http_ok(f"http://{self.health}/healthz")


class KuryrController(_KuryrService):
    name = "kuryr-controller"
    subcommand = "controller"
    service_account = "kuryr-controller"
    health = CONTROLLER_HEALTH
    ready_timeout = 120.0

    def args(self, kubeconfig: Path) -> list[str]:
        """The manifests' arguments (``deploy/base/controller.yaml``), sandbox paths."""
        return spec.controller_args(layout(self.ctx), str(kubeconfig))

    def prepare(self) -> None:
        """Write kuryr.conf from the (ensured) base topology: both services read it."""
        conn = topology.connect(self.ctx.settings)
        try:
            topo = topology.ensure_base_topology(conn, lambda msg: None)
        finally:
            conn.close()
        if topo.external_cidr:  # floating IPs of LoadBalancer Services answer from the host
            hostplug.ensure_external_host(topo.external_cidr)
        kuryr_conf_path(self.ctx).write_text(kuryr_conf(self.ctx, topo))
        asyncio.run(ensure_namespace(self.ctx.paths.kubeconfig, spec.NAMESPACE))


class KuryrDaemon(_KuryrService):
    name = "kuryr-daemon"
    subcommand = "daemon"
    service_account = "kuryr-daemon"
    health = DAEMON_HEALTH
    ready_timeout = 60.0

    def args(self, kubeconfig: Path) -> list[str]:
        """The manifests' arguments (``deploy/base/daemon.yaml``), sandbox paths."""
        return spec.daemon_args(layout(self.ctx), self.ctx.settings.hostname, str(kubeconfig))

    def install_args(self) -> list[str]:
        """The manifests' init container (``install-cni``) with the sandbox's layout: the
        host's filesystem is ours, so ``--host-root /``."""
        return spec.install_cni_args(layout(self.ctx), "/")

    def prepare(self) -> None:
        """Install kuryr-cni (its self-contained bundle) and the conflist where the node
        agent looks for them, by the same command as the DaemonSet's init container."""
        run(kuryr_argv(*self.install_args()))


class NodeAgent(_KuryrComponent):
    """Plays kubelet + container runtime for this host's node (the OVN chassis)."""

    name = "node-agent"
    ready_timeout = 60.0

    def launch(self) -> None:
        bin_dir, conf_dir = cni_dirs(self.ctx)
        self.spawn(
            [
                sys.executable,
                "-m",
                "kuryr_k8s.sandbox.nodeagent",
                "--kubeconfig",
                str(self.ctx.paths.kubeconfig),
                "--node",
                self.ctx.settings.hostname,
                "--node-ip",
                "127.0.0.1",
                "--cni-conf-dir",
                str(conf_dir),
                "--cni-bin-dir",
                str(bin_dir),
                "--state-dir",
                str(nodeagent_state(self.ctx)),
                "--netns-owner",  # pod netns names carry the sandbox id
                naming.sandbox_id(self.ctx.paths.root),
            ],
            self.name,
            pidfile=self.pidfile,
        )

    def probe(self) -> bool:
        port = self.ctx.settings.ports.kube_api
        return http_ok(f"http://127.0.0.1:{port}/api/v1/nodes/{self.ctx.settings.hostname}")


def kuryr_components(ctx: Context) -> list[Component]:
    return [KuryrController(ctx), KuryrDaemon(ctx), NodeAgent(ctx)]
