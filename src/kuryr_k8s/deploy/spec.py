"""What the manifests run, and what the sandbox runs: one source for both.

``deploy/`` is rendered from here (``kuryr deploy render``), and
``sandbox/kuryr_components.py`` builds its ``kuryr.conf`` and the controller's and
daemon's command lines with the same functions. Only two things differ, and both are
explicit arguments:

* :class:`Site`: what a cloud must supply (how to reach Neutron, the project, subnet and
  security group ids, the cluster id). The manifests carry placeholders, the sandbox its
  topology's ids.
* :class:`Layout`: where files and sockets live and which address the health servers
  listen on. :data:`IN_POD` is the layout inside the manifests' pods; the sandbox keeps
  everything under its state directory and listens on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

from kuryr_k8s import __version__
from kuryr_k8s.cni import wire

NAMESPACE = "kuryr-system"
CONTROLLER = "kuryr-controller"
"""Name of the controller's Deployment, ServiceAccount and leader Lease."""
DAEMON = "kuryr-daemon"
"""Name of the daemon's DaemonSet and ServiceAccount."""
CONFIGMAP = "kuryr-config"
CLOUDS_SECRET = "kuryr-clouds"  # noqa: S105 (a name, no secret)
CLOUD = "kuryr"
"""The ``clouds.yaml`` entry the manifests' ``[neutron] cloud`` names."""
IMAGE = f"localhost/kuryr-k8s:{__version__}"
"""The image ``deploy/image/build`` produces (override it in deploy/kustomization.yaml)."""
CONTROLLER_HEALTH_PORT = 8082
"""``[health_server] port``: /healthz, /readyz and /metrics of the controller."""
DAEMON_HEALTH_PORT = 8091
"""Port of ``[cni_daemon] metrics_address``: /healthz, /readyz and /metrics."""
KURYR = "/usr/local/bin/kuryr"
"""The ``kuryr`` entry point inside the image (the sandbox runs ``python -m
kuryr_k8s.cli.main`` from its venv: the same ``main``)."""
CLOUDS_DIR = "/etc/openstack"
"""openstacksdk reads ``/etc/openstack/clouds.yaml`` without any setting."""


@dataclass(frozen=True)
class Layout:
    """Where things are for one way of running the components."""

    conf_path: str
    """kuryr.conf as the controller and the daemon see it."""
    socket_path: str
    """The daemon's CNI socket (the conflist's ``daemonSocket``)."""
    ovsdb_socket: str
    """The node's Open_vSwitch database socket."""
    listen_host: str
    """Address of the controller's and the daemon's health/metrics servers."""
    cni_bin_dir: str
    cni_conf_dir: str
    cni_bundle_dir: str
    """The node's directory for the self-contained runtime ``kuryr-cni`` runs with."""


IN_POD = Layout(
    conf_path="/etc/kuryr/kuryr.conf",
    socket_path=wire.DEFAULT_SOCKET,
    ovsdb_socket="/run/openvswitch/db.sock",
    # hostNetwork pods: kubelet probes and Prometheus reach the node's address.
    listen_host="0.0.0.0",  # noqa: S104
    cni_bin_dir="/opt/cni/bin",
    cni_conf_dir="/etc/cni/net.d",
    cni_bundle_dir="/opt/kuryr-cni",
)


@dataclass(frozen=True)
class Site:
    """What one cloud and cluster must supply."""

    neutron: tuple[tuple[str, str], ...]
    """``[neutron]`` options: ``cloud`` (clouds.yaml) or a noauth ``endpoint_override``."""
    project: str
    pod_subnet: str
    pod_security_groups: str
    cluster_id: str
    worker_nodes_subnets: str
    service_subnet: str = ""
    """Empty: Services are left alone (no Octavia load balancers)."""
    external_svc_net: str = ""
    octavia_endpoint: str = ""
    """``[octavia_defaults] endpoint_override``; empty: the catalog's load-balancer."""


TEMPLATE_SITE = Site(
    neutron=(("cloud", CLOUD),),
    project="REPLACE_WITH_PROJECT_ID",
    pod_subnet="REPLACE_WITH_POD_SUBNET_ID",
    pod_security_groups="REPLACE_WITH_POD_SECURITY_GROUP_IDS",
    cluster_id="REPLACE_WITH_A_UNIQUE_CLUSTER_NAME",
    worker_nodes_subnets="REPLACE_WITH_WORKER_NODES_SUBNET_IDS",
    service_subnet="REPLACE_WITH_SERVICE_SUBNET_ID",
    external_svc_net="REPLACE_WITH_EXTERNAL_NETWORK_ID",
)
"""The manifests' values: ``docs/install.md`` says where each comes from."""


def neutron_sections(site: Site) -> str:
    """``[neutron]`` and ``[neutron_defaults]`` (without the Services' lines)."""
    auth = "".join(f"{k} = {v}\n" for k, v in site.neutron)
    return f"""\
[neutron]
{auth}
[neutron_defaults]
project = {site.project}
pod_subnet = {site.pod_subnet}
pod_security_groups = {site.pod_security_groups}
cluster_id = {site.cluster_id}
ovs_bridge = br-int
"""


def service_options(site: Site) -> str:
    """The ``[neutron_defaults]`` lines that turn Services (Octavia) on, and Octavia's
    endpoint override when there is one."""
    if not site.service_subnet:
        return ""
    text = f"service_subnet = {site.service_subnet}\nexternal_svc_net = {site.external_svc_net}\n"
    if site.octavia_endpoint:
        text += f"\n[octavia_defaults]\nendpoint_override = {site.octavia_endpoint}\n"
    return text


def kuryr_conf(site: Site, layout: Layout, *, header: str) -> str:
    """The one kuryr.conf of the controller and the daemon (upstream option names)."""
    return f"""\
# {header}
{neutron_sections(site)}{service_options(site)}
[kubernetes]
# mixed: bare-metal nodes get ovs VIFs (a port bound to the node, plugged into br-int);
# a node whose InternalIP is a trunk parent's address on a worker-nodes subnet (a VM)
# gets vlan VIFs (subports of its trunk).
pod_vif_driver = mixed
vif_pool_driver = neutron
controller_ha = true
leader_lease_namespace = {NAMESPACE}

[pod_vif_nested]
worker_nodes_subnets = {site.worker_nodes_subnets}

[vif_pool]
ports_pool_min = 5
ports_pool_batch = 10
ports_pool_max = 0

[health_server]
host = {layout.listen_host}
port = {CONTROLLER_HEALTH_PORT}

[cni_daemon]
socket_path = {layout.socket_path}
metrics_address = {layout.listen_host}:{DAEMON_HEALTH_PORT}
ovsdb_connection = unix:{layout.ovsdb_socket}
bridge = br-int
"""


def controller_args(layout: Layout, kubeconfig: str | None = None) -> list[str]:
    """``kuryr`` arguments of the controller. No kubeconfig: in-cluster ServiceAccount."""
    args = ["controller", "--config-file", layout.conf_path]
    return [*args, "--kubeconfig", kubeconfig] if kubeconfig else args


def daemon_args(layout: Layout, node_name: str, kubeconfig: str | None = None) -> list[str]:
    """``kuryr`` arguments of the daemon; ``node_name`` is the node's name (the manifest
    passes ``$(KURYR_NODE_NAME)``, from the downward API)."""
    args = ["daemon", "--config-file", layout.conf_path, "--node-name", node_name]
    return [*args, "--kubeconfig", kubeconfig] if kubeconfig else args


def install_cni_args(layout: Layout, host_root: str) -> list[str]:
    """``kuryr`` arguments of the daemon's init container: the plugin, a self-contained
    runtime for it and the conflist, into the host's directories mounted under
    ``host_root``."""
    return [
        "deploy",
        "install-cni",
        "--host-root",
        host_root,
        "--bin-dir",
        layout.cni_bin_dir,
        "--conf-dir",
        layout.cni_conf_dir,
        "--bundle-dir",
        layout.cni_bundle_dir,
        "--socket",
        layout.socket_path,
    ]
