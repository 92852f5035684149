"""Traffic checks between network namespaces: ping and a TCP echo round trip."""

from __future__ import annotations

import subprocess
import sys
import time

ECHO_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(4); srv.settimeout(60)
for _ in range(int(sys.argv[3])):
    conn, _ = srv.accept(); conn.settimeout(10)
    data = conn.recv(65536)
    conn.sendall(b"echo:" + data); conn.close()
"""

ECHO_CLIENT = """
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


def tcp_echo(
    server_ns: str, server_ip: str, client_ns: str, port: int = 7777, payload: str = "hello"
) -> str:
    """Run a one-shot echo server in ``server_ns``; return what the client read back."""
    with subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            server_ns,
            sys.executable,
            "-c",
            ECHO_SERVER,
            server_ip,
            str(port),
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as server:
        try:
            wait_listening(server_ns, port)
            client = ns_run(
                client_ns, sys.executable, "-c", ECHO_CLIENT, server_ip, str(port), payload
            )
            assert client.returncode == 0, client.stderr
            return client.stdout.strip()
        finally:
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
