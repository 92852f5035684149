"""NetworkPolicy through the controller (``pod_security_groups_driver = policy``) against
the sandbox's real Neutron: a policy's SG reaches the ports of the pods it selects, the
others stay open, and deleting the policy gives the selected pods their open SGs back.
Traffic itself is checked by ``tests/e2e/policy``; this test checks the controller's
part: KuryrPort reconciler + placement + pools keyed by SG set.
"""

from __future__ import annotations

from typing import Any

import pytest

from functional.controller.conftest import World
from functional.controller.harness import converged, port_id_of, wait_for
from kuryr_k8s.controller.policies import OPEN_EGRESS, OPEN_INGRESS

pytestmark = pytest.mark.functional

NP_PATH = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


def _sgs(world: World, name: str) -> set[str]:
    kp = next(k for k in world.kube.kuryrports() if k["metadata"]["name"] == name)
    port = world.sandbox.conn.network.get_port(port_id_of(kp))
    return set(port.security_group_ids)


def _labelled_pod(world: World, name: str, app: str) -> None:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": world.node,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
        },
    }
    r = world.kube.c.post(f"/api/v1/namespaces/{world.kube.ns}/pods", body)
    assert r.status_code == 201, r.text


def _cluster_sg_ids(world: World) -> dict[str, str]:
    tag = f"kuryr.cluster:{world.cluster_id}"
    return {sg.name: sg.id for sg in world.sandbox.conn.network.security_groups(tags=tag)}


def test_a_policy_moves_the_selected_ports_to_its_sg_and_back(world: World) -> None:
    try:
        _policy_round_trip(world)
    finally:  # the cluster's open SGs outlive policies by design; this cluster is gone
        _delete_cluster_sgs(world)


def _delete_cluster_sgs(world: World) -> None:
    """Controllers stopped, then every port naming one of the cluster's SGs (pool ports
    too), then the SGs."""
    for ctl in world.controllers:
        ctl.stop()
    conn = world.sandbox.conn
    sg_ids = set(_cluster_sg_ids(world).values())
    for port in conn.network.ports():
        if sg_ids & set(port.security_group_ids or ()):
            conn.network.delete_port(port, ignore_missing=True)
    for sg_id in sg_ids:
        conn.network.delete_security_group(sg_id, ignore_missing=True)
    assert not _cluster_sg_ids(world), "the cluster's SGs outlived it"


def _policy_round_trip(world: World) -> None:
    ctl = world.start_controller(kubernetes_extra="pod_security_groups_driver = policy")
    ctl.wait_role("leader")
    _labelled_pod(world, "web", "web")
    _labelled_pod(world, "client", "client")
    wait_for("pods allocated", lambda: converged(world.kube, {"web", "client"}))
    open_sgs = set(_sgs(world, "web"))
    assert open_sgs == _sgs(world, "client")
    names = _cluster_sg_ids(world)
    assert any(OPEN_INGRESS in n for n in names) and any(OPEN_EGRESS in n for n in names)

    policy = {
        "metadata": {"name": "web-from-client"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        },
    }
    r = world.kube.c.post(NP_PATH.format(ns=world.kube.ns), policy)
    assert r.status_code == 201, r.text
    wait_for("web's port to leave the open-ingress SG", lambda: _sgs(world, "web") != open_sgs)
    web = _sgs(world, "web")
    ingress_open = next(i for n, i in _cluster_sg_ids(world).items() if OPEN_INGRESS in n)
    assert ingress_open not in web, "a pod selected for ingress must not keep open ingress"
    assert _sgs(world, "client") == open_sgs, "an unselected pod stays fully open"

    _labelled_pod(world, "web-2", "web")  # created under the policy: born with its SG
    wait_for("web-2 allocated", lambda: converged(world.kube, {"web", "client", "web-2"}))
    assert _sgs(world, "web-2") == web

    r = world.kube.c.delete(f"{NP_PATH.format(ns=world.kube.ns)}/web-from-client")
    assert r.status_code in (200, 202), r.text
    wait_for("web's port back to open", lambda: _sgs(world, "web") == open_sgs)
    wait_for("web-2's port back to open", lambda: _sgs(world, "web-2") == open_sgs)


IDENTITY_MODE = (
    "pod_security_groups_driver = policy\n[network_policy]\nsecurity_group_mode = identity"
)


def _ingress_rules(world: World, sg_id: str) -> set[tuple[Any, ...]]:
    sg = world.sandbox.conn.network.get_security_group(sg_id)
    return {
        (r["ethertype"], r.get("protocol"), r.get("remote_group_id"), r.get("remote_ip_prefix"))
        for r in sg.security_group_rules
        if r["direction"] == "ingress"
    }


def test_identity_mode_changes_rules_not_ports(world: World) -> None:
    """``security_group_mode = identity`` through the controller: each pod's port carries
    its identity's one SG; a policy changes that SG's rules and no port; a replica created
    under the policy gets the same SG; a relabelled pod moves to another SG."""
    try:
        _identity_round_trip(world)
    finally:
        _delete_cluster_sgs(world)


def _identity_round_trip(world: World) -> None:
    ctl = world.start_controller(kubernetes_extra=IDENTITY_MODE)
    ctl.wait_role("leader")
    _labelled_pod(world, "web", "web")
    _labelled_pod(world, "client", "client")
    wait_for("pods allocated", lambda: converged(world.kube, {"web", "client"}))
    (web_sg,), (client_sg,) = _sgs(world, "web"), _sgs(world, "client")
    assert web_sg != client_sg
    assert web_sg in _cluster_sg_ids(world).values()
    open_ingress = {("IPv4", None, None, None), ("IPv6", None, None, None)}
    assert _ingress_rules(world, web_sg) == open_ingress

    policy = {
        "metadata": {"name": "web-from-client"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        },
    }
    r = world.kube.c.post(NP_PATH.format(ns=world.kube.ns), policy)
    assert r.status_code == 201, r.text
    only_client = {("IPv4", None, client_sg, None), ("IPv6", None, client_sg, None)}
    wait_for("web's SG to admit only clients", lambda: _ingress_rules(world, web_sg) == only_client)
    assert _sgs(world, "web") == {web_sg}, "the policy moved no port"
    assert _ingress_rules(world, client_sg) == open_ingress, "an unselected pod stays open"

    _labelled_pod(world, "web-2", "web")  # a replica created under the policy
    wait_for("web-2 allocated", lambda: converged(world.kube, {"web", "client", "web-2"}))
    assert _sgs(world, "web-2") == {web_sg}

    r = world.kube.c.patch(
        f"/api/v1/namespaces/{world.kube.ns}/pods/web-2",
        {"metadata": {"labels": {"app": "other"}}},
        "merge",
    )
    assert r.status_code == 200, r.text
    wait_for("web-2's port to move to its new identity", lambda: _sgs(world, "web-2") != {web_sg})
    (other_sg,) = _sgs(world, "web-2")
    assert _ingress_rules(world, other_sg) == open_ingress

    r = world.kube.c.delete(f"{NP_PATH.format(ns=world.kube.ns)}/web-from-client")
    assert r.status_code in (200, 202), r.text
    wait_for("web's SG open again", lambda: _ingress_rules(world, web_sg) == open_ingress)
    assert _sgs(world, "web") == {web_sg}
