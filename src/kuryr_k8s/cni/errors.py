"""CNI-side errors, and the one function that maps the error tree to CNI error codes.

::

    KuryrError
    ├── TemporaryError ─────────────────────────────────▶ 11 try again later
    │   ├── ResourceNotReady
    │   │   └── VifTimeout        VIF not in the KuryrPort in time
    │   └── BridgeMissing         br-int is not in OVSDB (yet)
    └── PermanentError ─────────────────────────────────▶ 102 (ours)
        ├── ConfigError ────────────────────────────────▶ 7 invalid network config
        ├── UnknownContainer      netns or pod gone ────▶ 3 container unknown
        ├── InvalidRequest        bad env/config ───────▶ 4 / 7 (``code``)
        ├── UnsupportedVif        no driver for vifType ▶ 100
        └── HostError             netlink/OVSDB refused ▶ 102
    spec.CniError                 passes through with its own code
    anything else (a bug)  ─────────────────────────────▶ 101 internal
"""

from __future__ import annotations

from kuryr_k8s.cni import spec
from kuryr_k8s.model.errors import (
    ConfigError,
    KuryrError,
    PermanentError,
    ResourceNotReady,
    TemporaryError,
)
from kuryr_k8s.model.vif import InvalidVif

PERMANENT = 102
"""Ours: a permanent failure that is not one of the well-known codes."""


class VifTimeout(ResourceNotReady):
    """The pod's VIF did not appear (or did not become usable) in time."""


class BridgeMissing(TemporaryError):
    """The integration bridge is not in the OVS database."""


class UnknownContainer(PermanentError):
    """The pod or its network namespace does not exist."""


class InvalidRequest(PermanentError):
    """The request is malformed; ``code`` is the CNI code to answer with."""

    def __init__(self, message: str, code: int = spec.INVALID_ENVIRONMENT) -> None:
        super().__init__(message)
        self.code = code


class UnsupportedVif(PermanentError):
    """No binding driver for this VIF kind on this node."""


class HostError(PermanentError):
    """The kernel or OVSDB refused an operation."""


def reason(exc: BaseException) -> str:
    """A short, stable label for metrics (``failures_total{reason=...}``)."""
    if isinstance(exc, spec.CniError):
        return f"cni_{exc.code}"
    return type(exc).__name__


_CODES: tuple[tuple[type[BaseException], int, str], ...] = (
    # Most specific first: the first matching class wins.
    (UnknownContainer, spec.UNKNOWN_CONTAINER, "container unknown or does not exist"),
    (ConfigError, spec.INVALID_NETWORK_CONFIG, "invalid configuration"),
    (UnsupportedVif, spec.UNSUPPORTED_VIF, "VIF type not supported on this node"),
    (VifTimeout, spec.TRY_AGAIN_LATER, "timed out waiting for the pod's VIF"),
    (BridgeMissing, spec.TRY_AGAIN_LATER, "integration bridge missing"),
    (TemporaryError, spec.TRY_AGAIN_LATER, "temporary failure, try again later"),
    (InvalidVif, PERMANENT, "the pod's VIF in its KuryrPort is invalid"),
    (KuryrError, PERMANENT, "permanent failure"),
)


def to_cni_error(exc: BaseException) -> spec.CniError:
    """The one place where our errors become CNI errors (code, msg, details)."""
    if isinstance(exc, spec.CniError):
        return exc
    if isinstance(exc, InvalidRequest):
        return spec.CniError(exc.code, "invalid request", str(exc))
    for cls, code, msg in _CODES:
        if isinstance(exc, cls):
            return spec.CniError(code, msg, str(exc))
    return spec.CniError(spec.INTERNAL, "internal error in kuryr-daemon", f"{reason(exc)}: {exc}")
