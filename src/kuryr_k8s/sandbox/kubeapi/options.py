"""Request options shared by the REST verbs, and the server clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

STAMP = "%Y-%m-%dT%H:%M:%SZ"


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def timestamp(when: datetime | None = None) -> str:
    """RFC 3339 with second precision, as ``metav1.Time`` is serialized."""
    return (when or now()).strftime(STAMP)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC)


@dataclass
class WriteOptions:
    """``dryRun=All``, ``fieldValidation=Strict``, and the warnings to send back."""

    dry_run: bool = False
    strict: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeleteOptions:
    """``metav1.DeleteOptions`` (from the body or the query)."""

    propagation: str | None = None
    grace: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False
