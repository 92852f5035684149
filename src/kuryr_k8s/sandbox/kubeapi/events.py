"""``events.k8s.io/v1`` Events: the same objects as core ``v1`` Events, other field names.

The real server stores one Event type and converts on the way in and out
(``regarding`` = ``involvedObject``, ``note`` = ``message``, ``reportingController`` =
``reportingComponent``, ``deprecatedSource``/``deprecated*Timestamp``/``deprecatedCount`` =
``source``/``*Timestamp``/``count``). Creating through ``events.k8s.io/v1`` is validated
strictly (``eventTime``, ``type``, reporting fields, ``action``), through core ``v1`` only
with the legacy rules.
"""

from __future__ import annotations

from typing import Any

from kuryr_k8s.sandbox.kubeapi import errors
from kuryr_k8s.sandbox.kubeapi.errors import Cause

Obj = dict[str, Any]
GROUP = "events.k8s.io"

_RENAMES = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
)
_NEVER_OMITTED_CORE: tuple[tuple[str, Any], ...] = (
    ("source", {}),
    ("firstTimestamp", None),
    ("lastTimestamp", None),
    ("eventTime", None),
    ("reportingComponent", ""),
    ("reportingInstance", ""),
)
_NEVER_OMITTED_V1: tuple[tuple[str, Any], ...] = (
    ("eventTime", None),
    ("deprecatedSource", {}),
    ("deprecatedFirstTimestamp", None),
    ("deprecatedLastTimestamp", None),
)


def core_defaults(obj: Obj) -> None:
    """Fields a core Event always serialises (no ``omitempty`` in the Go type)."""
    for key, value in _NEVER_OMITTED_CORE:
        if key not in obj:
            obj[key] = {} if isinstance(value, dict) else value


def to_v1(obj: Obj) -> Obj:
    out: Obj = {}
    renames = dict(_RENAMES)
    for key, value in obj.items():
        new = renames.get(key, key)
        if new == "reportingController" and not value:
            continue
        if new == "reportingInstance" and not value:
            continue
        out[new] = value
    for key, value in _NEVER_OMITTED_V1:
        if key not in out:
            out[key] = {} if isinstance(value, dict) else value
    return out


def to_core(obj: Obj) -> Obj:
    back = {new: old for old, new in _RENAMES}
    return {back.get(k, k): v for k, v in obj.items()}


def validate_v1_create(obj: Obj) -> list[Cause]:
    """Strict rules for events created through ``events.k8s.io/v1`` (``obj`` in core form)."""
    causes: list[Cause] = []
    ns = obj["metadata"].get("namespace", "")
    involved = obj.get("involvedObject") or {}
    if not obj.get("eventTime"):
        if involved.get("namespace") and involved["namespace"] != ns:
            causes.append(
                errors.invalid_value(
                    "involvedObject.namespace",
                    involved["namespace"],
                    "does not match event.namespace",
                )
            )
    else:
        for field in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not obj.get(field):
                name = "reportingController" if field == "reportingComponent" else field
                causes.append(errors.required(name))
    if not obj.get("eventTime"):
        causes.append(errors.required("eventTime"))
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(
            Cause(
                "FieldValueInvalid",
                "type",
                f'Invalid value: "": has invalid value: {obj.get("type") or ""}',
            )
        )
    return causes
