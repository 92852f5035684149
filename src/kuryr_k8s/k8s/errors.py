"""Kubernetes API errors, translated at the client boundary into the project's error tree.

::

    KuryrError
    ├── ApiError(status, reason, message)      any non-2xx answer of the API server
    │   ├── NotFound            404             the object (or namespace) does not exist
    │   ├── AlreadyExists       409 AlreadyExists  create of a name that exists
    │   ├── Gone                410             resourceVersion too old: re-list
    │   ├── Conflict            409 Conflict    (also a TemporaryError, delay 0): re-read, retry
    │   ├── BadRequest          400             (also a PermanentError)
    │   ├── Unauthorized        401             (also a PermanentError)
    │   ├── Forbidden           403             (also a PermanentError)
    │   ├── Invalid             422             (also a PermanentError)
    │   └── ServerError         5xx, 429        (also a TemporaryError, delay from Retry-After)
    └── TemporaryError
        └── ApiUnreachable                      connection refused/reset, timeouts, broken stream

``NotFound``, ``AlreadyExists`` and ``Gone`` are deliberately neither temporary nor
permanent: what they mean depends on the caller (a delete that finds nothing succeeded).
"""

from __future__ import annotations

import re
from typing import Any

from kuryr_k8s.model.errors import KuryrError, PermanentError, TemporaryError


class ApiError(KuryrError):
    """The API server answered with a non-2xx status (or a watch ERROR event)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object, or its namespace, does not exist."""


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists: a create met an existing name."""


class Gone(ApiError):
    """410: the requested resourceVersion is too old; list again."""


class Conflict(ApiError, TemporaryError):
    """409 Conflict: the object changed since it was read (resourceVersion/uid mismatch)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        ApiError.__init__(self, status, reason, message)
        self.delay = 0.0


class BadRequest(ApiError, PermanentError):
    """400: the request is malformed."""


class Unauthorized(ApiError, PermanentError):
    """401: the credentials were rejected."""


class Forbidden(ApiError, PermanentError):
    """403: RBAC denies the verb on this resource.

    The server's message (``User "U" cannot VERB resource "RES" in API group "G" in the
    namespace "NS"``) is read into ``user``, ``verb``, ``resource``, ``group`` and
    ``namespace``; ``str()`` then adds which ServiceAccount lacks what and where to grant it.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        ApiError.__init__(self, status, reason, message)
        found = _DENIED.search(message)
        self.user = found["user"] if found else ""
        self.verb = found["verb"] if found else ""
        self.resource = found["resource"] if found else ""
        self.group = found["group"] if found else ""
        self.namespace = (found["namespace"] or "") if found else ""
        if found:
            self.args = (f"{self.args[0]} ({self.hint()})",)

    def hint(self) -> str:
        """What to fix: the permission missing, for whom, and where to grant it."""
        where = f'in namespace "{self.namespace}"' if self.namespace else "cluster-wide"
        group = f' in API group "{self.group}"' if self.group else ""
        wanted = f'"{self.verb}" on "{self.resource}"{group} {where}'
        sa = _SA.fullmatch(self.user)
        if sa is None:
            return f'user "{self.user}" lacks {wanted}: grant it through RBAC'
        role = "a Role or ClusterRole" if self.namespace else "a ClusterRole"
        return (
            f"ServiceAccount {sa['ns']}/{sa['name']} lacks {wanted}: add the verb to "
            f"{role} bound to that ServiceAccount (deploy/base/rbac.yaml in our manifests)"
        )


class Invalid(ApiError, PermanentError):
    """422: the object fails validation; the message names the field."""


class ServerError(ApiError, TemporaryError):
    """5xx or 429: the server is overloaded or failing; retry after ``delay`` if given."""

    def __init__(
        self, status: int, reason: str, message: str, *, delay: float | None = None
    ) -> None:
        ApiError.__init__(self, status, reason, message)
        self.delay = delay


class ApiUnreachable(TemporaryError):
    """The API server could not be reached, or the connection broke mid-request."""


_DENIED = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]*)" in API group '
    r'"(?P<group>[^"]*)"(?: in the namespace "(?P<namespace>[^"]*)")?'
)
_SA = re.compile(r"system:serviceaccount:(?P<ns>[^:]+):(?P<name>[^:]+)")

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
    422: Invalid,
}


def error_from_status(status: int, body: Any, *, retry_after: str | None = None) -> ApiError:
    """Build the error for an HTTP status and its (possibly non-JSON) ``Status`` body."""
    reason = ""
    message = ""
    if isinstance(body, dict):
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
        code = body.get("code")
        if isinstance(code, int) and code >= 400:
            status = code
    elif isinstance(body, str):
        message = body.strip()[:500]
    if status == 409:
        cls: type[ApiError] = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(status, reason or "Conflict", message)
    if status == 429 or status >= 500:
        return ServerError(status, reason or "ServerError", message, delay=_seconds(retry_after))
    cls = _BY_STATUS.get(status, ApiError)
    return cls(status, reason or cls.__name__, message)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
