"""Decoding of ``application/vnd.kubernetes.protobuf`` request bodies, for a few kinds.

kubectl's typed generators (``kubectl create namespace|configmap|secret|serviceaccount``)
send protobuf, not JSON. We decode the Kubernetes envelope (magic ``k8s\\0`` then a
``runtime.Unknown``) and the messages of those kinds, with field numbers from the
``generated.proto`` files of k8s.io/api and k8s.io/apimachinery. Any other kind gets 415, so
the client knows to send JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """The body is not a protobuf message we can decode."""


class UnsupportedKind(ProtobufError):
    """A well-formed body of a kind we do not decode from protobuf (send JSON instead)."""


# A schema maps field numbers to (json name, type). Types: "string", "bytes", "int", "bool",
# "time", a nested schema (dict), ("map", value type) or ("list", element type).
Schema = dict[int, tuple[str, Any]]

_TYPE_META: Schema = {1: ("apiVersion", "string"), 2: ("kind", "string")}
_TIME: Schema = {1: ("seconds", "int"), 2: ("nanos", "int")}
_OWNER: Schema = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    4: ("selfLink", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", ("map", "string")),
    12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("list", _OWNER)),
    14: ("finalizers", ("list", "string")),
}
_NAME_REF: Schema = {1: ("name", "string")}
_OBJECT_REF: Schema = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("resourceVersion", "string"),
    7: ("fieldPath", "string"),
}
KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): {
        1: ("metadata", _META),
        2: ("spec", {1: ("finalizers", ("list", "string"))}),
        3: ("status", {1: ("phase", "string")}),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", _META),
        2: ("data", ("map", "string")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", _META),
        2: ("data", ("map", "bytes")),
        3: ("type", "string"),
        4: ("stringData", ("map", "string")),
        5: ("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", _META),
        2: ("secrets", ("list", _OBJECT_REF)),
        3: ("imagePullSecrets", ("list", _NAME_REF)),
        4: ("automountServiceAccountToken", "bool"),
    },
    ("authentication.k8s.io/v1", "TokenRequest"): {  # kubectl create token
        1: ("metadata", _META),
        2: (
            "spec",
            {
                1: ("audiences", ("list", "string")),
                3: (
                    "boundObjectRef",
                    {
                        1: ("kind", "string"),
                        2: ("apiVersion", "string"),
                        3: ("name", "string"),
                        4: ("uid", "string"),
                    },
                ),
                4: ("expirationSeconds", "int"),
            },
        ),
    },
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {  # kubectl auth can-i
        1: ("metadata", _META),
        2: (
            "spec",
            {
                1: (
                    "resourceAttributes",
                    {
                        1: ("namespace", "string"),
                        2: ("verb", "string"),
                        3: ("group", "string"),
                        4: ("version", "string"),
                        5: ("resource", "string"),
                        6: ("subresource", "string"),
                        7: ("name", "string"),
                    },
                ),
                2: ("nonResourceAttributes", {1: ("path", "string"), 2: ("verb", "string")}),
            },
        ),
    },
    ("authentication.k8s.io/v1", "SelfSubjectReview"): {1: ("metadata", _META)},
}
_RULE: Schema = {
    1: ("verbs", ("list", "string")),
    2: ("apiGroups", ("list", "string")),
    3: ("resources", ("list", "string")),
    4: ("resourceNames", ("list", "string")),
    5: ("nonResourceURLs", ("list", "string")),
}
_SUBJECT: Schema = {
    1: ("kind", "string"),
    2: ("apiGroup", "string"),
    3: ("name", "string"),
    4: ("namespace", "string"),
}
_ROLE_REF: Schema = {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")}
for _kind in ("Role", "ClusterRole"):  # kubectl create role|clusterrole
    KINDS[("rbac.authorization.k8s.io/v1", _kind)] = {
        1: ("metadata", _META),
        2: ("rules", ("list", _RULE)),
    }
for _kind in ("RoleBinding", "ClusterRoleBinding"):  # kubectl create (cluster)rolebinding
    KINDS[("rbac.authorization.k8s.io/v1", _kind)] = {
        1: ("metadata", _META),
        2: ("subjects", ("list", _SUBJECT)),
        3: ("roleRef", _ROLE_REF),
    }


# ---------------------------------------------------------------- wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ProtobufError("truncated field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + width], pos + width
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, wire, value


def _scalar(kind: str, value: Any) -> Any:
    if kind == "string":
        return bytes(value).decode("utf-8")
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return value - (1 << 64) if value >= 1 << 63 else value
    raise ProtobufError(f"unknown scalar {kind}")


def _time(buf: bytes) -> str:
    seconds = decode_message(buf, _TIME).get("seconds", 0)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(kind: Any, wire: int, value: Any) -> Any:
    if isinstance(kind, dict):
        return decode_message(_bytes(wire, value), kind)
    if kind == "time":
        return _time(_bytes(wire, value))
    if kind in ("string", "bytes"):
        return _scalar(kind, _bytes(wire, value))
    if wire != 0:
        raise ProtobufError("expected a varint")
    return _scalar(kind, value)


def _bytes(wire: int, value: Any) -> bytes:
    if wire != 2:
        raise ProtobufError("expected a length-delimited field")
    return bytes(value)


def decode_message(buf: bytes, schema: Schema) -> Obj:
    out: Obj = {}
    for number, wire, value in fields(buf):
        if number not in schema:
            continue  # unknown or ignored (managedFields)
        name, kind = schema[number]
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = decode_message(
                _bytes(wire, value), {1: ("key", "string"), 2: ("value", kind[1])}
            )
            default = "" if kind[1] == "string" else _scalar(kind[1], b"")
            out.setdefault(name, {})[entry.get("key", "")] = entry.get("value", default)
        elif isinstance(kind, tuple) and kind[0] == "list":
            out.setdefault(name, []).append(_value(kind[1], wire, value))
        else:
            decoded = _value(kind, wire, value)
            if decoded not in ("", 0) or isinstance(decoded, bool):
                out[name] = decoded  # Go omits empty non-pointer fields from JSON
    return out


def decode(raw: bytes) -> Obj:
    """The JSON-shaped object of a Kubernetes protobuf body."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    body = raw[len(MAGIC) :]
    envelope = decode_message(body, {1: ("typeMeta", _TYPE_META)})
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise UnsupportedKind(f"protobuf is not supported for {api_version} {kind}")
    inner = next((bytes(v) for n, w, v in fields(body) if n == 2 and w == 2), b"")
    try:
        obj = decode_message(inner, schema)
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"invalid UTF-8 in a string field: {exc}") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
