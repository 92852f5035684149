"""Robustness: arbitrary bodies never make the server fail (5xx) or lose its consistency.

A real server answers garbage with 4xx as well, so the property holds for both; it is only
run against the emulator by default because it creates many objects.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.kubeapi import KubeApi, KubeClient
from kubeapi_conformance.helpers import configmap, created, ok, pod

KEYS = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "spec",
    "status",
    "containers",
    "image",
    "ports",
    "containerPort",
    "nodeName",
    "data",
    "phase",
    "conditions",
    "type",
    "$patch",
    "$setElementOrder/containers",
    "$deleteFromPrimitiveList/finalizers",
    "$retainKeys",
    "op",
    "path",
    "value",
    "from",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "v1",
            "Pod",
            "ConfigMap",
            "fuzz",
            "add",
            "remove",
            "replace",
            "/metadata/labels",
            "/spec/containers/0",
            "main",
            "busybox",
            "TCP",
        ]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
METHODS = st.sampled_from(
    [
        ("POST", "pods", "application/json"),
        ("POST", "configmaps", "application/json"),
        ("PUT", "pods/fuzz-pod", "application/json"),
        ("PUT", "configmaps/fuzz-cm", "application/json"),
        ("PATCH", "pods/fuzz-pod", "application/merge-patch+json"),
        ("PATCH", "pods/fuzz-pod", "application/strategic-merge-patch+json"),
        ("PATCH", "pods/fuzz-pod", "application/json-patch+json"),
        ("PATCH", "pods/fuzz-pod/status", "application/merge-patch+json"),
        ("PATCH", "configmaps/fuzz-cm", "application/json-patch+json"),
        ("DELETE", "configmaps/fuzz-cm", "application/json"),
    ]
)


@pytest.fixture(scope="module")
def fuzz_ns(kube_api: KubeApi, kube_client: KubeClient, module_namespace: str) -> str:
    if not kube_api.is_emulator:
        pytest.skip("fuzzing creates many objects; emulator only")
    created(kube_client.post(f"/api/v1/namespaces/{module_namespace}/pods", pod("fuzz-pod")))
    return module_namespace


def _request(client: KubeClient, ns: str, method: tuple[str, str, str], body: Any) -> int:
    verb, path, ctype = method
    resp = client.request(
        verb,
        f"/api/v1/namespaces/{ns}/{path}",
        content=json.dumps(body).encode(),
        headers={"Content-Type": ctype},
    )
    assert resp.status_code < 500, (verb, path, body, resp.text)
    assert resp.json()["kind"], resp.text
    return resp.status_code


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=METHODS, body=JSON)
def test_random_bodies_never_break_the_server(
    kube_client: KubeClient, fuzz_ns: str, method: tuple[str, str, str], body: Any
) -> None:
    before = int(
        ok(kube_client.get(f"/api/v1/namespaces/{fuzz_ns}/configmaps"))["metadata"][
            "resourceVersion"
        ]
    )
    _request(kube_client, fuzz_ns, method, body)
    after = ok(kube_client.get(f"/api/v1/namespaces/{fuzz_ns}/pods"))
    assert int(after["metadata"]["resourceVersion"]) >= before
    for item in after["items"]:
        assert item["metadata"]["uid"] and item["metadata"]["name"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6))
def test_structured_pod_and_configmap_bodies(
    kube_client: KubeClient, fuzz_ns: str, data: dict[str, Any]
) -> None:
    for base in (pod("fuzz-structured"), configmap("fuzz-structured")):
        body = {**base, **data}
        if isinstance(body.get("metadata"), dict):
            body["metadata"] = {**base["metadata"], **body["metadata"]}
        plural = "pods" if base["kind"] == "Pod" else "configmaps"
        code = _request(kube_client, fuzz_ns, ("POST", plural, "application/json"), body)
        if code == 201:
            name = kube_client.get(f"/api/v1/namespaces/{fuzz_ns}/{plural}").json()["items"]
            assert name
            for item in name:
                if item["metadata"]["name"] != "fuzz-pod":
                    kube_client.delete(
                        f"/api/v1/namespaces/{fuzz_ns}/{plural}/{item['metadata']['name']}",
                        params={"gracePeriodSeconds": 0},
                    )
    assert kube_client.get("/healthz").status_code == 200


QUERY_KEYS = st.sampled_from(
    [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "includeObject",
        "dryRun",
        "fieldValidation",
        "propagationPolicy",
        "gracePeriodSeconds",
        "timeoutSeconds",
    ]
)
QUERY_VALUES = st.text(max_size=20) | st.sampled_from(
    [
        "a=b",
        "a in (x",
        "metadata.name=x",
        "spec.nodeName!=",
        "-1",
        "0",
        "abc",
        "All",
        "Strict",
        "Orphan",
        "eyJydiI6IDF9",
        "!a,b",
        "a==b,c!=d",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    params=st.dictionaries(QUERY_KEYS, QUERY_VALUES, max_size=4),
    verb=st.sampled_from(["GET", "DELETE"]),
    path=st.sampled_from(["pods", "configmaps", "pods/fuzz-pod", "events"]),
)
def test_random_query_parameters(
    kube_client: KubeClient, fuzz_ns: str, params: dict[str, str], verb: str, path: str
) -> None:
    if verb == "DELETE" and path == "pods/fuzz-pod":
        path = "configmaps"  # keep the pod the other fuzz tests patch
    params.pop("timeoutSeconds", None)  # a watch would wait for it
    resp = kube_client.request(verb, f"/api/v1/namespaces/{fuzz_ns}/{path}", params=params)
    assert resp.status_code < 500, (verb, path, params, resp.text)
    assert kube_client.get("/healthz").status_code == 200


CRD_SCHEMA = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 0},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"k": {"type": "string", "enum": ["a", "b"]}},
                    },
                },
                "any": {"x-kubernetes-int-or-string": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "map": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
CR_KEYS = st.sampled_from(
    [
        "spec",
        "status",
        "size",
        "name",
        "items",
        "k",
        "any",
        "free",
        "map",
        "metadata",
        "labels",
        "apiVersion",
        "kind",
    ]
)
CR_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CR_KEYS, inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def fuzz_crd(kube_client: KubeClient, fuzz_ns: str) -> Iterator[str]:
    group = f"fuzz{secrets.token_hex(3)}.conformance.kuryr.openstack.org"
    crd = {
        "metadata": {"name": f"blobs.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Blob", "plural": "blobs"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": CRD_SCHEMA},
                }
            ],
        },
    }
    created(kube_client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd))
    path = f"/apis/{group}/v1/namespaces/{fuzz_ns}/blobs"
    created(
        kube_client.post(
            path,
            {
                "apiVersion": f"{group}/v1",
                "kind": "Blob",
                "metadata": {"name": "blob"},
                "spec": {"size": 1},
            },
        )
    )
    yield path
    kube_client.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/blobs.{group}")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.dictionaries(CR_KEYS, CR_JSON, max_size=4),
    how=st.sampled_from(["create", "merge", "json", "status", "put"]),
)
def test_random_custom_resources(
    kube_client: KubeClient, fuzz_crd: str, body: dict[str, Any], how: str
) -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    if how == "create":
        body.setdefault("metadata", {"generateName": "fuzz-"})
        resp = kube_client.request(
            "POST",
            fuzz_crd,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    elif how == "put":
        resp = kube_client.request(
            "PUT",
            f"{fuzz_crd}/blob",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    else:
        suffix = "/status" if how == "status" else ""
        if how == "json":
            headers = {"Content-Type": "application/json-patch+json"}
            body = [{"op": "add", "path": "/spec", "value": body}]  # type: ignore[assignment]
        resp = kube_client.request(
            "PATCH", f"{fuzz_crd}/blob{suffix}", content=json.dumps(body).encode(), headers=headers
        )
    assert resp.status_code < 500, (how, body, resp.text)
    blob = ok(kube_client.get(f"{fuzz_crd}/blob"))
    assert isinstance(blob["spec"]["size"], int)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=st.binary(max_size=200),
    kind=st.sampled_from(["", "ConfigMap", "Secret", "ServiceAccount", "Namespace", "Pod"]),
)
def test_random_protobuf_bodies(
    kube_client: KubeClient, fuzz_ns: str, payload: bytes, kind: str
) -> None:
    def field(number: int, data: bytes) -> bytes:
        return bytes([number << 3 | 2, len(data)]) + data

    body = payload
    if kind:
        type_meta = field(1, b"v1") + field(2, kind.encode())
        body = b"k8s\x00" + field(1, type_meta) + bytes([2 << 3 | 2]) + bytes([len(payload)])
        body += payload
    plural = {"Namespace": "/api/v1/namespaces"}.get(
        kind, f"/api/v1/namespaces/{fuzz_ns}/{kind.lower() or 'configmap'}s"
    )
    resp = kube_client.request(
        "POST",
        plural,
        content=body,
        headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
    )
    assert resp.status_code < 500, (body, resp.text)


SEGMENTS = st.sampled_from(
    [
        "api",
        "apis",
        "v1",
        "namespaces",
        "default",
        "pods",
        "status",
        "binding",
        "finalize",
        "watch",
        "configmaps",
        "x",
        "",
        "..",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "%2F",
        "nodes",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    parts=st.lists(SEGMENTS | st.text(max_size=8), max_size=8),
    verb=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
)
def test_random_paths(kube_client: KubeClient, fuzz_ns: str, parts: list[str], verb: str) -> None:
    path = "/" + "/".join(p.replace("default", fuzz_ns) for p in parts)
    if verb == "DELETE" and "namespaces" in parts:
        return  # may legitimately delete the fuzz namespace itself
    try:
        resp = kube_client.request(
            verb,
            path,
            content=b"{}",
            params={"timeoutSeconds": "1"},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    except httpx.InvalidURL:
        return
    assert resp.status_code < 500, (verb, path, resp.text)
