"""The controller under the manifests' ServiceAccount and RBAC (deploy/base/rbac.yaml), on a
private emulator that enforces RBAC: it wires a pod with no Forbidden; and with one
permission removed (patch on kuryrports/status) the error it logs names the verb, the
resource, the namespace and the ServiceAccount to fix.

The ServiceAccount's kubeconfig is made as the sandbox makes its components' ones
(``kuryr_k8s.sandbox.kubeapi.accounts``): the manifests applied by the administrator, a
token from TokenRequest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from functional.controller.conftest import LOG_DIR, World
from functional.controller.harness import (
    ControllerProcess,
    allocated,
    free_port,
    wait_for,
    write_conf,
)
from kuryr_k8s.sandbox.kubeapi.accounts import (
    CRD_DIR,
    RBAC_MANIFEST,
    load_documents,
    service_account_kubeconfig,
)

pytestmark = pytest.mark.functional
Obj = dict[str, Any]
NAMESPACE, ACCOUNT = "kuryr-system", "kuryr-controller"


def _without(docs: list[Obj], resource: str, verb: str) -> list[Obj]:
    """The manifests with ``verb`` on ``resource`` taken out of the controller's ClusterRole."""
    out = []
    for doc in docs:
        if doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == ACCOUNT:
            rules = []
            for rule in doc["rules"]:
                if resource in rule.get("resources", []):
                    rule = {**rule, "verbs": [v for v in rule["verbs"] if v != verb]}
                if rule["verbs"]:
                    rules.append(rule)
            doc = {**doc, "rules": rules}
        out.append(doc)
    return out


def _start(world: World, manifests: list[Obj]) -> ControllerProcess:
    kubeconfig = service_account_kubeconfig(
        world.api.kubeconfig,
        NAMESPACE,
        ACCOUNT,
        world.tmp / "controller.kubeconfig",
        manifests,
        load_documents(*sorted(CRD_DIR.glob("*.yaml"))),
    )
    port = free_port()
    conf = write_conf(
        world.tmp / "kuryr.conf",
        sandbox=world.sandbox,
        cluster_id=world.cluster_id,
        extra_tag=world.extra_tag,
        lease_namespace=NAMESPACE,
        health_port=port,
        pool=False,
    )
    # The Role of deploy/base/rbac.yaml covers the Lease named kuryr-controller only.
    text = re.sub(r"leader_lease_name = .*", f"leader_lease_name = {ACCOUNT}", conf.read_text())
    conf.write_text(text)
    log = LOG_DIR / world.cluster_id / "controller-rbac.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ctl = ControllerProcess(conf, kubeconfig, log, port)
    world.controllers.append(ctl)
    return ctl.start()


def _forbidden_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "Forbidden" in line]


def test_the_controller_does_its_job_under_its_service_account(world: World) -> None:
    ctl = _start(world, load_documents(RBAC_MANIFEST))
    ctl.wait_role("leader")
    world.kube.create_pod("rbac-1", world.node)
    wait_for(
        "the pod's KuryrPort allocated",
        lambda: any(allocated(k) for k in world.kube.kuryrports()),
    )
    world.kube.delete_pod("rbac-1")
    wait_for("the pod and its KuryrPort gone", lambda: not world.kube.kuryrports())
    wait_for("its port deleted", lambda: world.ports.all() == [])
    assert ctl.alive()
    assert _forbidden_lines(ctl.log) == []


def test_a_removed_permission_is_named_in_the_error(world: World) -> None:
    ctl = _start(world, _without(load_documents(RBAC_MANIFEST), "kuryrports/status", "patch"))
    ctl.wait_role("leader")
    world.kube.create_pod("rbac-2", world.node)
    expected = (
        f'ServiceAccount {NAMESPACE}/{ACCOUNT} lacks "patch" on "kuryrports/status" in API group '
        f'"openstack.org" in namespace "{world.kube.ns}"'
    )
    wait_for("the error naming the missing permission", lambda: expected in ctl.log.read_text())
    lines = [line for line in _forbidden_lines(ctl.log) if expected in line]
    assert any("ERROR" in line for line in lines), lines
    assert (
        f'User "system:serviceaccount:{NAMESPACE}:{ACCOUNT}" cannot patch resource '
        f'"kuryrports/status" in API group "openstack.org" in the namespace "{world.kube.ns}"'
    ) in lines[0]
    assert not any(allocated(k) for k in world.kube.kuryrports())
    assert ctl.alive(), "a missing permission is reported, not a crash"
