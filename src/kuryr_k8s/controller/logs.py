"""Structured logs: every line carries the pod and the Neutron port it is about.

Reconcilers set the context once (:func:`bind`); asyncio copies context variables into
each task, so concurrent reconciles never mix their fields. :class:`KeyValueFormatter`
renders ``ts level logger msg pod=ns/name port=<id>``, :class:`JsonFormatter` one JSON
object per line for log shippers.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

POD: contextvars.ContextVar[str] = contextvars.ContextVar("kuryr_pod", default="-")
PORT: contextvars.ContextVar[str] = contextvars.ContextVar("kuryr_port", default="-")


def bind(*, pod: str | None = None, port: str | None = None) -> None:
    """Set the pod (``namespace/name``) and/or port id for the rest of this task."""
    if pod is not None:
        POD.set(pod)
    if port is not None:
        PORT.set(port)


class ContextFilter(logging.Filter):
    """Adds ``pod`` and ``port`` attributes to every record (``-`` when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.pod = POD.get()
        record.port = PORT.get()
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        line = (
            f"{ts}Z {record.levelname:<7} {record.name} {record.getMessage()} "
            f"pod={getattr(record, 'pod', '-')} port={getattr(record, 'port', '-')}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pod": getattr(record, "pod", "-"),
            "port": getattr(record, "port", "-"),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Configure the root logger once, in ``main()``."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "openstack", "keystoneauth", "urllib3", "stevedore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
