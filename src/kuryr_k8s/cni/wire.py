"""The plugin ↔ daemon protocol, version 1: JSON over HTTP/1.1 on a root-only unix socket.

::

    POST /v1/cni   {"command": "ADD", "containerId": ..., "netns": ..., "ifname": ...,
                    "args": {"K8S_POD_NAMESPACE": ...}, "path": ..., "config": {...}}
      200          {"result": {...} | null}        printed as-is on the plugin's stdout
      4xx/5xx      {"error": {"code", "msg", "details"}}

Unknown API versions answer 404, which the plugin reports as an incompatible version. The
plugin has already checked the environment and the network configuration (``request``
below), so the daemon receives only well-formed requests; it validates them again anyway.
Stdlib only: the plugin imports this module.
"""

from __future__ import annotations

import json
import socket
import time

from kuryr_k8s.cni import spec

# ``typing`` costs ~2 ms of the plugin's start; annotations are strings anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

API_PATH = "/v1/cni"
DEFAULT_SOCKET = "/run/kuryr/cni.sock"


def request_body(
    command: str,
    container_id: str,
    netns: str,
    ifname: str,
    args: dict[str, str],
    path: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "command": command,
        "containerId": container_id,
        "netns": netns,
        "ifname": ifname,
        "args": args,
        "path": path,
        "config": config,
    }
    started = process_started()
    if started is not None:
        body["pluginStarted"] = started
    return body


def process_started() -> float | None:
    """When this process started (Unix time, 10 ms resolution), ``None`` if unknown.

    The daemon's request histogram counts from here: in a burst the runtime starts dozens
    of plugin processes at once and their start-up alone took up to a second, invisible
    to a clock that starts when the daemon reads the request (benchmark 2026-11-29 09:41:
    daemon p50 0.96 s, runtime's ADD p50 1.83 s)."""
    import os
    import time

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - max(0.0, age)


def call(socket_path: str, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Send one request; returns the result (or ``None``) or raises :class:`spec.CniError`."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {API_PATH} HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            _connect(sock, socket_path, time.monotonic() + timeout)
            sock.sendall(head + payload)
            raw = _read_all(sock)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise spec.CniError(
            spec.TRY_AGAIN_LATER,
            "kuryr-daemon is not running",
            f"cannot connect to {socket_path}: {exc.strerror}",
        ) from exc
    except TimeoutError as exc:
        raise spec.CniError(
            spec.TRY_AGAIN_LATER,
            "kuryr-daemon did not answer in time",
            f"no answer on {socket_path} within {timeout:g} s",
        ) from exc
    except OSError as exc:
        raise spec.CniError(
            spec.IO_FAILURE, "cannot talk to kuryr-daemon", f"{socket_path}: {exc}"
        ) from exc
    return parse_response(raw)


def _connect(sock: socket.socket, path: str, deadline: float) -> None:
    """Connect, waiting while the daemon's listen backlog is full: a unix socket answers a
    connect to a full backlog with EAGAIN at once instead of queueing it (many plugins
    started together by kubelet); that is "busy", not "broken", until ``deadline``."""
    pause = 0.01
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() + pause > deadline:
                raise spec.CniError(
                    spec.TRY_AGAIN_LATER,
                    "kuryr-daemon is busy",
                    f"its listen backlog on {path} stayed full until the timeout",
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def parse_response(raw: bytes) -> dict[str, Any] | None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        raise spec.CniError(spec.IO_FAILURE, "malformed answer from kuryr-daemon", repr(raw[:200]))
    status = int(parts[1])
    if status == 404:
        raise spec.CniError(
            spec.INCOMPATIBLE_VERSION,
            "kuryr-daemon does not speak this plugin's API",
            f"POST {API_PATH} answered 404: upgrade the plugin and the daemon together",
        )
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise spec.CniError(
            spec.IO_FAILURE, "malformed answer from kuryr-daemon", f"HTTP {status}: {exc}"
        ) from exc
    if status != 200 or not isinstance(doc, dict) or "error" in doc:
        err = doc.get("error") if isinstance(doc, dict) else doc
        raise spec.CniError.from_dict(err)
    result = doc.get("result")
    return result if isinstance(result, dict) else None
