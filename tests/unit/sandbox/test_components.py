"""Daemon ownership and failure handling, with real (harmless) processes.

Each test runs a tiny Python "daemon" whose command line carries the test's state
directory, exactly like the sandbox's daemons carry theirs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kuryr_k8s.sandbox import manager
from kuryr_k8s.sandbox.components import Component, Context
from kuryr_k8s.sandbox.paths import paths_for
from kuryr_k8s.sandbox.process import SandboxError, is_alive, owned_pid, proc_state
from kuryr_k8s.sandbox.settings import Ports, SandboxSettings

SLEEPER = "import sys, time; print('sleeper up', flush=True); time.sleep(600)"


class FakeDaemon(Component):
    """Sleeps; optionally prints and dies, or never gets ready."""

    def __init__(self, ctx: Context, name: str, code: str = SLEEPER, ready: bool = True) -> None:
        super().__init__(ctx)
        self.name = name
        self.code = code
        self.ready = ready
        self.ready_timeout = 3.0

    def launch(self) -> None:
        argv = [sys.executable, "-c", self.code, str(self.ctx.paths.root)]
        self.spawn(argv, self.name, pidfile=self.pidfile)

    def probe(self) -> bool:
        """Ready once it said so in its log (like a daemon's socket appearing)."""
        if not self.ready or self.pid() is None or not self.log_file.exists():
            return False
        return "sleeper up" in self.log_file.read_text()


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    settings = SandboxSettings(state_dir=tmp_path / "state", venv_dir=tmp_path / "venvs")
    paths = paths_for(settings)
    paths.ensure()
    return Context(settings, paths)


def test_start_is_idempotent_and_stop_removes_the_process(ctx: Context) -> None:
    daemon = FakeDaemon(ctx, "sleeper")
    assert daemon.start() is True
    pid = daemon.pid()
    assert pid is not None and is_alive(pid)

    assert daemon.start() is False  # already running: nothing new
    assert daemon.pid() == pid

    assert daemon.stop() is True
    assert not is_alive(pid)
    assert not daemon.pidfile.exists()
    assert daemon.stop() is False  # stopping twice is fine


def test_stale_pidfile_of_an_unrelated_process_is_not_ours(ctx: Context) -> None:
    daemon = FakeDaemon(ctx, "sleeper")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) as other:
        try:
            daemon.pidfile.write_text(f"{other.pid}\n")
            assert daemon.pid() is None  # alive, but its command line is not ours
            assert daemon.start() is True
            assert daemon.pid() != other.pid
            daemon.stop()
            assert other.poll() is None, "stop must never touch a process that is not ours"
        finally:
            other.kill()


def test_pidfile_of_a_dead_process_is_replaced(ctx: Context) -> None:
    daemon = FakeDaemon(ctx, "sleeper")
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    daemon.pidfile.write_text(f"{gone.pid}\n")
    assert daemon.start() is True
    assert daemon.pid() not in (None, gone.pid)
    daemon.stop()


def test_zombie_is_not_running(ctx: Context) -> None:
    with subprocess.Popen([sys.executable, "-c", "pass", str(ctx.paths.root)]) as child:
        pidfile = ctx.paths.pidfile("zombie")
        pidfile.write_text(f"{child.pid}\n")
        deadline = time.monotonic() + 30
        while proc_state(child.pid) != "Z":  # exited, not reaped yet: a zombie
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        assert not is_alive(child.pid)
        assert owned_pid(pidfile, str(ctx.paths.root)) is None


def test_daemon_dying_during_start_names_component_log_and_leaves_nothing(
    ctx: Context,
) -> None:
    code = "import sys; print('fatal: bad option frobnicate=1', flush=True); sys.exit(3)"
    daemon = FakeDaemon(ctx, "crasher", code=code)
    with pytest.raises(SandboxError) as err:
        daemon.start()
    msg = str(err.value)
    assert "crasher" in msg
    assert "exited during start" in msg
    assert str(daemon.log_file) in msg
    assert "fatal: bad option frobnicate=1" in msg
    assert daemon.pid() is None and not daemon.pidfile.exists()


def test_daemon_never_ready_is_stopped(ctx: Context) -> None:
    daemon = FakeDaemon(ctx, "slowpoke", ready=False)
    with pytest.raises(SandboxError, match="slowpoke: not ready after 3 s"):
        daemon.start()
    assert daemon.launched_pid is not None
    assert not is_alive(daemon.launched_pid), "the half-started process must be gone"
    assert not daemon.pidfile.exists()


def test_port_in_use_by_another_process_is_refused(ctx: Context, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = SandboxSettings(
            state_dir=ctx.paths.root, venv_dir=tmp_path, ports=Ports(neutron=port)
        )
        daemon = FakeDaemon(Context(settings, ctx.paths), "api")
        daemon.tcp_port_attr = "neutron"
        with pytest.raises(SandboxError) as err:
            daemon.start()
    msg = str(err.value)
    assert f"127.0.0.1:{port} is already in use by pid(s) {os.getpid()}" in msg
    assert "which the sandbox did not start" in msg
    assert daemon.launched_pid is None, "nothing may be launched when the port is taken"


def test_up_rolls_back_what_it_started_when_a_later_component_fails(ctx: Context) -> None:
    first = FakeDaemon(ctx, "first")
    second = FakeDaemon(ctx, "second", code="import sys; sys.exit(1)")
    with pytest.raises(SandboxError, match="second"):
        manager.up(ctx.settings, lambda msg: None, components=[first, second])
    assert first.pid() is None
    assert first.launched_pid is not None and not is_alive(first.launched_pid)


def test_up_twice_starts_nothing_the_second_time(ctx: Context) -> None:
    comps = [FakeDaemon(ctx, "a"), FakeDaemon(ctx, "b")]
    try:
        assert manager.up(ctx.settings, lambda msg: None, components=comps) == ["a", "b"]
        again = [FakeDaemon(ctx, "a"), FakeDaemon(ctx, "b")]
        assert manager.up(ctx.settings, lambda msg: None, components=again) == []
    finally:
        for c in comps:
            c.stop()
