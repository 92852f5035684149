"""The sandbox runs the controller and the daemon as the manifests do: the same
arguments, the same kuryr.conf and the same CNI install, read from the committed
deploy/ files and compared with what ``sandbox/kuryr_components.py`` launches.

What may differ is only what a site supplies (ids, how to reach Neutron and Octavia)
and where things live (the :class:`~kuryr_k8s.deploy.spec.Layout` paths and listen
address), and the test maps the latter explicitly."""

from __future__ import annotations

import configparser
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuryr_k8s.deploy import spec
from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.kuryr_components import (
    KuryrController,
    KuryrDaemon,
    kuryr_argv,
    kuryr_conf,
    layout,
)
from kuryr_k8s.sandbox.openstack.topology import Topology
from kuryr_k8s.sandbox.settings import settings_from_env

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"

SITE_OPTIONS = {
    ("neutron", "*"),
    ("neutron_defaults", "project"),
    ("neutron_defaults", "pod_subnet"),
    ("neutron_defaults", "pod_security_groups"),
    ("neutron_defaults", "cluster_id"),
    ("neutron_defaults", "service_subnet"),
    ("neutron_defaults", "external_svc_net"),
    ("pod_vif_nested", "worker_nodes_subnets"),
    ("octavia_defaults", "endpoint_override"),
}
"""What an operator fills in (docs/install.md) and the sandbox takes from its topology."""


def _ctx(tmp_path: Path, octavia: bool) -> Context:
    settings = dataclasses.replace(
        settings_from_env(), state_dir=tmp_path / "state", kuryr=True, octavia=octavia
    )
    return manager.context(settings)


TOPO = Topology(
    project_id="p-id",
    net0_id="n0",
    subnet0_id="s0-id",
    net1_id="n1",
    subnet1_id="s1-id",
    router_id="r",
    default_sg_id="sg-id",
    subnet0_cidr="10.0.0.0/24",
    subnet1_cidr="10.1.0.0/24",
    mtu=1442,
    service_subnet_id="svc-id",
    external_net_id="ext-id",
)


def _manifest_container(rel: str, name: str, init: bool = False) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((DEPLOY / rel).read_text()) if d]
    pod = doc["spec"]["template"]["spec"]
    return next(c for c in pod["initContainers" if init else "containers"] if c["name"] == name)


def _relocate(values: list[str], ctx: Context) -> list[str]:
    """The manifests' in-pod paths and listen address replaced by the sandbox's."""
    mapping = {
        getattr(spec.IN_POD, f.name): getattr(layout(ctx), f.name)
        for f in dataclasses.fields(spec.Layout)
    }
    return [mapping.get(v, v) for v in values]


def _sandbox_args(argv: list[str]) -> list[str]:
    prefix = kuryr_argv()
    assert argv[: len(prefix)] == prefix
    return argv[len(prefix) :]


def test_controller_runs_with_the_manifests_arguments(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, octavia=False)
    c = _manifest_container("base/controller.yaml", "controller")
    kubeconfig = tmp_path / "sa.kubeconfig"
    sandbox = KuryrController(ctx).args(kubeconfig)
    # In a pod: no --kubeconfig (the ServiceAccount's in-cluster config).
    assert sandbox == [*_relocate(c["args"], ctx), "--kubeconfig", str(kubeconfig)]
    assert c["command"] == [spec.KURYR]


def test_daemon_runs_with_the_manifests_arguments(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, octavia=False)
    c = _manifest_container("base/daemon.yaml", "daemon")
    kubeconfig = tmp_path / "sa.kubeconfig"
    args = [ctx.settings.hostname if a == "$(KURYR_NODE_NAME)" else a for a in c["args"]]
    want = [*_relocate(args, ctx), "--kubeconfig", str(kubeconfig)]
    assert KuryrDaemon(ctx).args(kubeconfig) == want


def test_cni_is_installed_by_the_init_containers_command(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, octavia=False)
    init = _manifest_container("base/daemon.yaml", "install-cni", init=True)
    args = _relocate(init["args"], ctx)
    host_root = args.index("--host-root") + 1
    assert args[host_root] == "/host"
    args[host_root] = "/"  # the sandbox is the host
    assert KuryrDaemon(ctx).install_args() == args


def _ini(text: str) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {(s, k): v for s in parser.sections() for k, v in parser.items(s)}


@pytest.mark.parametrize("octavia", [False, True])
def test_kuryr_conf_is_the_configmaps_with_site_values(tmp_path: Path, octavia: bool) -> None:
    ctx = _ctx(tmp_path, octavia=octavia)
    manifest = _ini((DEPLOY / "kuryr.conf").read_text())
    sandbox = _ini(kuryr_conf(ctx, TOPO))

    def site(key: tuple[str, str]) -> bool:
        return key in SITE_OPTIONS or (key[0], "*") in SITE_OPTIONS

    ours = {k: v for k, v in manifest.items() if not site(k)}
    theirs = {k: v for k, v in sandbox.items() if not site(k)}
    relocated = {k: _relocate_value(v, ctx) for k, v in ours.items()}
    assert theirs == relocated
    # The site values are the sandbox topology's.
    assert sandbox[("neutron_defaults", "pod_subnet")] == TOPO.subnet1_id
    assert sandbox[("pod_vif_nested", "worker_nodes_subnets")] == TOPO.subnet0_id
    assert (("neutron_defaults", "service_subnet") in sandbox) == octavia


def _relocate_value(value: str, ctx: Context) -> str:
    for f in dataclasses.fields(spec.Layout):
        value = value.replace(getattr(spec.IN_POD, f.name), getattr(layout(ctx), f.name))
    return value


def test_only_layout_fields_are_relocated(tmp_path: Path) -> None:
    """The mapping itself: the sandbox's layout differs from the pods' in every field
    (so a field the manifests use verbatim in the sandbox would show up above)."""
    ctx = _ctx(tmp_path, octavia=False)
    for f in dataclasses.fields(spec.Layout):
        assert getattr(layout(ctx), f.name) != getattr(spec.IN_POD, f.name), f.name
