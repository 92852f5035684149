"""Authentication by ServiceAccount tokens and RBAC authorization.

Written to pass unchanged against a real cluster (``--kubeconfig``): every case creates its
own namespace, ServiceAccount, token (TokenRequest) and RBAC objects, and polls where a real
server's RBAC caches take a moment to see a change. unverified-on-real: no real cluster
could be reached when these cases were written; the expected answers follow the
kube-apiserver sources (``responsewriters.forbiddenMessage``, the RBAC authorizer's
reasons, ``pkg/apis/rbac/validation``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fixtures.kubeapi import KubeApi, KubeClient, KubeConfig, unique_name

from .helpers import configmap, created, eventually, ok, pod, status_of

Obj = dict[str, Any]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TIMEOUT = 30.0
"""Seconds a real server may take to see a new or removed binding."""


def sa_path(ns: str, name: str = "", sub: str = "") -> str:
    path = f"/api/v1/namespaces/{ns}/serviceaccounts"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def request_token(client: KubeClient, ns: str, name: str, **spec: Any) -> httpx.Response:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    return client.post(sa_path(ns, name, "token"), body)


def as_token(kube_api: KubeApi, token: str) -> KubeClient:
    base = kube_api.config
    return KubeClient(
        KubeConfig(base.server, base.verify, {"Authorization": f"Bearer {token}"}), timeout=30
    )


class Account:
    """A ServiceAccount and a client authenticated as it."""

    def __init__(self, admin: KubeClient, kube_api: KubeApi, ns: str, name: str) -> None:
        self.ns, self.name = ns, name
        self.user = f"system:serviceaccount:{ns}:{name}"
        created(admin.post(sa_path(ns), {"metadata": {"name": name}}))
        answer = created(request_token(admin, ns, name))
        self.token = str(answer["status"]["token"])
        self.client = as_token(kube_api, self.token)


@pytest.fixture
def account(kube_client: KubeClient, kube_api: KubeApi, ns: str) -> Iterator[Account]:
    acc = Account(kube_client, kube_api, ns, "robot")
    yield acc
    acc.client.close()


def role(ns: str, name: str, *rules: Obj) -> tuple[str, Obj]:
    return f"{RBAC}/namespaces/{ns}/roles", {"metadata": {"name": name}, "rules": list(rules)}


def rule(resources: list[str], verbs: list[str], group: str = "", **extra: Any) -> Obj:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **extra}


def binding(ns: str, name: str, kind: str, role_name: str, *subjects: Obj) -> tuple[str, Obj]:
    return f"{RBAC}/namespaces/{ns}/rolebindings", {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
        "subjects": list(subjects),
    }


def sa_subject(acc: Account) -> Obj:
    return {"kind": "ServiceAccount", "name": acc.name, "namespace": acc.ns}


def make(client: KubeClient, where: tuple[str, Obj]) -> Obj:
    return created(client.post(*where))


def forbidden_text(acc: Account, verb: str, resource: str, group: str, ns: str | None) -> str:
    scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
    return f'User "{acc.user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'


def access_review(acc: Account, **attributes: str) -> Obj:
    """A SelfSubjectAccessReview of ``acc`` for these resource attributes."""
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    return created(acc.client.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body))


def answers(client: KubeClient, method: str, path: str, code: int, **kw: Any) -> bool:
    return client.request(method, path, **kw).status_code == code


# ---------------------------------------------------------------- TokenRequest


def test_token_request_answers_a_token(kube_client: KubeClient, ns: str) -> None:
    created(kube_client.post(sa_path(ns), {"metadata": {"name": "robot"}}))
    answer = created(request_token(kube_client, ns, "robot", expirationSeconds=1200))
    assert answer["kind"] == "TokenRequest"
    assert answer["apiVersion"] == "authentication.k8s.io/v1"
    assert answer["spec"]["expirationSeconds"] == 1200
    assert answer["status"]["token"].count(".") == 2  # a JWT
    assert answer["status"]["expirationTimestamp"]


def test_token_request_rules(kube_client: KubeClient, ns: str) -> None:
    missing = status_of(request_token(kube_client, ns, "nobody"), 404, "NotFound")
    assert missing["message"] == 'serviceaccounts "nobody" not found'
    created(kube_client.post(sa_path(ns), {"metadata": {"name": "robot"}}))
    short = status_of(
        request_token(kube_client, ns, "robot", expirationSeconds=599), 422, "Invalid"
    )
    assert short["details"]["causes"][0]["field"] == "spec.expirationSeconds"
    assert "may not specify a duration less than 10 minutes" in short["message"]


def test_a_bad_token_is_unauthorized(kube_api: KubeApi) -> None:
    client = as_token(kube_api, "not-a-token")
    try:
        body = status_of(client.get("/api/v1/namespaces"), 401, "Unauthorized")
        assert body["message"] == "Unauthorized"
    finally:
        client.close()


def test_a_deleted_service_account_token_stops_working(
    kube_client: KubeClient, account: Account
) -> None:
    assert account.client.get("/api").status_code == 200
    ok(kube_client.delete(sa_path(account.ns, account.name)))
    eventually(
        lambda: answers(account.client, "GET", "/api", 401),
        TIMEOUT,
        "the token of a deleted ServiceAccount to be refused",
    )


# ---------------------------------------------------------------- default policy


def test_an_account_without_bindings_gets_discovery_only(account: Account) -> None:
    for path in ("/api", "/api/v1", "/apis", "/version", "/healthz", "/readyz"):
        assert account.client.get(path).status_code == 200, path


def test_who_am_i(account: Account) -> None:
    resp = account.client.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    info = created(resp)["status"]["userInfo"]
    assert info["username"] == account.user
    for group in (
        "system:serviceaccounts",
        f"system:serviceaccounts:{account.ns}",
        "system:authenticated",
    ):
        assert group in info["groups"]


def test_forbidden_answers(account: Account) -> None:
    ns = account.ns
    body = status_of(account.client.get(f"/api/v1/namespaces/{ns}/pods"), 403, "Forbidden")
    assert body["message"] == "pods is forbidden: " + forbidden_text(
        account, "list", "pods", "", ns
    )
    assert body["details"] == {"kind": "pods"}

    body = status_of(account.client.get(f"/api/v1/namespaces/{ns}/pods/p1"), 403, "Forbidden")
    assert body["message"] == 'pods "p1" is forbidden: ' + forbidden_text(
        account, "get", "pods", "", ns
    )
    assert body["details"] == {"name": "p1", "kind": "pods"}

    resp = account.client.patch(
        f"/api/v1/namespaces/{ns}/pods/p1/status", {"status": {"phase": "Running"}}
    )
    body = status_of(resp, 403, "Forbidden")
    assert body["message"] == 'pods "p1" is forbidden: ' + forbidden_text(
        account, "patch", "pods/status", "", ns
    )

    body = status_of(account.client.get("/api/v1/nodes"), 403, "Forbidden")
    assert body["message"] == "nodes is forbidden: " + forbidden_text(
        account, "list", "nodes", "", None
    )

    resp = account.client.get("/apis/coordination.k8s.io/v1/namespaces/" + ns + "/leases")
    body = status_of(resp, 403, "Forbidden")
    assert body["message"] == "leases.coordination.k8s.io is forbidden: " + forbidden_text(
        account, "list", "leases", "coordination.k8s.io", ns
    )
    assert body["details"] == {"group": "coordination.k8s.io", "kind": "leases"}

    resp = account.client.delete(f"/api/v1/namespaces/{ns}/configmaps")
    body = status_of(resp, 403, "Forbidden")
    assert "cannot deletecollection resource" in body["message"]

    body = status_of(account.client.get("/metrics"), 403, "Forbidden")
    assert body["message"] == f'forbidden: User "{account.user}" cannot get path "/metrics"'


# ---------------------------------------------------------------- Roles and bindings


def test_role_binding_grants_in_its_namespace_only(
    kube_client: KubeClient, account: Account
) -> None:
    ns = account.ns
    other = unique_name("kuryr-test")
    created(kube_client.post("/api/v1/namespaces", {"metadata": {"name": other}}))
    try:
        make(kube_client, role(ns, "pod-reader", rule(["pods"], ["get", "list"])))
        make(kube_client, binding(ns, "read-pods", "Role", "pod-reader", sa_subject(account)))
        pods = f"/api/v1/namespaces/{ns}/pods"
        eventually(lambda: answers(account.client, "GET", pods, 200), TIMEOUT, "list allowed")
        status_of(account.client.get(f"/api/v1/namespaces/{other}/pods"), 403, "Forbidden")
        status_of(account.client.post(pods, pod("p1")), 403, "Forbidden")
        # "pods" does not cover its subresources
        created(kube_client.post(pods, pod("p1")))
        ok(account.client.get(f"{pods}/p1"))
        status_of(account.client.get(f"{pods}/p1/status"), 403, "Forbidden")
        # nor watch, a verb of its own
        resp = account.client.get(pods, params={"watch": "true", "timeoutSeconds": "1"})
        body = status_of(resp, 403, "Forbidden")
        assert body["message"].endswith(forbidden_text(account, "watch", "pods", "", ns))
    finally:
        kube_client.delete(f"/api/v1/namespaces/{other}")


def test_subresource_rule(kube_client: KubeClient, account: Account) -> None:
    ns = account.ns
    pods = f"/api/v1/namespaces/{ns}/pods"
    created(kube_client.post(pods, pod("p1")))
    make(kube_client, role(ns, "status-writer", rule(["pods/status"], ["get", "patch"])))
    make(kube_client, binding(ns, "status", "Role", "status-writer", sa_subject(account)))
    eventually(lambda: answers(account.client, "GET", f"{pods}/p1/status", 200), TIMEOUT, "allowed")
    status_of(account.client.get(f"{pods}/p1"), 403, "Forbidden")
    resp = account.client.patch(
        f"{pods}/p1/status",
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        "strategic",
    )
    ok(resp)


def test_resource_names(kube_client: KubeClient, account: Account) -> None:
    ns = account.ns
    cms = f"/api/v1/namespaces/{ns}/configmaps"
    created(kube_client.post(cms, configmap("a")))
    created(kube_client.post(cms, configmap("b")))
    make(kube_client, role(ns, "only-a", rule(["configmaps"], ["get"], resourceNames=["a"])))
    make(kube_client, binding(ns, "only-a", "Role", "only-a", sa_subject(account)))
    eventually(lambda: answers(account.client, "GET", f"{cms}/a", 200), TIMEOUT, "get a")
    body = status_of(account.client.get(f"{cms}/b"), 403, "Forbidden")
    assert body["message"].startswith('configmaps "b" is forbidden')
    status_of(account.client.get(cms), 403, "Forbidden")


def test_group_subject_and_cluster_role(kube_client: KubeClient, account: Account) -> None:
    ns = account.ns
    name = unique_name("kuryr-conf-cm-reader")
    created(
        kube_client.post(
            f"{RBAC}/clusterroles",
            {"metadata": {"name": name}, "rules": [rule(["configmaps"], ["list"])]},
        )
    )
    try:
        group = {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": f"system:serviceaccounts:{ns}",
        }
        make(kube_client, binding(ns, "cm-readers", "ClusterRole", name, group))
        cms = f"/api/v1/namespaces/{ns}/configmaps"
        eventually(lambda: answers(account.client, "GET", cms, 200), TIMEOUT, "list allowed")
        # a RoleBinding to a ClusterRole grants in its namespace only
        status_of(account.client.get("/api/v1/configmaps"), 403, "Forbidden")
        review = access_review(account, namespace=ns, verb="list", resource="configmaps")
        assert review["status"]["allowed"] is True
        assert review["status"]["reason"] == (
            f'RBAC: allowed by RoleBinding "cm-readers/{ns}" of ClusterRole "{name}" to '
            f'Group "system:serviceaccounts:{ns}"'
        )
    finally:
        kube_client.delete(f"{RBAC}/clusterroles/{name}")


def test_cluster_role_binding_grants_everywhere(kube_client: KubeClient, account: Account) -> None:
    name = unique_name("kuryr-conf-ns-reader")
    created(
        kube_client.post(
            f"{RBAC}/clusterroles",
            {"metadata": {"name": name}, "rules": [rule(["namespaces"], ["get", "list"])]},
        )
    )
    try:
        created(
            kube_client.post(
                f"{RBAC}/clusterrolebindings",
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": name,
                    },
                    "subjects": [sa_subject(account)],
                },
            )
        )
        eventually(
            lambda: answers(account.client, "GET", "/api/v1/namespaces", 200), TIMEOUT, "list"
        )
        ok(account.client.get("/api/v1/namespaces/default"))
        ok(kube_client.delete(f"{RBAC}/clusterrolebindings/{name}"))
        eventually(
            lambda: answers(account.client, "GET", "/api/v1/namespaces", 403),
            TIMEOUT,
            "the grant to go with its binding",
        )
    finally:
        kube_client.delete(f"{RBAC}/clusterrolebindings/{name}")
        kube_client.delete(f"{RBAC}/clusterroles/{name}")


def test_binding_to_a_missing_role_says_so(kube_client: KubeClient, account: Account) -> None:
    ns = account.ns
    make(kube_client, binding(ns, "dangling", "Role", "missing", sa_subject(account)))
    cms = f"/api/v1/namespaces/{ns}/configmaps"

    def names_the_role() -> bool:
        resp = account.client.get(cms)
        message = str(resp.json().get("message", ""))
        return 'RBAC: role.rbac.authorization.k8s.io "missing" not found' in message

    eventually(names_the_role, TIMEOUT, "the missing role named in the 403")
    body = status_of(account.client.get(cms), 403, "Forbidden")
    assert body["message"] == (
        "configmaps is forbidden: "
        + forbidden_text(account, "list", "configmaps", "", ns)
        + ': RBAC: role.rbac.authorization.k8s.io "missing" not found'
    )
    make(kube_client, role(ns, "missing", rule(["configmaps"], ["list"])))
    eventually(lambda: answers(account.client, "GET", cms, 200), TIMEOUT, "the role to count")


def test_access_review_denied(account: Account) -> None:
    review = access_review(
        account,
        namespace=account.ns,
        verb="patch",
        group="openstack.org",
        resource="kuryrports",
        subresource="status",
    )
    assert review["status"]["allowed"] is False


def test_rbac_validation(kube_client: KubeClient, ns: str) -> None:
    path, body = role(ns, "no-verbs", {"apiGroups": [""], "resources": ["pods"], "verbs": []})
    invalid = status_of(kube_client.post(path, body), 422, "Invalid")
    assert [c["field"] for c in invalid["details"]["causes"]] == ["rules[0].verbs"]
    make(kube_client, role(ns, "r1", rule(["pods"], ["get"])))
    make(kube_client, role(ns, "r2", rule(["pods"], ["get"])))
    path, body = binding(ns, "b", "Role", "r1", {"kind": "User", "name": "someone"})
    stored = make(kube_client, (path, body))
    assert stored["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"  # defaulted
    resp = kube_client.patch(f"{path}/b", {"roleRef": {"name": "r2"}})
    invalid = status_of(resp, 422, "Invalid")
    assert invalid["details"]["causes"][0]["field"] == "roleRef"
    assert "cannot change roleRef" in invalid["message"]


def test_default_discovery_roles_exist(kube_client: KubeClient) -> None:
    for name in ("system:discovery", "system:basic-user", "system:public-info-viewer"):
        ok(kube_client.get(f"{RBAC}/clusterroles/{name}"))
        crb = ok(kube_client.get(f"{RBAC}/clusterrolebindings/{name}"))
        groups = [s["name"] for s in crb["subjects"]]
        assert "system:authenticated" in groups


# ---------------------------------------------------------------- escalation


def test_no_escalation_through_roles_and_bindings(
    kube_client: KubeClient, account: Account
) -> None:
    """A user may write only Roles and bindings that grant what they hold themselves, or
    hold ``escalate``/``bind`` (kube-apiserver's rbac policybased storages)."""
    ns = account.ns
    rbac_writer = rule(["roles", "rolebindings"], ["create"], "rbac.authorization.k8s.io")
    make(kube_client, role(ns, "delegate", rbac_writer, rule(["pods"], ["get"])))
    make(kube_client, binding(ns, "delegate", "Role", "delegate", sa_subject(account)))
    roles = f"{RBAC}/namespaces/{ns}/roles"
    held = {"metadata": {"name": "held"}, "rules": [rule(["pods"], ["get"])]}
    eventually(
        lambda: account.client.post(roles, held).status_code == 201, TIMEOUT, "create allowed"
    )
    too_much = {
        "metadata": {"name": "too-much"},
        "rules": [rule(["pods"], ["get", "list"]), rule(["configmaps"], ["get"])],
    }
    body = status_of(account.client.post(roles, too_much), 403, "Forbidden")
    groups = f'["system:serviceaccounts" "system:serviceaccounts:{ns}" "system:authenticated"]'
    assert body["message"] == (
        f'roles.rbac.authorization.k8s.io "too-much" is forbidden: user "{account.user}" '
        f"(groups={groups}) is attempting to grant RBAC permissions not currently held:\n"
        '{APIGroups:[""], Resources:["configmaps"], Verbs:["get"]}\n'
        '{APIGroups:[""], Resources:["pods"], Verbs:["list"]}'
    )
    assert body["details"] == {
        "name": "too-much",
        "group": "rbac.authorization.k8s.io",
        "kind": "roles",
    }
    # bindings: to a role whose rules it holds, yes; to one with more, not without "bind"
    make(kube_client, (roles, too_much))
    bindings = f"{RBAC}/namespaces/{ns}/rolebindings"
    _, ok_binding = binding(ns, "to-held", "Role", "held", sa_subject(account))
    created(account.client.post(bindings, ok_binding))
    _, bad_binding = binding(ns, "to-too-much", "Role", "too-much", sa_subject(account))
    body = status_of(account.client.post(bindings, bad_binding), 403, "Forbidden")
    assert body["message"].startswith(
        'rolebindings.rbac.authorization.k8s.io "to-too-much" is forbidden: user '
    )
    binder = rule(["roles"], ["bind"], "rbac.authorization.k8s.io", resourceNames=["too-much"])
    make(kube_client, role(ns, "binder", binder))
    make(kube_client, binding(ns, "binder", "Role", "binder", sa_subject(account)))
    eventually(
        lambda: account.client.post(bindings, bad_binding).status_code == 201,
        TIMEOUT,
        "the bind verb to allow the binding",
    )
