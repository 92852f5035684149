"""The Kubernetes API accepts deploy/ as kubectl sends it: ``kubectl apply
--dry-run=server -k deploy/`` succeeds for every object, then a real apply creates them
and a second apply changes nothing.

Against a private emulator started here (the objects are cluster-wide, CRDs and RBAC
included, so the shared test API is left alone)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kuryr_k8s.sandbox.kubeapi import EmulatorProcess

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
TIMEOUT = 300
pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed (as test_kubectl.py)"
)


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("deploy-api")
    proc = EmulatorProcess(work / "kubeconfig", log_file=work / "emulator.log")
    proc.start()
    try:
        yield proc.kubeconfig
    finally:
        proc.stop()


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    out = subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def rendered() -> list[dict[str, object]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _line(doc: dict[str, object]) -> str:
    """How kubectl apply names an object: ``deployment.apps/kuryr-controller``."""
    api = str(doc["apiVersion"])
    group = api.split("/")[0] if "/" in api else ""
    kind = str(doc["kind"]).lower()
    name = doc["metadata"]["name"]  # type: ignore[index]
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def test_server_accepts_every_object_then_applies_them_idempotently(kubeconfig: Path) -> None:
    docs = rendered()
    kinds = {str(d["kind"]) for d in docs}
    assert {"Deployment", "DaemonSet", "ConfigMap", "Secret", "CustomResourceDefinition"} <= kinds
    # Namespaced objects need their namespace to exist, even for a dry run.
    kubectl(kubeconfig, "apply", "-f", str(DEPLOY / "base" / "namespace.yaml"))

    out = kubectl(kubeconfig, "apply", "--dry-run=server", "-k", str(DEPLOY))
    for doc in docs:
        line = _line(doc)
        assert any(
            ln.startswith(line + " ") and "(server dry run)" in ln for ln in out.splitlines()
        ), f"{line} not accepted:\n{out}"
    # A dry run stored nothing.
    assert not kubectl(kubeconfig, "get", "daemonsets", "-n", "kuryr-system", "-o", "name").strip()

    first = kubectl(kubeconfig, "apply", "-k", str(DEPLOY))
    assert "deployment.apps/kuryr-controller created" in first, first
    got = kubectl(kubeconfig, "get", "-n", "kuryr-system", "deploy,ds,sa,cm,secret", "-o", "name")
    for want in (
        "deployment.apps/kuryr-controller",
        "daemonset.apps/kuryr-daemon",
        "serviceaccount/kuryr-controller",
        "serviceaccount/kuryr-daemon",
    ):
        assert want in got.split(), got
    again = kubectl(kubeconfig, "apply", "-k", str(DEPLOY))
    changed = [ln for ln in again.splitlines() if ln.strip() and not ln.endswith(" unchanged")]
    assert not changed, again
    # The CRDs the manifests install are the served ones.
    crds = kubectl(kubeconfig, "get", "crd", "-o", "name").split()
    assert "customresourcedefinition.apiextensions.k8s.io/kuryrports.openstack.org" in crds
