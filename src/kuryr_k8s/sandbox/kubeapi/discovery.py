"""Discovery documents (``/api``, ``/apis``, resource lists), ``/version`` and a minimal
OpenAPI v3 index.

The OpenAPI v3 documents only describe what kubectl looks up: the PATCH operation of each
kind (``x-kubernetes-group-version-kind``) and its ``fieldValidation`` query parameter, so
that ``kubectl apply`` hands validation to the server instead of failing to download a
schema. Strategic-merge-patch is deliberately not listed there: kubectl then computes its
patches from its compiled-in types, as it does for any server without schemas.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from kuryr_k8s.sandbox.kubeapi.resources import Registry, ResourceType

Obj = dict[str, Any]

KUBE_VERSION = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.2",
}
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def version_info() -> Obj:
    return {
        **KUBE_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
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
    """``storageVersionHash`` as the real server computes it (group/version/kind)."""
    gvk = f"{rt.group}/{rt.version}/{rt.kind}"
    return base64.b64encode(hashlib.sha256(gvk.encode()).digest()[:8]).decode()


def _verbs(rt: ResourceType) -> list[str]:
    return list(rt.verbs)


def _entries(rt: ResourceType) -> list[Obj]:
    main: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": _verbs(rt),
    }
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    if rt.categories:
        main["categories"] = list(rt.categories)
    if rt.verbs != ("create",):
        main["storageVersionHash"] = _hash(rt)
    out = [main]
    for sub in rt.subresources:
        kind, verbs = rt.kind, ["get", "patch", "update"]
        if sub == "binding":
            kind, verbs = "Binding", ["create"]
        elif sub == "finalize":
            verbs = ["update"]
        elif sub == "token":
            kind, verbs = "TokenRequest", ["create"]
        elif sub == "scale":
            kind = "Scale"
        entry: Obj = {
            "name": f"{rt.plural}/{sub}",
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": kind,
            "verbs": verbs,
        }
        if sub == "token":
            entry = {**entry, "group": "authentication.k8s.io", "version": "v1"}
        out.append(entry)
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


# ---------------------------------------------------------------- aggregated discovery


def wants_aggregated(accept: str) -> bool:
    """kubectl asks for ``APIGroupDiscoveryList`` first (v2, then v2beta1, then plain)."""
    first = accept.split(",")[0]
    return "as=APIGroupDiscoveryList" in first and "g=apidiscovery.k8s.io" in first


def _kind(kind: str, group: str = "", version: str = "") -> Obj:
    return {"group": group, "version": version, "kind": kind}


def _discovery_resource(rt: ResourceType) -> Obj:
    out: Obj = {
        "resource": rt.plural,
        "responseKind": _kind(rt.kind),
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": _verbs(rt),
    }
    if rt.short_names:
        out["shortNames"] = list(rt.short_names)
    if rt.categories:
        out["categories"] = list(rt.categories)
    subs = [e for e in _entries(rt)[1:]]
    if subs:
        out["subresources"] = sorted(
            (
                {
                    "subresource": e["name"].split("/", 1)[1],
                    "responseKind": _kind(e["kind"], e.get("group", ""), e.get("version", "")),
                    "verbs": e["verbs"],
                }
                for e in subs
            ),
            key=lambda e: str(e["subresource"]),
        )
    return out


def _discovery_versions(registry: Registry, group: str, versions: list[str]) -> list[Obj]:
    out = []
    for version in versions:
        types = sorted(
            (rt for rt in registry if rt.group == group and rt.serves(version)),
            key=lambda r: r.plural,
        )
        out.append(
            {
                "version": version,
                "resources": [_discovery_resource(rt) for rt in types],
                "freshness": "Current",
            }
        )
    return out


def aggregated(registry: Registry, core: bool) -> Obj:
    """``/api`` (core) or ``/apis`` as an ``apidiscovery.k8s.io/v2`` APIGroupDiscoveryList."""
    items = []
    for name, versions in sorted(registry.group_versions().items()):
        if (name == "") != core:
            continue
        meta = {} if core else {"name": name}
        items.append({"metadata": meta, "versions": _discovery_versions(registry, name, versions)})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
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
        "info": {"title": "Kubernetes", "version": "v1.36.2"},
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
