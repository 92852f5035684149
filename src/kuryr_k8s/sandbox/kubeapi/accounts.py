"""Run a component as a ServiceAccount: apply its RBAC manifests with the administrator's
kubeconfig, mint a token (TokenRequest) and write a kubeconfig that uses it.

Works against the emulator and against any real cluster (``kuryr sandbox up
--kubeconfig``): it only uses the API, as ``kubectl apply`` and ``kubectl create token``
would.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml

from kuryr_k8s.k8s.config import load_kubeconfig
from kuryr_k8s.sandbox.kubeapi.server import write_atomically

Obj = dict[str, Any]

TOKEN_SECONDS = 365 * 24 * 3600
"""Lifetime of a component's token: the sandbox's components run for days."""

_COLLECTIONS = {
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"
    ),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"
    ),
}


class AccountError(RuntimeError):
    """The RBAC manifests could not be applied or the token could not be minted."""


def admin_client(kubeconfig: Path) -> httpx.Client:
    settings = load_kubeconfig(kubeconfig)
    headers = {}
    token = settings.bearer_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    verify: Any = settings.ssl_context() if settings.server.startswith("https") else True
    return httpx.Client(base_url=settings.server, headers=headers, verify=verify, timeout=30)


def _check(resp: httpx.Response, what: str) -> Obj:
    if resp.status_code >= 400:
        raise AccountError(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")
    body: Obj = resp.json()
    return body


def apply(client: httpx.Client, docs: Iterable[Obj], *, replace: bool = True) -> list[str]:
    """Create each object, or replace it when it exists (what ``kubectl apply`` ends with;
    ``replace=False`` leaves existing ones alone); returns ``kind/name`` of each."""
    done = []
    for doc in docs:
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        collection = _COLLECTIONS.get((str(doc.get("apiVersion")), str(kind)))
        if collection is None:
            raise AccountError(
                f"cannot apply {doc.get('apiVersion')} {kind} {meta.get('name')!r}: only "
                f"{sorted(k for _, k in _COLLECTIONS)} are handled here"
            )
        path = collection.format(ns=meta.get("namespace", ""))
        what = f"{kind}/{meta.get('name')}"
        resp = client.post(path, json=doc)
        if resp.status_code == 409 and not replace:
            continue
        if resp.status_code == 409:
            current = _check(client.get(f"{path}/{meta['name']}"), f"get {what}")
            body = {
                **doc,
                "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            resp = client.put(f"{path}/{meta['name']}", json=body)
        _check(resp, f"apply {what}")
        done.append(what)
    return done


def load_documents(*paths: Path) -> list[Obj]:
    docs: list[Obj] = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return docs


def ensure_namespace(client: httpx.Client, name: str) -> None:
    resp = client.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    if resp.status_code != 409:
        _check(resp, f"create namespace {name}")


def request_token(client: httpx.Client, namespace: str, name: str) -> str:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": TOKEN_SECONDS},
    }
    answer = _check(
        client.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", json=body),
        f"TokenRequest for ServiceAccount {namespace}/{name}",
    )
    return str(answer["status"]["token"])


def token_kubeconfig(admin_kubeconfig: Path, token: str, namespace: str, out: Path) -> Path:
    """``admin_kubeconfig`` with its current context's user replaced by ``token``."""
    doc = yaml.safe_load(admin_kubeconfig.read_text())
    current = doc.get("current-context")
    context = next(c for c in doc.get("contexts") or [] if c.get("name") == current)
    user = f"{current}-{out.stem}"
    context["context"] = {**context["context"], "user": user, "namespace": namespace}
    doc["contexts"] = [context]
    doc["users"] = [{"name": user, "user": {"token": token}}]
    cluster = context["context"]["cluster"]
    doc["clusters"] = [c for c in doc.get("clusters") or [] if c.get("name") == cluster]
    write_atomically(out, yaml.safe_dump(doc, sort_keys=False))
    out.chmod(0o600)
    return out


def service_account_kubeconfig(
    admin_kubeconfig: Path,
    namespace: str,
    name: str,
    out: Path,
    manifests: Iterable[Obj] = (),
    missing: Iterable[Obj] = (),
) -> Path:
    """Apply ``manifests`` (the ServiceAccount and its RBAC) and create what of ``missing``
    does not exist (CRDs) as the administrator, then write ``out``: a kubeconfig
    authenticating as ServiceAccount ``namespace/name``."""
    with admin_client(admin_kubeconfig) as client:
        ensure_namespace(client, namespace)
        apply(client, missing, replace=False)
        apply(client, manifests)
        if client.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}").status_code == 404:
            apply(
                client,
                [
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": name, "namespace": namespace},
                    }
                ],
            )
        token = request_token(client, namespace, name)
    return token_kubeconfig(admin_kubeconfig, token, namespace, out)


REPO = Path(__file__).resolve().parents[4]
RBAC_MANIFEST = REPO / "deploy" / "base" / "rbac.yaml"
CRD_DIR = REPO / "src" / "kuryr_k8s" / "model" / "crds"
NAMESPACE = "kuryr-system"


def component_kubeconfig(admin_kubeconfig: Path, out_dir: Path, service_account: str) -> Path:
    """The sandbox's kubeconfig for a component running as the manifests' ServiceAccount
    ``kuryr-system/<service_account>``: ``deploy/base/rbac.yaml`` applied, our CRDs created
    if missing (the ServiceAccounts may only read them), a fresh token."""
    if not RBAC_MANIFEST.is_file():
        raise AccountError(f"{RBAC_MANIFEST} is missing: the components' RBAC comes from it")
    return service_account_kubeconfig(
        admin_kubeconfig,
        NAMESPACE,
        service_account,
        out_dir / f"{service_account}.kubeconfig",
        load_documents(RBAC_MANIFEST),
        load_documents(*sorted(CRD_DIR.glob("*.yaml"))),
    )
