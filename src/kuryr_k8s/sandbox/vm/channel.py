"""Host side of the guest command channel: JSON lines over QEMU's virtio-serial socket.

QEMU's chardev socket takes one client at a time, so every call holds an ``flock`` on
``chan.lock`` next to the socket: calls from several processes run one after another. A
reply that is not ours (left by a client killed mid-command) is dropped by its id.
Protocol: ``guest_init.py``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuryr_k8s.sandbox.process import SandboxError


class ChannelError(SandboxError):
    """The guest's command channel did not answer (VM not up, or it died)."""


@dataclass(frozen=True)
class ExecResult:
    """What a guest command did (like ``subprocess.CompletedProcess`` with bytes)."""

    argv: list[str]
    rc: int
    stdout: bytes
    stderr: bytes
    seconds: float
    """Wall time seen by the host, channel round trip included."""

    @property
    def returncode(self) -> int:
        return self.rc

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def check(self) -> ExecResult:
        """Raise unless ``rc`` is 0; the error carries the command and its stderr."""
        if self.rc != 0:
            raise SandboxError(
                f"guest command failed ({self.rc}): {' '.join(self.argv)}\n"
                f"{(self.err or self.out).strip()[-2000:]}"
            )
        return self


class Channel:
    """Calls into one guest. Cheap to create; connects per call."""

    def __init__(self, sock_path: Path, lock_path: Path) -> None:
        self.sock_path = sock_path
        self.lock_path = lock_path

    @contextmanager
    def _connected(self, timeout: float) -> Iterator[socket.socket]:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                try:
                    sock.connect(str(self.sock_path))
                except OSError as exc:
                    raise ChannelError(f"cannot connect to {self.sock_path}: {exc}") from exc
                yield sock
            finally:
                sock.close()
                fcntl.flock(lock, fcntl.LOCK_UN)

    def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and return its reply (``timeout`` covers the whole call)."""
        rid = uuid.uuid4().hex
        line = json.dumps({**request, "id": rid}).encode() + b"\n"
        deadline = time.monotonic() + timeout
        with self._connected(timeout) as sock:
            try:
                sock.sendall(line)
                return self._read_reply(sock, rid, deadline)
            except TimeoutError as exc:
                raise ChannelError(
                    f"no reply from the guest within {timeout:.0f} s ({request.get('op')})"
                ) from exc
            except OSError as exc:
                raise ChannelError(f"command channel broke: {exc}") from exc

    @staticmethod
    def _read_reply(sock: socket.socket, rid: str, deadline: float) -> dict[str, Any]:
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ChannelError("the guest closed the command channel (VM stopped?)")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue  # the tail of a stale reply
                if isinstance(reply, dict) and reply.get("id") == rid:
                    return reply

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.call({"op": "ping"}, timeout)

    def exec(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 600.0,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        t0 = time.monotonic()
        reply = self.call(
            {
                "op": "exec",
                "argv": argv,
                "stdin": base64.b64encode(stdin).decode() if stdin is not None else None,
                "timeout": timeout,
                "env": env or {},
            },
            timeout + 30,  # the guest kills at ``timeout``; this covers the transfer
        )
        if "error" in reply:
            raise ChannelError(f"guest refused the request: {reply['error']}")
        return ExecResult(
            argv,
            int(reply["rc"]),
            base64.b64decode(reply.get("out") or ""),
            base64.b64decode(reply.get("err") or ""),
            time.monotonic() - t0,
        )

    def poweroff(self, timeout: float = 5.0) -> None:
        self.call({"op": "poweroff"}, timeout)
