"""Structural ``openAPIV3Schema`` handling for custom resources: defaulting, pruning, validation.

Like the apiextensions-apiserver, unknown fields are dropped (pruned) unless the schema says
``x-kubernetes-preserve-unknown-fields: true``; defaults are filled in; then types, required
fields, enums, bounds and patterns are checked. Only the common subset of OpenAPI is
interpreted (no ``allOf``/``oneOf``/``anyOf``/``not``, no CEL rules, no formats).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.errors import Cause

Obj = dict[str, Any]

_TOP_LEVEL = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves(schema: Obj) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def prune(value: Any, schema: Obj, path: str = "", *, top: bool = True) -> tuple[Any, list[str]]:
    """Drop fields the schema does not know; returns the pruned copy and the dropped paths."""
    dropped: list[str] = []
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props: Obj = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out: Obj = {}
        for key, item in value.items():
            sub_path = _join(path, key)
            if top and key in _TOP_LEVEL:
                out[key] = item
            elif key in props:
                out[key], more = prune(item, props[key], sub_path, top=False)
                dropped += more
            elif isinstance(extra, dict):
                out[key], more = prune(item, extra, sub_path, top=False)
                dropped += more
            elif _preserves(schema) or extra is True:
                out[key] = item
            else:
                dropped.append(sub_path)
        return out, dropped
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items: list[Any] = []
        for i, item in enumerate(value):
            pruned, more = prune(item, schema["items"], f"{path}[{i}]", top=False)
            items.append(pruned)
            dropped += more
        return items, dropped
    return value, dropped


def apply_defaults(value: Any, schema: Obj) -> Any:
    """Fill in ``default`` values of missing properties (recursively, in place)."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in (schema.get("properties") or {}):
                    apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def _type_ok(value: Any, schema: Obj) -> bool:
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str | int) and not isinstance(value, bool)
    if not expected:
        return True
    if isinstance(value, bool) and expected != "boolean":
        return False
    return isinstance(value, _TYPES.get(expected, (object,)))


def validate(value: Any, schema: Obj, path: str = "", *, top: bool = True) -> list[Cause]:
    """Check ``value`` against ``schema``; returns the field errors (empty when valid)."""
    if value is None:
        if schema.get("nullable"):
            return []
        return [errors.type_error(path, value, schema.get("type", "object"))] if path else []
    if not _type_ok(value, schema):
        return [errors.type_error(path, value, str(schema.get("type")))]
    causes = _scalar_checks(value, schema, path)
    if isinstance(value, dict):
        causes += _object_checks(value, schema, path, top)
    elif isinstance(value, list):
        causes += _array_checks(value, schema, path)
    return causes


def _scalar_checks(value: Any, schema: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        causes.append(errors.unsupported_value(path, value, [str(e) for e in enum]))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            causes.append(
                errors.invalid_value(
                    path,
                    value,
                    f"{path} in body should be greater than or equal to {schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            causes.append(
                errors.invalid_value(
                    path,
                    value,
                    f"{path} in body should be less than or equal to {schema['maximum']}",
                )
            )
    if isinstance(value, str):
        causes += _string_checks(value, schema, path)
    return causes


def _string_checks(value: str, schema: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(
            errors.Cause(
                "FieldValueTooLong",
                path,
                f"Too long: may not be more than {schema['maxLength']} bytes",
            )
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            errors.invalid_value(
                path, value, f"{path} in body should be at least {schema['minLength']} chars long"
            )
        )
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True
        if not matched:
            causes.append(
                errors.invalid_value(path, value, f"{path} in body should match '{pattern}'")
            )
    return causes


def _object_checks(value: Obj, schema: Obj, path: str, top: bool) -> list[Cause]:
    causes: list[Cause] = []
    props: Obj = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in value:
            causes.append(errors.required(_join(path, key)))
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if top and key in _TOP_LEVEL:
            continue
        if key in props:
            causes += validate(item, props[key], _join(path, key), top=False)
        elif isinstance(extra, dict):
            causes += validate(item, extra, _join(path, key), top=False)
    return causes


def _array_checks(value: list[Any], schema: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            errors.Cause(
                "FieldValueTooMany",
                path,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            errors.invalid_value(
                path, len(value), f"{path} in body should have at least {schema['minItems']} items"
            )
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            causes += validate(item, items, f"{path}[{i}]", top=False)
    return causes


def check_structural(schema: Any, path: str) -> list[Cause]:
    """A few of the structural-schema rules the real server enforces on CRDs."""
    if not isinstance(schema, dict):
        return [errors.required(path)]
    causes: list[Cause] = []
    kind = schema.get("type")
    if kind is not None and kind not in _TYPES:
        causes.append(errors.unsupported_value(f"{path}.type", kind, sorted(_TYPES)))
    if kind is None and not (
        schema.get("x-kubernetes-int-or-string")
        or schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        causes.append(errors.required(f"{path}.type"))
    for key, sub in (schema.get("properties") or {}).items():
        causes += check_structural(sub, f"{path}.properties[{key}]")
    if isinstance(schema.get("items"), dict):
        causes += check_structural(schema["items"], f"{path}.items")
    return causes
