"""The plugin's side of the daemon socket (``cni/wire.py``) against a real unix socket."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from kuryr_k8s.cni import spec, wire

pytestmark = pytest.mark.unit


def _fill_backlog(path: str) -> list[socket.socket]:
    """Connections the listener never accepted, until the kernel refuses more (EAGAIN)."""
    fillers: list[socket.socket] = []
    for _ in range(64):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return fillers
        fillers.append(s)
    raise AssertionError("the backlog never filled")


def test_a_full_daemon_backlog_is_waited_for_not_an_error(tmp_path: Path) -> None:
    """A burst of pods starts one plugin each: when the daemon's listen backlog is full the
    kernel answers EAGAIN at once; the plugin must wait for room (seen as 'cannot talk to
    kuryr-daemon: [Errno 11]' for 27 of 200 DELs before the fix)."""
    path = str(tmp_path / "cni.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = _fill_backlog(path)
    answered: list[bytes] = []

    def daemon_gets_room_later() -> None:
        time.sleep(0.3)
        for s in fillers:  # the backlog drains
            s.close()
        listener.settimeout(5)
        while not answered:
            conn, _ = listener.accept()
            with conn:
                data = conn.recv(65536)
                if not data:
                    continue
                answered.append(data)
                body = b'{"result": {"cniVersion": "1.0.0"}}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    t = threading.Thread(target=daemon_gets_room_later)
    t.start()
    try:
        result = wire.call(path, {"command": "DEL"}, timeout=5.0)
    finally:
        t.join(10)
        listener.close()
    assert result == {"cniVersion": "1.0.0"}
    assert answered and answered[0].startswith(b"POST /v1/cni")


def test_a_backlog_full_until_the_timeout_is_try_again_later(tmp_path: Path) -> None:
    path = str(tmp_path / "cni.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(0)
        fillers = _fill_backlog(path)
        try:
            with pytest.raises(spec.CniError) as err:
                wire.call(path, {"command": "DEL"}, timeout=0.3)
        finally:
            for s in fillers:
                with contextlib.suppress(OSError):
                    s.close()
    assert err.value.code == spec.TRY_AGAIN_LATER
    assert "listen backlog" in str(err.value.details)
