"""Process helpers for the sandbox: run commands, own daemons by pid, wait for readiness.

A pid counts as running only if ``/proc/PID/status`` exists and its state is not ``Z``:
where PID 1 does not reap orphans, stopped daemons linger as zombies and ``kill -0``
still succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kuryr_k8s.model.errors import KuryrError


class SandboxError(KuryrError):
    """A sandbox step failed. The message names the component, its log and a likely fix."""


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command; on failure raise SandboxError with its output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            list(argv),
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SandboxError(
            f"command not found: {argv[0]}; run 'kuryr sandbox install' first"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"command timed out after {timeout:.0f} s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise SandboxError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{out}")
    return proc


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def is_alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def owned_pid(pidfile: Path, marker: str) -> int | None:
    """The live pid in ``pidfile`` if its command line contains ``marker``; else None.

    ``marker`` is something only our instance has on its command line (usually a path in
    the state directory), so a recycled pid of an unrelated process is never ours.
    """
    pid = read_pidfile(pidfile)
    if pid is None or not is_alive(pid):
        return None
    if marker not in " ".join(cmdline(pid)):
        return None
    return pid


def terminate(pid: int, *, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. Tolerates a pid that is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start a long-running daemon detached from us (own session, parent = init).

    Output is appended to ``log_file``. Returns its pid. Detaching means the CLI can exit
    and no ``Popen`` object is left to warn about a child still running.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    script = 'setsid "$@" >>"$KURYR_LOG" 2>&1 </dev/null & echo $!'
    out = run(
        ["sh", "-c", script, "sh", *argv],
        env={**(env or {}), "KURYR_LOG": str(log_file)},
        timeout=30,
    ).stdout
    return int(out.strip())


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log file yet)"
    return "\n".join("    " + line for line in content[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> float:
    """Poll ``check`` until true; returns seconds waited.

    ``alive`` lets the caller fail fast when the daemon being waited on has died.
    Raises SandboxError (the caller adds the component's log) on timeout or death.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # noqa: S110 - readiness probes fail until ready
            pass
        if alive is not None and not alive():
            raise SandboxError(f"{what}: the process exited during start")
        if time.monotonic() >= deadline:
            raise SandboxError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def listeners_on(port: int) -> list[int]:
    """Pids of processes listening on 127.0.0.1/0.0.0.0:``port`` (TCP)."""
    import psutil

    pids: list[int] = []
    for conn in psutil.net_connections(kind="tcp"):
        laddr = conn.laddr
        if conn.status != psutil.CONN_LISTEN or not isinstance(laddr, tuple) or not laddr:
            continue
        if laddr[1] == port and conn.pid is not None:
            pids.append(conn.pid)
    return pids


def pss_mib(pid: int) -> float | None:
    """PSS of a process and its children, in MiB (None if it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        total = 0
        for p in procs:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return total / (1024 * 1024)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
