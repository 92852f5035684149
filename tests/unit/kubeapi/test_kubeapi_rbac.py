"""The emulator's authentication and RBAC: request attributes, rule matching, tokens
(expiry, restart of the same state), and the components' ServiceAccount kubeconfigs."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kuryr_k8s.sandbox.kubeapi import KubeApiServer
from kuryr_k8s.sandbox.kubeapi.accounts import (
    RBAC_MANIFEST,
    component_kubeconfig,
    load_documents,
    service_account_kubeconfig,
)
from kuryr_k8s.sandbox.kubeapi.auth import Attributes, request_attributes, rule_allows
from kuryr_k8s.sandbox.kubeapi.escalation import compact, compact_string, uncovered

Obj = dict[str, Any]


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "pods", "", "ns", "")),
        ("GET", "/api/v1/pods", {"watch": "1"}, ("watch", "", "pods", "", "", "")),
        ("GET", "/api/v1/watch/namespaces/ns/pods/p", {}, ("watch", "", "pods", "", "ns", "p")),
        (
            "GET",
            "/api/v1/namespaces/ns/pods",
            {"fieldSelector": "metadata.name=p"},
            ("list", "", "pods", "", "ns", "p"),
        ),
        (
            "PATCH",
            "/apis/openstack.org/v1/namespaces/ns/kuryrports/k/status",
            {},
            ("patch", "openstack.org", "kuryrports", "status", "ns", "k"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/pods",
            {},
            ("deletecollection", "", "pods", "", "ns", ""),
        ),
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            {},
            ("update", "", "namespaces", "finalize", "ns", "ns"),
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/sa/token",
            {},
            ("create", "", "serviceaccounts", "token", "ns", "sa"),
        ),
        ("GET", "/api/v1/nodes/n1", {}, ("get", "", "nodes", "", "", "n1")),
    ],
)
def test_request_attributes(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    a = request_attributes(method, path, query)
    assert a.resource_request
    assert (a.verb, a.group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize(
    "path",
    ["/api", "/api/v1", "/apis", "/apis/rbac.authorization.k8s.io/v1", "/version", "/healthz"],
)
def test_discovery_paths_are_non_resource_requests(path: str) -> None:
    a = request_attributes("GET", path, {})
    assert not a.resource_request
    assert (a.verb, a.path) == ("get", path)


def _res(verb: str, resource: str, sub: str = "", group: str = "", name: str = "") -> Attributes:
    return Attributes(verb, True, "", group, "v1", resource, sub, "ns", name)


def test_rule_matching() -> None:
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    assert rule_allows(pods, _res("get", "pods"))
    assert not rule_allows(pods, _res("watch", "pods"))
    assert not rule_allows(pods, _res("get", "pods", "status"))  # subresources are separate
    assert not rule_allows(pods, _res("get", "pods", group="apps"))
    status = {"apiGroups": ["openstack.org"], "resources": ["kuryrports/status"], "verbs": ["*"]}
    assert rule_allows(status, _res("patch", "kuryrports", "status", "openstack.org"))
    assert not rule_allows(status, _res("patch", "kuryrports", "", "openstack.org"))
    any_status = {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}
    assert rule_allows(any_status, _res("patch", "services", "status"))
    assert not rule_allows(any_status, _res("patch", "services"))
    named = {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get"],
        "resourceNames": ["a"],
    }
    assert rule_allows(named, _res("get", "configmaps", name="a"))
    assert not rule_allows(named, _res("get", "configmaps", name="b"))
    assert not rule_allows(named, _res("get", "configmaps"))
    urls = {"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]}
    assert rule_allows(urls, Attributes("get", False, "/apis/x/v1"))
    assert rule_allows(urls, Attributes("get", False, "/version"))
    assert not rule_allows(urls, Attributes("get", False, "/version/x"))
    assert not rule_allows(urls, Attributes("post", False, "/version"))
    assert not rule_allows(urls, _res("get", "pods"))


async def _token(client: httpx.AsyncClient, ns: str, sa: str, seconds: int = 3600) -> str:
    assert (
        await client.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
    ).status_code == 201
    r = await client.post(
        f"/api/v1/namespaces/{ns}/serviceaccounts", json={"metadata": {"name": sa}}
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
        json={"spec": {"expirationSeconds": seconds}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["status"]["token"])


async def test_an_expired_token_is_refused() -> None:
    async with KubeApiServer() as srv, httpx.AsyncClient(base_url=srv.url) as client:
        token = await _token(client, "t1", "sa", seconds=600)
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api", headers=auth)).status_code == 200
        now = srv.handlers.tokens.clock()
        srv.handlers.tokens.clock = lambda: now + 601
        r = await client.get("/api", headers=auth)
        assert r.status_code == 401
        assert r.json()["reason"] == "Unauthorized"


async def test_tokens_survive_a_restart_of_the_same_state(tmp_path: Path) -> None:
    state = tmp_path / "store.json"
    async with KubeApiServer(persist_path=state) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        token = await _token(c, "t1", "sa")
    auth = {"Authorization": f"Bearer {token}"}
    async with KubeApiServer(persist_path=state) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        assert (await c.get("/api", headers=auth)).status_code == 200
        r = await c.get("/api/v1/namespaces/t1/pods", headers=auth)
        assert r.status_code == 403
    # another state (another kube-system uid) does not accept it
    async with KubeApiServer() as srv, httpx.AsyncClient(base_url=srv.url) as c:
        assert (await c.get("/api", headers=auth)).status_code == 401


async def test_component_kubeconfig_runs_as_the_manifests_service_account(
    tmp_path: Path,
) -> None:
    async with KubeApiServer() as srv:
        admin = srv.write_kubeconfig(tmp_path / "admin")
        out = await _in_thread(component_kubeconfig, admin, tmp_path, "kuryr-controller")
        doc = yaml.safe_load(out.read_text())
        assert doc["contexts"][0]["context"]["namespace"] == "kuryr-system"
        token = doc["users"][0]["user"]["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=srv.url, headers=auth) as c:
            who = await c.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json={})
            assert who.json()["status"]["userInfo"]["username"] == (
                "system:serviceaccount:kuryr-system:kuryr-controller"
            )
            # granted by deploy/base/rbac.yaml: the pod informer; not granted: secrets
            assert (await c.get("/api/v1/pods")).status_code == 200
            assert (await c.get("/api/v1/namespaces/kuryr-system/secrets")).status_code == 403
            # the CRDs were created for it (it may only read them)
            crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/kuryrports.openstack.org"
            assert (await c.get(crd)).status_code == 200
        # applying again (a second 'sandbox up') replaces, and mints a new working token
        again = await _in_thread(
            service_account_kubeconfig,
            admin,
            "kuryr-system",
            "kuryr-controller",
            tmp_path / "again",
            load_documents(RBAC_MANIFEST),
        )
        token2 = yaml.safe_load(again.read_text())["users"][0]["user"]["token"]
        assert token2 != token
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {token2}"}
        ) as c:
            assert (await c.get("/api/v1/pods")).status_code == 200


async def _in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking helper (it talks HTTP to the in-process server) off the loop."""
    return await asyncio.to_thread(fn, *args)


async def _kubectl(kubeconfig: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
async def test_kubectl_as_a_service_account_over_the_tls_listener(tmp_path: Path) -> None:
    """kubectl sends a bearer token only over TLS: the optional HTTPS listener."""
    async with KubeApiServer(tls_port=0) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        token = await _token(c, "t1", "sa")
        assert srv.tls_url is not None
        kubeconfig = tmp_path / "sa"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "e", "cluster": {"server": srv.tls_url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [
                {"name": "sa", "context": {"cluster": "e", "user": "sa", "namespace": "t1"}}
            ],
            "current-context": "sa",
        }
        kubeconfig.write_text(yaml.safe_dump(doc))
        code, out = await _kubectl(
            kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
        )
        assert (code, out) == (0, "system:serviceaccount:t1:sa")
        code, out = await _kubectl(
            kubeconfig, "api-resources", "--api-group=rbac.authorization.k8s.io", "-o", "name"
        )
        assert code == 0 and "roles.rbac.authorization.k8s.io" in out, out
        code, out = await _kubectl(kubeconfig, "get", "pods")
        assert code == 1
        assert (
            'pods is forbidden: User "system:serviceaccount:t1:sa" cannot list resource "pods" in '
            'API group "" in the namespace "t1"'
        ) in out
        assert (await _kubectl(kubeconfig, "auth", "can-i", "list", "pods"))[1].strip() == "no"
        role = {
            "metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
        binding = {
            "metadata": {"name": "r"},
            "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
        }
        rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/t1"
        assert (await c.post(f"{rbac}/roles", json=role)).status_code == 201
        assert (await c.post(f"{rbac}/rolebindings", json=binding)).status_code == 201
        assert (await _kubectl(kubeconfig, "auth", "can-i", "list", "pods"))[1].strip() == "yes"
        code, out = await _kubectl(kubeconfig, "get", "pods")
        assert code == 0, out


def test_escalation_coverage() -> None:
    owner = [
        {"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a"]},
        {"nonResourceURLs": ["/apis/*"], "verbs": ["get"]},
    ]
    assert not uncovered(
        owner, [{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]}]
    )
    assert not uncovered(owner, [{"nonResourceURLs": ["/apis/x"], "verbs": ["get"]}])
    named = {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get"],
        "resourceNames": ["a"],
    }
    assert not uncovered(owner, [named])
    assert uncovered(owner, [{**named, "resourceNames": []}])  # all names: more than "a"
    missing = uncovered(
        owner,
        [{"apiGroups": ["", "apps"], "resources": ["pods"], "verbs": ["get", "watch", "list"]}],
    )
    assert sorted(compact_string(r) for r in compact(missing)) == [
        '{APIGroups:[""], Resources:["pods"], Verbs:["watch"]}',
        '{APIGroups:["apps"], Resources:["pods"], Verbs:["get" "watch" "list"]}',
    ]
