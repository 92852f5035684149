"""API errors, rendered as ``meta/v1 Status`` objects like the real kube-apiserver.

Every failure the emulator reports is an :class:`ApiError`; the HTTP layer turns it into a
response with the same ``code``, ``reason``, ``message`` and ``details`` a real server sends::

    ApiError
    ├── bad_request()        400 BadRequest
    ├── forbidden()          403 Forbidden
    ├── not_found()          404 NotFound
    ├── method_not_allowed() 405 MethodNotAllowed
    ├── already_exists()     409 AlreadyExists
    ├── conflict()           409 Conflict
    ├── gone()               410 Expired
    ├── too_large()          413 RequestEntityTooLarge
    ├── unsupported_media()  415 UnsupportedMediaType
    └── invalid()            422 Invalid (with field causes)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Cause:
    """One field error of a 422 Invalid answer (``details.causes[]``)."""

    reason: str
    field: str
    message: str

    def render(self) -> Obj:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def summary(self) -> str:
        return f"{self.field}: {self.message}"


def required(path: str) -> Cause:
    return Cause("FieldValueRequired", path, "Required value")


def invalid_value(path: str, value: Any, detail: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else _go_repr(value)
    return Cause("FieldValueInvalid", path, f"Invalid value: {shown}: {detail}")


def unsupported_value(path: str, value: Any, allowed: list[str]) -> Cause:
    quoted = ", ".join(f'"{a}"' for a in allowed)
    return Cause(
        "FieldValueNotSupported",
        path,
        f'Unsupported value: "{value}": supported values: {quoted}',
    )


def forbidden_field(path: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", path, f"Forbidden: {detail}")


def duplicate(path: str, value: Any) -> Cause:
    return Cause("FieldValueDuplicate", path, f'Duplicate value: "{value}"')


def type_error(path: str, value: Any, expected: str) -> Cause:
    return Cause(
        "FieldValueTypeInvalid",
        path,
        f'Invalid value: "{_json_type(value)}": {path} in body must be of type {expected}: '
        f'"{_json_type(value)}"',
    )


def _go_repr(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


_NO_EMPTY_DETAILS = ("", "BadRequest", "RequestEntityTooLarge", "Expired", "Unauthorized")
"""Reasons whose Status has no ``details`` when there are none (others send ``{}``)."""


@dataclass
class ApiError(Exception):
    """A failed API call; ``status()`` is the body the client receives."""

    code: int
    reason: str
    message: str
    details: Obj = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details or self.reason not in _NO_EMPTY_DETAILS:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def _details(resource: str, group: str, name: str) -> Obj:
    out: Obj = {}
    if name:
        out["name"] = name
    if group:
        out["group"] = group
    if resource:
        out["kind"] = resource
    return out


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(resource: str, group: str, name: str, message: str) -> ApiError:
    what = f'{_qualified(resource, group)} "{name}"' if name else _qualified(resource, group)
    return ApiError(
        403, "Forbidden", f"{what} is forbidden: {message}", _details(resource, group, name)
    )


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        _details(resource, group, name),
    )


def no_such_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        _details(resource, group, name),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        _details(resource, group, name),
    )


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def unsupported_media(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}) - accepted media "
        f"types include: {', '.join(accepted)}",
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    summary = (
        causes[0].summary() if len(causes) == 1 else f"[{', '.join(c.summary() for c in causes)}]"
    )
    details = _details(kind, group, name)
    details["causes"] = [c.render() for c in causes]
    return ApiError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {summary}'
        if group
        else f'{kind} "{name}" is invalid: {summary}',
        details,
    )


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)
