"""Sockets inside a pod's network namespace, without forking.

A socket belongs to the namespace of the thread that created it, for its whole life. So
a short-lived thread enters the namespace (``setns(2)``), creates the socket and ends;
the caller then uses the socket from any thread. The daemon's own threads never change
namespace, and nothing forks (a forked child would share the event loop's signal
wake-up fd, and a signal sent to the child would reach the daemon's loop).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

from kuryr_k8s.cni.errors import InvalidRequest, UnknownContainer

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def check_netns(path: str) -> None:
    """Raise :class:`UnknownContainer` unless ``path`` exists."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UnknownContainer(f"network namespace {path} does not exist") from exc
    os.close(fd)


def _enter(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UnknownContainer(f"network namespace {path} does not exist") from exc
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            if code == errno.EINVAL:
                raise InvalidRequest(f"{path} is not a network namespace")
            raise UnknownContainer(f"cannot enter network namespace {path}: {os.strerror(code)}")
    finally:
        os.close(fd)


def netns_socket(path: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A new socket living in the network namespace at ``path``."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            _enter(path)
            made.append(socket.socket(family, type_, proto))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=work, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]
