"""Decoding of Kubernetes protobuf bodies (built here with a tiny encoder)."""

from __future__ import annotations

import pytest

from kuryr_k8s.sandbox.kubeapi import protobuf

pytestmark = pytest.mark.unit


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _entry(number: int, key: str, value: bytes | str) -> bytes:
    return _field(number, _field(1, key) + _field(2, value))


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version) + _field(2, kind)
    return protobuf.MAGIC + _field(1, type_meta) + _field(2, raw) + _field(4, "application/vnd")


def test_configmap() -> None:
    meta = _field(1, "cm") + _field(2, "") + _field(7, 0) + _entry(11, "app", "web")
    raw = _field(1, meta) + _entry(2, "k", "v") + _entry(2, "empty", "") + _entry(3, "b", b"\x00")
    assert protobuf.decode(_envelope("v1", "ConfigMap", raw)) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"app": "web"}},
        "data": {"k": "v", "empty": ""},
        "binaryData": {"b": "AA=="},
    }


def test_secret_and_owner_references() -> None:
    owner = _field(1, "Pod") + _field(3, "p") + _field(4, "u-1") + _field(5, "v1") + _field(6, 1)
    meta = _field(1, "s") + _field(13, owner) + _field(14, "a/b") + _field(14, "c/d")
    raw = _field(1, meta) + _entry(2, "pw", b"secret") + _field(3, "Opaque") + _field(5, 0)
    obj = protobuf.decode(_envelope("v1", "Secret", raw))
    assert obj["metadata"]["ownerReferences"] == [
        {"kind": "Pod", "name": "p", "uid": "u-1", "apiVersion": "v1", "controller": True}
    ]
    assert obj["metadata"]["finalizers"] == ["a/b", "c/d"]
    assert obj["data"] == {"pw": "c2VjcmV0"}
    assert obj["type"] == "Opaque"
    assert obj["immutable"] is False


def test_errors() -> None:
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b'{"json": true}')
    with pytest.raises(protobuf.UnsupportedKind):
        protobuf.decode(_envelope("apps/v1", "Deployment", b""))
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(_envelope("v1", "ConfigMap", b"\x0a\xff"))
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(_envelope("v1", "ConfigMap", _field(1, _field(1, b"\xff\xfe"))))
