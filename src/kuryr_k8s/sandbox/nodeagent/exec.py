"""``kuryr sandbox exec POD -- CMD``: run a command inside a pod's network namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from kuryr_k8s.model.errors import ResourceNotReady
from kuryr_k8s.sandbox.nodeagent import netns as ns
from kuryr_k8s.sandbox.nodeagent.config import DEFAULT_STATE_DIR
from kuryr_k8s.sandbox.nodeagent.records import RecordStore, SandboxRecord


def find_sandbox(
    namespace: str, name: str, *, state_dir: Path = DEFAULT_STATE_DIR
) -> SandboxRecord:
    """The ready sandbox of pod ``namespace/name`` on this host (``ResourceNotReady`` if none)."""
    records = [
        r
        for r in RecordStore(state_dir / "sandboxes").for_key(f"{namespace}/{name}")
        if r.result is not None and ns.netns_path(r.netns).exists()
    ]
    if not records:
        raise ResourceNotReady(
            f"pod {namespace}/{name} has no running sandbox on this host "
            f"(records in {state_dir / 'sandboxes'})"
        )
    return max(records, key=lambda r: r.started_at or "")


def exec_in_pod(
    namespace: str,
    name: str,
    argv: Sequence[str],
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    capture_output: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in the pod's netns (with its resolv.conf), like ``kubectl exec``.

    stdin/stdout/stderr are inherited unless ``capture_output``; the caller exits with
    ``returncode``. Raises ``ResourceNotReady`` when the pod has no sandbox here.
    """
    if not argv:
        raise ValueError("exec needs a command")
    record = find_sandbox(namespace, name, state_dir=state_dir)
    return subprocess.run(
        ns.exec_argv(record.netns, argv), check=False, capture_output=capture_output
    )
