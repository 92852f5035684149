"""Fixtures of the controller's functional tests (see ``harness.py``).

``world`` gives a test: the sandbox, a private Kubernetes API and a namespace in it, a
random cluster id, Neutron's view of that cluster id, and ``start_controller()``. At
teardown every controller is stopped, the pods are deleted and every port still tagged
with the cluster id (pool ports) is deleted.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fixtures.kubeapi import KubeApi, create_namespace
from fixtures.sandbox import NeutronTracker, Sandbox
from functional.controller.harness import (
    ControllerProcess,
    Kube,
    Ports,
    free_port,
    private_api,
    write_conf,
)

LOG_DIR = Path(os.environ.get("KURYR_TEST_LOG_DIR", "/tmp/kuryr-controller-tests"))
"""Controller logs outlive pytest's tmp dirs: ``<dir>/<cluster id>/controller-N.log``."""


@dataclass
class World:
    sandbox: Sandbox
    api: KubeApi
    kube: Kube
    cluster_id: str
    ports: Ports
    tmp: Path
    extra_tag: str
    pool: bool = True
    controllers: list[ControllerProcess] = field(default_factory=list)

    @property
    def node(self) -> str:
        return str(self.sandbox.settings.hostname)

    def start_controller(
        self,
        *,
        pool: bool | None = None,
        gc_grace: float = 3600.0,
        pod_subnet: str | None = None,
        pod_vif_driver: str = "neutron-vif",
        worker_subnets: tuple[str, ...] = (),
        pool_batch: int = 10,
        kubernetes_extra: str = "",
    ) -> ControllerProcess:
        n = len(self.controllers)
        port = free_port()
        conf = write_conf(
            self.tmp / f"kuryr-{n}.conf",
            sandbox=self.sandbox,
            cluster_id=self.cluster_id,
            extra_tag=self.extra_tag,
            lease_namespace=self.kube.ns,
            health_port=port,
            pool=self.pool if pool is None else pool,
            gc_grace=gc_grace,
            pod_subnet=pod_subnet,
            pod_vif_driver=pod_vif_driver,
            worker_subnets=worker_subnets,
            pool_batch=pool_batch,
            kubernetes_extra=kubernetes_extra,
        )
        log = LOG_DIR / self.cluster_id / f"controller-{n}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        ctl = ControllerProcess(conf, self.api.kubeconfig, log, port)
        self.controllers.append(ctl)
        return ctl.start()


@pytest.fixture(scope="module")
def module_api(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    with private_api(kube_api, tmp_path_factory.mktemp("ctl-api")) as api:
        yield api


@pytest.fixture
def world(
    sandbox: Sandbox, module_api: KubeApi, neutron: NeutronTracker, tmp_path: Path
) -> Iterator[World]:
    client = module_api.client()
    node = str(sandbox.settings.hostname)
    # Pods bound to a Node that does not exist are force-deleted by the pod GC.
    r = client.post("/api/v1/nodes", {"metadata": {"name": node}})
    assert r.status_code in (201, 409), r.text
    ns = create_namespace(client, "kuryr-ctl")
    cluster_id = f"t{secrets.token_hex(5)}"
    w = World(
        sandbox,
        module_api,
        Kube(client, ns),
        cluster_id,
        Ports(sandbox.conn, cluster_id),
        tmp_path,
        extra_tag=neutron.tag,
    )
    try:
        yield w
    finally:
        for ctl in w.controllers:
            ctl.kill()
        for pod in w.kube.pods():
            client.patch(
                f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}",
                {"metadata": {"finalizers": None}},
            )
            w.kube.delete_pod(pod["metadata"]["name"])
        client.delete(f"/api/v1/namespaces/{ns}")
        client.close()
        w.ports.delete_all()
