"""Traffic checks between network namespaces: ping and TCP round trips."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

TAG_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(16)
while True:
    conn, _ = srv.accept(); conn.settimeout(10)
    try:
        data = conn.recv(65536)
        conn.sendall(sys.argv[3].encode() + b":" + data)
    except OSError:
        pass
    conn.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(sys.argv[3].encode()); print(c.recv(65536).decode())
"""


def ns_run(netns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ping(netns: str, ip: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    """Ping with a generous deadline: the first packet may wait for ARP and flows."""
    return ns_run(netns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", "-w", "20", ip)


def wait_listening(netns: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in ns_run(netns, "ss", "-ltnH").stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} in {netns} after {timeout} s")


@contextlib.contextmanager
def tcp_server(netns: str, ip: str, port: int, tag: str = "echo") -> Iterator[None]:
    """A TCP server in ``netns`` answering ``<tag>:<what it got>`` until the block ends."""
    with subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", TAG_SERVER, ip, str(port), tag],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as server:
        try:
            wait_listening(netns, port)
            yield
        finally:
            server.kill()


def tcp_request(client_ns: str, ip: str, port: int, payload: str) -> str:
    client = ns_run(client_ns, sys.executable, "-c", CLIENT, ip, str(port), payload)
    assert client.returncode == 0, client.stderr
    return client.stdout.strip()


def tcp_echo(
    server_ns: str, server_ip: str, client_ns: str, port: int = 7777, payload: str = "hello"
) -> str:
    """One TCP round trip from ``client_ns`` to a server in ``server_ns``."""
    with tcp_server(server_ns, server_ip, port):
        return tcp_request(client_ns, server_ip, port, payload)
