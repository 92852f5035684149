"""Our controller upgrades upstream kuryr-kubernetes 10.0.0's ``kuryrports`` CRD in place.

Upstream's CRD has no status subresource and upstream writes ``status`` through the main
resource. After the upgrade every object is still there with the status upstream wrote;
main-resource writes no longer change ``status`` and ``/status`` writes do. The rollback
(upstream's spec back) keeps the objects and their status too.

Runs against a private Kubernetes API emulator (or ``--kubeconfig``: a real cluster that
has no ``kuryrports.openstack.org`` yet). Does not use the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.kubeapi import KubeApi, create_namespace
from fixtures.kubeapi import KubeClient as SyncClient
from kuryr_k8s.controller.crds import REPLACED_SPEC, ensure_crds, upgrade_crds, upgrade_reason
from kuryr_k8s.k8s import KubeClient
from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.k8s.errors import NotFound
from kuryr_k8s.k8s.resources import CRDS, KURYRPORTS
from kuryr_k8s.model.kuryrport import crd_manifests

UPSTREAM_CRD = Path(__file__).parents[2] / "fixtures" / "upstream" / "kuryrport-crd-10.0.0.yaml"
NAME = "kuryrports.openstack.org"
UPSTREAM_STATUS = {
    "vifs": {
        "eth0": {
            "default": True,
            "vif": {"versioned_object.name": "VIFOpenVSwitch", "versioned_object.data": {}},
        }
    }
}


def _upstream_crd() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(UPSTREAM_CRD.read_text()) if d]
    assert docs[0]["metadata"]["name"] == NAME
    return dict(docs[0])


@pytest.fixture
async def client(kube_api: KubeApi) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_settings(load_kubeconfig(kube_api.kubeconfig)) as c:
        try:
            await c.get(CRDS, NAME)
            installed = True
        except NotFound:
            installed = False
        if installed:
            pytest.skip(f"{NAME} is installed on this cluster already; needs a fresh one")
        yield c
        with contextlib.suppress(NotFound):
            await c.delete(CRDS, NAME)


async def _established(c: KubeClient) -> None:
    for _ in range(300):
        crd = await c.get(CRDS, NAME)
        conds = (crd.get("status") or {}).get("conditions") or []
        if any(x["type"] == "Established" and x["status"] == "True" for x in conds):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{NAME} not Established")


async def _served(c: KubeClient, ns: str) -> None:
    """A changed CRD is served a moment later (real apiservers rebuild the handler)."""
    for _ in range(100):
        try:
            await c.list(KURYRPORTS, namespace=ns)
            return
        except NotFound:
            await asyncio.sleep(0.1)


async def test_upgrade_keeps_objects_and_upstream_status_then_rolls_back(
    client: KubeClient, kube_client: SyncClient
) -> None:
    ns = create_namespace(kube_client, "kuryr-crd-upgrade")
    await client.create(CRDS, _upstream_crd())
    await _established(client)
    await _served(client, ns)
    names = [f"pod-{i}" for i in range(3)]
    for name in names:
        kp = await client.create(
            KURYRPORTS,
            {
                "apiVersion": "openstack.org/v1",
                "kind": "KuryrPort",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"podUid": f"uid-{name}", "podNodeName": "node-a"},
            },
            namespace=ns,
        )
        kp["status"] = copy.deepcopy(UPSTREAM_STATUS)  # as upstream: the main resource
        await client.replace(KURYRPORTS, kp)
    assert upgrade_reason(await client.get(CRDS, NAME), crd_manifests()[0]) == (
        "version v1 has no status subresource"
    )

    # every replica's start (ensure_crds) leaves an installed CRD alone; the leader upgrades
    await ensure_crds(client, crd_manifests())
    assert upgrade_reason(await client.get(CRDS, NAME), crd_manifests()[0]) is not None
    await upgrade_crds(client, crd_manifests())

    crd = await client.get(CRDS, NAME)
    assert upgrade_reason(crd, crd_manifests()[0]) is None
    previous = json.loads(crd["metadata"]["annotations"][REPLACED_SPEC])
    assert [v.get("subresources") for v in previous["versions"]] == [None]
    assert previous["versions"][0]["schema"] == _upstream_crd()["spec"]["versions"][0]["schema"]
    await _served(client, ns)
    for name in names:
        kp = await client.get(KURYRPORTS, name, namespace=ns)
        assert kp["status"] == UPSTREAM_STATUS, name
    # main-resource writes leave status alone now; /status writes change it
    kp = await client.get(KURYRPORTS, names[0], namespace=ns)
    kp["status"] = {"vifs": {}, "state": "Pending"}
    kp = await client.replace(KURYRPORTS, kp)
    assert kp["status"] == UPSTREAM_STATUS
    kp["status"] = {"vifs": {}, "state": "Active"}
    kp = await client.replace(KURYRPORTS, kp, subresource="status")
    assert kp["status"] == {"vifs": {}, "state": "Active"}
    # a second start finds nothing to do
    await upgrade_crds(client, crd_manifests())
    assert (await client.get(CRDS, NAME))["metadata"]["resourceVersion"] == crd["metadata"][
        "resourceVersion"
    ]

    # rollback: upstream's spec back in place (docs/migration.md)
    crd = await client.get(CRDS, NAME)
    crd["spec"] = json.loads(crd["metadata"]["annotations"].pop(REPLACED_SPEC))
    await client.replace(CRDS, crd)
    await _served(client, ns)
    kps = {kp["metadata"]["name"]: kp for kp in (await client.list(KURYRPORTS, namespace=ns)).items}
    assert sorted(kps) == names
    assert kps[names[1]]["status"] == UPSTREAM_STATUS
    kp = kps[names[1]]
    kp["status"]["vifs"]["eth0"]["default"] = False  # upstream writes through the main resource
    kp = await client.replace(KURYRPORTS, kp)
    assert kp["status"]["vifs"]["eth0"]["default"] is False
    kube_client.delete(f"/api/v1/namespaces/{ns}")
