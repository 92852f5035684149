"""The project's error tree, split by what the caller should do about it.

::

    KuryrError                      base of everything we raise on purpose
    ├── TemporaryError(delay=)      retry later (with backoff); e.g. Neutron 5xx, timeouts
    │   └── ResourceNotReady        something we wait for does not exist yet
    └── PermanentError              a person must act; retrying will not help
        └── ConfigError             bad or missing configuration (names section/option/value)

Adapters (``k8s``, ``openstack``, host helpers) translate library exceptions into this tree
at their boundary; the CNI side maps it to CNI error codes in exactly one function.
"""

from __future__ import annotations


class KuryrError(Exception):
    """Base class of every error this project raises on purpose."""


class TemporaryError(KuryrError):
    """The operation may succeed if retried later.

    ``delay`` is a hint in seconds; ``None`` lets the caller's backoff decide.
    """

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ResourceNotReady(TemporaryError):
    """Something this operation waits for does not exist or is not ready yet."""


class PermanentError(KuryrError):
    """Retrying will not help: a person must change something first."""


class ConfigError(PermanentError):
    """Invalid or missing configuration. The message names the option and what to do."""
