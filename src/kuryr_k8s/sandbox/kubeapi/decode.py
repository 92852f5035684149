"""Request body decoding: the type checks Go's JSON decoding does before anything else.

A real server rejects ``{"metadata": {"labels": []}}`` with 400 BadRequest while decoding
into the Go struct; we check the same shapes for the fields every kind has, and for the
pod fields the emulator itself reads, so later stages never see the wrong types.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.resources import ResourceType

Obj = dict[str, Any]

MAX_BODY = 3 * 1024 * 1024

_GO_TYPES = {
    dict: "map[string]interface {}",
    list: "[]interface {}",
    str: "string",
    bool: "bool",
    int: "int64",
    float: "float64",
}


def _no_constants(name: str) -> Any:
    raise ValueError(f"invalid JSON value {name}")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise errors.bad_request(f"error decoding body: {exc}") from exc


class _JsonYamlLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: converted to JSON, so timestamps stay strings."""


_JsonYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _as_json(value: Any) -> Any:
    """Keep only what JSON can carry; map keys become strings, as sigs.k8s.io/yaml does."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"unsupported YAML value of type {type(value).__name__}")


def parse_yaml_or_json(raw: bytes) -> Any:
    try:
        return _as_json(yaml.load(raw, Loader=_JsonYamlLoader))  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise errors.bad_request(f"error decoding YAML: {exc}") from exc


def _kind_of(value: Any) -> str:
    for py, go in _GO_TYPES.items():
        if isinstance(value, py) and not (py is int and isinstance(value, bool)):
            return go
    return "null"


class _Shape:
    def __init__(self, rt: ResourceType) -> None:
        self.rt = rt

    def fail(self, path: str, value: Any, want: str) -> errors.ApiError:
        return errors.bad_request(
            f'{self.rt.kind} in version "{self.rt.version}" cannot be handled as a '
            f"{self.rt.kind}: json: cannot unmarshal {_kind_of(value)} into Go struct field "
            f"{self.rt.kind}.{path} of type {want}"
        )

    def need(self, value: Any, kind: type, path: str, want: str) -> None:
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            raise self.fail(path, value, want)

    def string_map(self, value: Any, path: str) -> None:
        self.need(value, dict, path, "map[string]string")
        for v in (value or {}).values():
            self.need(v, str, path, "map[string]string")

    def objects(self, value: Any, path: str) -> list[Obj]:
        self.need(value, list, path, "[]object")
        for item in value or []:
            self.need(item, dict, path, "object")
        return list(value or [])


def drop_nulls(value: Any) -> Any:
    """JSON ``null`` decodes to a Go zero value, which is then omitted: drop such keys."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def check_shape(rt: ResourceType, body: Any) -> Obj:
    """Raise 400 unless ``body`` decodes into the kind; returns it (without nulls)."""
    if isinstance(body, dict):
        body = drop_nulls(body)
    if not isinstance(body, dict):
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"json: cannot unmarshal {_kind_of(body)} into Go value of type struct"
        )
    shape = _Shape(rt)
    for key in ("apiVersion", "kind"):
        shape.need(body.get(key), str, key, "string")
    meta = body.get("metadata")
    shape.need(meta, dict, "metadata", "v1.ObjectMeta")
    _check_meta(shape, meta or {})
    if rt.crd is None:
        for key in ("spec", "status"):
            shape.need(body.get(key), dict, key, "object")
    extra = _EXTRA.get(rt.key)
    if extra is not None:
        extra(shape, body.get("spec") or {})
    return body


def _check_meta(shape: _Shape, meta: Obj) -> None:
    for key in ("name", "generateName", "namespace", "resourceVersion", "uid"):
        shape.need(meta.get(key), str, f"metadata.{key}", "string")
    shape.string_map(meta.get("labels"), "metadata.labels")
    shape.string_map(meta.get("annotations"), "metadata.annotations")
    shape.need(meta.get("finalizers"), list, "metadata.finalizers", "[]string")
    for fin in meta.get("finalizers") or []:
        shape.need(fin, str, "metadata.finalizers", "[]string")
    for ref in shape.objects(meta.get("ownerReferences"), "metadata.ownerReferences"):
        for key in ("apiVersion", "kind", "name", "uid"):
            shape.need(ref.get(key), str, f"metadata.ownerReferences.{key}", "string")
        for key in ("controller", "blockOwnerDeletion"):
            shape.need(ref.get(key), bool, f"metadata.ownerReferences.{key}", "bool")


def _check_pod(shape: _Shape, spec: Obj) -> None:
    for key in (
        "nodeName",
        "restartPolicy",
        "serviceAccountName",
        "serviceAccount",
        "schedulerName",
        "dnsPolicy",
    ):
        shape.need(spec.get(key), str, f"spec.{key}", "string")
    shape.need(
        spec.get("terminationGracePeriodSeconds"),
        int,
        "spec.terminationGracePeriodSeconds",
        "int64",
    )
    shape.need(spec.get("tolerations"), list, "spec.tolerations", "[]v1.Toleration")
    for field in ("containers", "initContainers"):
        for c in shape.objects(spec.get(field), f"spec.{field}"):
            for key in ("name", "image"):
                shape.need(c.get(key), str, f"spec.{field}.{key}", "string")
            shape.need(c.get("resources"), dict, f"spec.{field}.resources", "object")
            for port in shape.objects(c.get("ports"), f"spec.{field}.ports"):
                shape.need(
                    port.get("containerPort"), int, f"spec.{field}.ports.containerPort", "int32"
                )
                shape.need(port.get("protocol"), str, f"spec.{field}.ports.protocol", "string")


def _check_service(shape: _Shape, spec: Obj) -> None:
    for key in ("type", "clusterIP"):
        shape.need(spec.get(key), str, f"spec.{key}", "string")
    for port in shape.objects(spec.get("ports"), "spec.ports"):
        shape.need(port.get("port"), int, "spec.ports.port", "int32")
        shape.need(port.get("name"), str, "spec.ports.name", "string")
        shape.need(port.get("protocol"), str, "spec.ports.protocol", "string")


def _check_crd(shape: _Shape, spec: Obj) -> None:
    shape.need(spec.get("group"), str, "spec.group", "string")
    shape.need(spec.get("scope"), str, "spec.scope", "string")
    names = spec.get("names")
    shape.need(names, dict, "spec.names", "v1.CustomResourceDefinitionNames")
    for key in ("plural", "singular", "kind", "listKind"):
        shape.need((names or {}).get(key), str, f"spec.names.{key}", "string")
    for key in ("shortNames", "categories"):
        shape.need((names or {}).get(key), list, f"spec.names.{key}", "[]string")
    for version in shape.objects(spec.get("versions"), "spec.versions"):
        shape.need(version.get("name"), str, "spec.versions.name", "string")
        shape.need(version.get("schema"), dict, "spec.versions.schema", "object")
        shape.need(version.get("subresources"), dict, "spec.versions.subresources", "object")
        shape.objects(
            version.get("additionalPrinterColumns"), "spec.versions.additionalPrinterColumns"
        )


_EXTRA = {
    "/pods": _check_pod,
    "/services": _check_service,
    "apiextensions.k8s.io/customresourcedefinitions": _check_crd,
}
