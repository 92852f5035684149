"""kubectl, unchanged, as a real client: apply, get (-o yaml, -o wide, -w), describe, delete."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fixtures.kubeapi import KubeApi, KubeClient
from kubeapi_conformance.helpers import eventually, ok
from kuryr_k8s.model.kuryrport import crd_manifests

DATA = Path(__file__).parent / "data"
KUBECTL = shutil.which("kubectl")
KP_CRD = "kuryrports.openstack.org"

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


class Kubectl:
    """kubectl bound to the test cluster, a private discovery cache and one namespace."""

    def __init__(self, kubeconfig: Path, cache: Path, namespace: str) -> None:
        self.base = [
            str(KUBECTL),
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(cache),
            "-n",
            namespace,
        ]

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.base, *args], input=stdin, capture_output=True, text=True, timeout=120
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.base, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture
def kubectl(kube_api: KubeApi, tmp_path: Path, ns: str) -> Kubectl:
    return Kubectl(kube_api.kubeconfig, tmp_path / "cache", ns)


def test_apply_get_describe_delete_seed_pod(
    kubectl: Kubectl, kube_client: KubeClient, ns: str
) -> None:
    seed = str(DATA / "busybox-sleep.yaml")
    assert "pod/busybox-sleep created" in kubectl("apply", "-f", seed).stdout
    assert "pod/busybox-sleep unchanged" in kubectl("apply", "-f", seed).stdout
    got = yaml.safe_load(kubectl("get", "pod", "busybox-sleep", "-o", "yaml").stdout)
    assert got["metadata"]["name"] == "busybox-sleep"
    assert got["spec"]["containers"][0]["command"] == ["sleep", "1000000"]
    assert got["status"]["phase"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"]["annotations"]

    table = kubectl("get", "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[0] == "busybox-sleep"
    assert table[1].split()[1] in ("0/1", "1/1")
    wide = kubectl("get", "pods", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]

    described = kubectl("describe", "pod", "busybox-sleep").stdout
    assert "Name:" in described and "busybox-sleep" in described
    assert re.search(rf"^Namespace:\s+{ns}$", described, re.MULTILINE)
    assert "Image:" in described and "busybox" in described

    labelled = (
        (DATA / "busybox-sleep.yaml")
        .read_text()
        .replace("  name: busybox-sleep", "  name: busybox-sleep\n  labels:\n    app: sleepy")
    )
    assert "pod/busybox-sleep configured" in kubectl("apply", "-f", "-", stdin=labelled).stdout
    assert (
        kubectl("get", "pods", "-l", "app=sleepy", "-o", "name").stdout.strip()
        == "pod/busybox-sleep"
    )

    assert (
        'pod "busybox-sleep" deleted'
        in kubectl("delete", "pod", "busybox-sleep", "--grace-period=1").stdout
    )
    assert kube_client.wait_gone(f"/api/v1/namespaces/{ns}/pods/busybox-sleep", 60)


@pytest.fixture
def watcher(kubectl: Kubectl) -> Iterator[subprocess.Popen[str]]:
    proc = kubectl.popen("get", "pods", "-w")
    yield proc
    proc.terminate()
    proc.wait(10)


def test_get_watch_shows_events(kubectl: Kubectl, watcher: subprocess.Popen[str]) -> None:
    time.sleep(1.0)
    kubectl("apply", "-f", str(DATA / "busybox-sleep.yaml"))
    kubectl("label", "pod", "busybox-sleep", "watched=yes")
    kubectl("delete", "pod", "busybox-sleep", "--grace-period=1", "--wait=false")
    time.sleep(2.0)
    watcher.terminate()
    out, _ = watcher.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines() if line.strip()]
    names = [r[0] for r in rows if r[0] != "NAME"]
    assert names.count("busybox-sleep") >= 2, out


@pytest.fixture
def kuryrport_crd(kubectl: Kubectl, kube_client: KubeClient, tmp_path: Path) -> Iterator[None]:
    """The product's own KuryrPort CRD (``kuryr_k8s/model/crds``), as the controller
    installs it; left alone if the cluster already has it."""
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{KP_CRD}"
    preexisting = kube_client.get(path).status_code == 200
    if not preexisting:
        manifest = tmp_path / "kuryrports-crd.yaml"
        manifest.write_text(yaml.safe_dump_all(crd_manifests()))
        kubectl("apply", "-f", str(manifest))

    def established() -> bool:
        conds = (ok(kube_client.get(path)).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

    eventually(established, 60, "KuryrPort CRD established")
    yield
    if not preexisting:
        kube_client.delete(path)


def test_kuryrport_printer_columns(kubectl: Kubectl, kuryrport_crd: None, ns: str) -> None:
    def applied() -> bool:
        return kubectl("apply", "-f", str(DATA / "kuryrport.yaml"), check=False).returncode == 0

    eventually(applied, 60, "KuryrPort accepted")
    status = {
        "status": {
            "state": "Active",
            "vifs": {
                "eth0": {
                    "default": True,
                    "vif": {"portId": "p-1", "ips": [{"address": "10.0.0.5"}]},
                }
            },
        }
    }
    kubectl(
        "patch",
        "kuryrport",
        "busybox-sleep",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    lines = kubectl("get", "kuryrports").stdout.splitlines()
    assert lines[0].split() == ["NAME", "POD", "NODE", "PORT", "ID", "IP", "STATE", "AGE"]
    assert lines[1].split()[:6] == [
        "busybox-sleep",
        "busybox-sleep",
        "node-1",
        "p-1",
        "10.0.0.5",
        "Active",
    ]
    assert (
        kubectl("get", "kp", "-o", "name").stdout.strip() == "kuryrport.openstack.org/busybox-sleep"
    )
    kubectl("delete", "kp", "busybox-sleep")


def test_imperative_create_commands(kubectl: Kubectl, kube_client: KubeClient, ns: str) -> None:
    """kubectl's typed generators send protobuf bodies."""
    kubectl("create", "configmap", "c1", "--from-literal=a=b", "--from-literal=empty=")
    kubectl("create", "secret", "generic", "s1", "--from-literal=a=b", "--type=example.com/t")
    kubectl("create", "serviceaccount", "sa1")
    cm = ok(kube_client.get(f"/api/v1/namespaces/{ns}/configmaps/c1"))
    assert cm["data"] == {"a": "b", "empty": ""}
    assert "generateName" not in cm["metadata"]
    secret = ok(kube_client.get(f"/api/v1/namespaces/{ns}/secrets/s1"))
    assert secret["data"] == {"a": "Yg=="}
    assert secret["type"] == "example.com/t"
    assert (
        ok(kube_client.get(f"/api/v1/namespaces/{ns}/serviceaccounts/sa1"))["metadata"]["name"]
        == "sa1"
    )
    extra = f"{ns}-extra"
    kubectl("create", "namespace", extra)
    try:
        assert ok(kube_client.get(f"/api/v1/namespaces/{extra}"))["status"]["phase"] == "Active"
    finally:
        kubectl("delete", "namespace", extra, "--wait=false")
