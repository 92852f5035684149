"""Discovery documents (``/api``, ``/apis``, resource lists), ``/version`` and a minimal
OpenAPI v3 index.

The OpenAPI v3 documents only describe what kubectl looks up: the PATCH operation of each
kind (``x-kubernetes-group-version-kind``) and its ``fieldValidation`` query parameter, so
that ``kubectl apply`` hands validation to the server instead of failing to download a
schema. Strategic-merge-patch is deliberately not listed there: kubectl then computes its
patches from its compiled-in types, as it does for any server without schemas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kuryr_k8s.sandbox.kubeapi.resources import ALL_VERBS, Registry, ResourceType

Obj = dict[str, Any]

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kuryr-emulator"}


def version_info() -> Obj:
    return {
        **KUBE_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> Obj:
    groups = [
        _group(name, versions)
        for name, versions in sorted(registry.group_versions().items())
        if name
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, name: str) -> Obj | None:
    versions = registry.group_versions().get(name)
    if not name or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _hash(rt: ResourceType) -> str:
    return hashlib.sha256(rt.key.encode()).hexdigest()[:11]


def _entries(rt: ResourceType) -> list[Obj]:
    main: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(ALL_VERBS),
        "storageVersionHash": _hash(rt),
    }
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    if rt.categories:
        main["categories"] = list(rt.categories)
    out = [main]
    for sub in rt.subresources:
        kind, verbs = rt.kind, ["get", "patch", "update"]
        if sub == "binding":
            kind, verbs = "Binding", ["create"]
        elif sub == "finalize":
            verbs = ["update"]
        elif sub == "scale":
            kind = "Scale"
        out.append(
            {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": verbs,
            }
        )
    return out


def resource_list(registry: Registry, group: str, version: str) -> Obj | None:
    types = [rt for rt in registry if rt.group == group and rt.serves(version)]
    if not types:
        return None
    resources = [e for rt in sorted(types, key=lambda r: r.plural) for e in _entries(rt)]
    gv = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }


# ---------------------------------------------------------------- OpenAPI v3


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_document(registry: Registry, group: str, version: str) -> Obj | None:
    types = [rt for rt in registry if rt.group == group and rt.serves(version)]
    if not types:
        return None
    paths: Obj = {}
    for rt in types:
        gvk = {"group": group, "version": version, "kind": rt.kind}
        root = f"/{_gv_path(group, version)}"
        path = (
            f"{root}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
            if rt.namespaced
            else f"{root}/{rt.plural}/{{name}}"
        )
        op = {
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            ],
            "requestBody": {
                "content": {
                    "application/json-patch+json": {"schema": {"type": "object"}},
                    "application/merge-patch+json": {"schema": {"type": "object"}},
                    "application/apply-patch+yaml": {"schema": {"type": "object"}},
                }
            },
            "responses": {"200": {"description": "OK"}},
        }
        paths[path] = {"patch": op}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def openapi_index(registry: Registry) -> Obj:
    paths: Obj = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            doc = openapi_document(registry, group, version)
            digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
            name = _gv_path(group, version)
            paths[name] = {"serverRelativeURL": f"/openapi/v3/{name}?hash={digest.upper()}"}
    return {"paths": paths}
