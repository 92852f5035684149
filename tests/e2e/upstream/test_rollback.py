"""``kuryr takeover rollback`` against a private API emulator (no sandbox): refused while a
controller of ours holds the Lease (nothing changed then); otherwise every KuryrPort goes
back to upstream's format (a nested pod's as ``VIFVlanNested``) and upstream's CRD spec is
restored, objects kept."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.kubeapi import KubeApi, create_namespace
from fixtures.kubeapi import KubeClient as SyncClient
from kuryr_k8s.cli.main import main
from kuryr_k8s.controller.crds import REPLACED_SPEC, upgrade_crds
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.resources import CRDS, KURYRPORTS, LEASES
from kuryr_k8s.model.kuryrport import crd_manifests, upstream_vifs
from kuryr_k8s.model.vif import from_os_vif

DATA = Path(__file__).parents[2] / "fixtures" / "upstream"
NAME = "kuryrports.openstack.org"
GENERATED = json.loads((DATA / "os-vif-primitives-generated.json").read_text())
SUBNETS = {"10.20.1.193": "3c01b96f-c65d-42d1-84f8-d911756b15a3"}


def _upstream_crd() -> dict[str, Any]:
    import yaml

    return dict(
        next(d for d in yaml.safe_load_all((DATA / "kuryrport-crd-10.0.0.yaml").read_text()) if d)
    )


@pytest.fixture
async def client(kube_api: KubeApi) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_settings(load_kubeconfig(kube_api.kubeconfig)) as c:
        try:
            await c.get(CRDS, NAME)
            pytest.skip(f"{NAME} is installed on this cluster already; needs a fresh one")
        except NotFound:
            pass
        yield c
        with contextlib.suppress(NotFound):
            await c.delete(CRDS, NAME)
        with contextlib.suppress(NotFound):
            await c.delete(LEASES, "kuryr-controller-rollback-test", "default")


async def _served(c: KubeClient, ns: str) -> None:
    for _ in range(100):
        try:
            await c.list(KURYRPORTS, namespace=ns)
            return
        except NotFound:
            await asyncio.sleep(0.1)


async def _kuryrport(c: KubeClient, ns: str, name: str, vif: dict[str, Any]) -> None:
    kp = await c.create(
        KURYRPORTS,
        {
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrPort",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podUid": f"uid-{name}", "podNodeName": "node-a"},
        },
        namespace=ns,
    )
    kp["status"] = {"state": "Active", "vifs": {"eth0": {"default": True, "vif": vif}}}
    await c.replace(KURYRPORTS, kp, subresource="status")


def _rollback(kube_api: KubeApi, *extra: str) -> int:
    return main(
        [
            "takeover",
            "rollback",
            "--kubeconfig",
            str(kube_api.kubeconfig),
            "--lease-namespace",
            "default",
            "--lease-name",
            "kuryr-controller-rollback-test",
            *extra,
        ]
    )


async def test_rollback_refuses_then_converts_back(
    client: KubeClient,
    kube_api: KubeApi,
    kube_client: SyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = create_namespace(kube_client, "kuryr-rollback")
    await client.create(CRDS, _upstream_crd())
    await upgrade_crds(client, crd_manifests())  # what our leader does at start
    await _served(client, ns)
    ours = from_os_vif(GENERATED["ovs"], SUBNETS).to_dict()
    await _kuryrport(client, ns, "pod-a", ours)
    vlan = from_os_vif(GENERATED["vlan"], SUBNETS).to_dict()
    await _kuryrport(client, ns, "pod-nested", vlan)

    # a controller of ours holds the Lease: refused
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await client.create(
        LEASES,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "kuryr-controller-rollback-test", "namespace": "default"},
            "spec": {"holderIdentity": "ctl-1", "leaseDurationSeconds": 15, "renewTime": now},
        },
        namespace="default",
    )
    assert await asyncio.to_thread(_rollback, kube_api) == 2
    assert "ctl-1" in capsys.readouterr().err
    lease = await client.get(LEASES, "kuryr-controller-rollback-test", "default")
    lease["spec"]["holderIdentity"] = None  # released, as our controller does on stop
    await client.replace(LEASES, lease)

    assert await asyncio.to_thread(_rollback, kube_api) == 0
    crd = await client.get(CRDS, NAME)
    assert "subresources" not in crd["spec"]["versions"][0]
    assert REPLACED_SPEC not in (crd["metadata"].get("annotations") or {})
    await _served(client, ns)
    kp = await client.get(KURYRPORTS, "pod-a", ns)
    prim = upstream_vifs(kp)["eth0"]["vif"]
    assert prim["versioned_object.data"]["vif_name"] == "tap5f1e2d3c-4b"
    assert from_os_vif(copy.deepcopy(prim), SUBNETS).port_id == ours["portId"]
    nested = upstream_vifs(await client.get(KURYRPORTS, "pod-nested", ns))["eth0"]["vif"]
    assert nested["versioned_object.name"] == "VIFVlanNested"
    assert from_os_vif(nested, SUBNETS) == from_os_vif(GENERATED["vlan"], SUBNETS)
    # upstream writes status through the main resource again
    kp["status"]["vifs"]["eth0"]["default"] = False
    assert (await client.replace(KURYRPORTS, kp))["status"]["vifs"]["eth0"]["default"] is False
    # idempotent: a second run has nothing to do
    assert await asyncio.to_thread(_rollback, kube_api) == 0
    assert "0 KuryrPort(s) to convert" in capsys.readouterr().out
    kube_client.delete(f"/api/v1/namespaces/{ns}")
