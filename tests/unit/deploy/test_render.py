"""deploy/ is what ``kuryr deploy render`` produces from its sources, and says what the
sources say (CRDs, arguments, ports, conflist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kuryr_k8s.cli.main import main as kuryr
from kuryr_k8s.cni.install import CONFLIST_NAME
from kuryr_k8s.controller.settings import KubernetesSettings
from kuryr_k8s.deploy import manifests, spec
from kuryr_k8s.model import kuryrloadbalancer, kuryrnetwork, kuryrport
from kuryr_k8s.model.config import ConfigFile

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def _docs(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / rel).read_text()) if d]


def _container(doc: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    pod = doc["spec"]["template"]["spec"]
    containers = pod["initContainers"] if init else pod["containers"]
    return next(c for c in containers if c["name"] == name)


def test_committed_files_are_the_rendering() -> None:
    for rel, text in manifests.render().items():
        assert (DEPLOY / rel).read_text() == text, f"deploy/{rel}: run 'kuryr deploy render'"


def test_render_check_reports_a_stale_file(tmp_path: Path, capsys: Any) -> None:
    assert kuryr(["deploy", "render", "--out", str(tmp_path)]) == 0
    assert kuryr(["deploy", "render", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "base" / "crds.yaml").write_text("stale\n")
    assert kuryr(["deploy", "render", "--out", str(tmp_path), "--check"]) == 1
    assert "base/crds.yaml" in capsys.readouterr().err
    assert (tmp_path / "base" / "crds.yaml").read_text() == "stale\n"  # --check writes nothing


def test_crds_are_the_controllers_own() -> None:
    want = [
        *kuryrport.crd_manifests(),
        *kuryrnetwork.crd_manifests(),
        kuryrloadbalancer.crd_manifest(),
    ]
    assert _docs("base/crds.yaml") == want
    assert {d["metadata"]["name"] for d in want} == {
        "kuryrports.openstack.org",
        "kuryrnetworks.openstack.org",
        "kuryrnetworkpolicies.openstack.org",
        "kuryrloadbalancers.openstack.org",
    }


def test_every_file_kustomize_lists_exists_and_every_object_is_in_kuryr_system() -> None:
    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    kinds = []
    for rel in base["resources"]:
        for doc in _docs(f"base/{rel}"):
            kinds.append(doc["kind"])
            if doc["kind"] not in ("Namespace", "CustomResourceDefinition") and not doc[
                "kind"
            ].startswith("Cluster"):
                assert doc["metadata"]["namespace"] == spec.NAMESPACE, doc["metadata"]
    assert {"Namespace", "Deployment", "DaemonSet", "ServiceAccount", "ClusterRole"} <= set(kinds)
    top = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for gen in (*top["configMapGenerator"], *top["secretGenerator"]):
        for rel in gen["files"]:
            assert (DEPLOY / rel).is_file()


def test_controller_deployment() -> None:
    (dep,) = _docs("base/controller.yaml")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kuryr-controller"
    c = _container(dep, "controller")
    assert c["command"] == [spec.KURYR]
    assert c["args"] == ["controller", "--config-file", "/etc/kuryr/kuryr.conf"]
    assert c["ports"][0]["containerPort"] == KubernetesSettings().health_server_port
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"/etc/kuryr", spec.CLOUDS_DIR}


def test_daemon_daemonset() -> None:
    (ds,) = _docs("base/daemon.yaml")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert "hostPID" not in pod
    assert pod["serviceAccountName"] == "kuryr-daemon"
    c = _container(ds, "daemon")
    assert c["args"] == spec.daemon_args(spec.IN_POD, "$(KURYR_NODE_NAME)")
    env = {e["name"]: e for e in c["env"]}
    assert env["KURYR_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "SYS_ADMIN"]
    assert "privileged" not in c["securityContext"]
    init = _container(ds, "install-cni", init=True)
    assert init["args"] == spec.install_cni_args(spec.IN_POD, manifests.HOST_ROOT)
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Every host directory the init container writes is a hostPath of the same path.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in init["volumeMounts"]:
        host = volumes[m["name"]]["hostPath"]["path"]
        assert m["mountPath"] == manifests.HOST_ROOT + host
    assert {m["mountPath"].removeprefix(manifests.HOST_ROOT) for m in init["volumeMounts"]} == {
        spec.IN_POD.cni_bin_dir,
        spec.IN_POD.cni_conf_dir,
        spec.IN_POD.cni_bundle_dir,
    }
    # The daemon's socket directory is the node's, where the host's kuryr-cni looks.
    daemon_mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    run_kuryr = spec.IN_POD.socket_path.rsplit("/", 1)[0]
    assert daemon_mounts[run_kuryr]["hostPath"]["path"] == run_kuryr
    ovs = spec.IN_POD.ovsdb_socket.rsplit("/", 1)[0]
    assert daemon_mounts[ovs]["hostPath"]["path"] == ovs


def test_conflist_name_is_upstreams() -> None:
    assert CONFLIST_NAME == "10-kuryr.conflist"
    assert CONFLIST_NAME in (DEPLOY / "base" / "daemon.yaml").read_text()


def test_the_configmap_kuryr_conf_is_valid_for_both_components() -> None:
    """deploy/kuryr.conf parses and names every option the way the components read it
    (placeholders aside): the daemon's settings load from it without error."""
    from kuryr_k8s.cni.daemon.main import DaemonSettings

    path = DEPLOY / "kuryr.conf"
    settings = DaemonSettings.from_config(ConfigFile.load(path))
    assert str(settings.socket_path) == spec.IN_POD.socket_path
    assert settings.metrics_address == f"0.0.0.0:{spec.DAEMON_HEALTH_PORT}"
    conf = ConfigFile.load(path)
    assert conf.get_str("neutron", "cloud") == spec.CLOUD
    assert conf.get_str("kubernetes", "leader_lease_namespace") == spec.NAMESPACE


def test_config_check_accepts_the_configmaps_kuryr_conf(capsys: Any) -> None:
    assert kuryr(["config", "check", "--config-file", str(DEPLOY / "kuryr.conf")]) == 0
    out = capsys.readouterr().out
    assert "leader_lease_namespace" in out and "ignored" not in out


def test_clouds_template_holds_no_credentials() -> None:
    clouds = yaml.safe_load((DEPLOY / "clouds.yaml").read_text())
    auth = clouds["clouds"][spec.CLOUD]["auth"]
    assert all(v.startswith("REPLACE_WITH_") for k, v in auth.items() if k != "auth_url")


def test_image_tag_matches_the_manifests() -> None:
    top = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (image,) = top["images"]
    assert f"{image['name']}:{image['newTag']}" == spec.IMAGE
    for rel in ("base/controller.yaml", "base/daemon.yaml"):
        for doc in _docs(rel):
            pod = doc["spec"]["template"]["spec"]
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                assert c["image"] == spec.IMAGE


def test_image_entry_point_is_what_the_manifests_call() -> None:
    containerfile = (DEPLOY / "image" / "Containerfile").read_text()
    (entry,) = [ln for ln in containerfile.splitlines() if ln.startswith("ENTRYPOINT")]
    assert yaml.safe_load(entry.removeprefix("ENTRYPOINT")) == [spec.KURYR]
    build = (DEPLOY / "image" / "build").read_text()
    assert f'ln -sf /opt/kuryr/bin/kuryr "$1{spec.KURYR}"' in build
    assert f"{spec.KURYR} --version" in build  # the build runs it once inside the image
