"""Sandbox records: the agent's memory of every netns it made, kept on disk.

A record is written *before* its netns is created and removed only *after* the netns is
gone, so a crash at any point leaves a record that the next start finds and tears down.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SandboxRecord:
    """One pod incarnation's sandbox on this host."""

    namespace: str
    name: str
    uid: str
    node: str
    netns: str
    container_id: str
    result: dict[str, Any] | None = None
    """The CNI ADD result (the cache that DEL gets as prevResult); None until ADD succeeded."""
    started_at: str | None = None
    """When the sandbox became ready (the container's ``startedAt``)."""
    del_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class RecordStore:
    """Records as JSON files named after their netns, mirrored in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, SandboxRecord] = {}
        for path in sorted(directory.glob("*.json")):
            data = json.loads(path.read_text())
            self._records[data["netns"]] = SandboxRecord(**data)

    def all(self) -> list[SandboxRecord]:
        return list(self._records.values())

    def for_key(self, key: str) -> list[SandboxRecord]:
        return [r for r in self._records.values() if r.key == key]

    def save(self, record: SandboxRecord) -> None:
        path = self.directory / f"{record.netns}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1, sort_keys=True))
        tmp.replace(path)
        self._records[record.netns] = record

    def remove(self, record: SandboxRecord) -> None:
        (self.directory / f"{record.netns}.json").unlink(missing_ok=True)
        self._records.pop(record.netns, None)
