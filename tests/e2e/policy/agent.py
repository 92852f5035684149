"""Tiny traffic agent run inside a pod's netns: ``serve`` (TCP + UDP echo on ports) and
``probe`` (JSON list of [ip, proto, port] in, JSON list of booleans out, in parallel)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

TCP_TIMEOUT = float(os.environ.get("KURYR_PROBE_TCP_TIMEOUT", "2.0"))
"""A TCP probe that got no answer by then counts as closed (ACLs drop, never reject).
The policy benchmark shortens it to time enforcement finely; 2 s is safe on a busy host."""
UDP_TIMEOUT = 2.0


def serve(tcp: list[int], udp: list[int]) -> None:
    def tcp_loop(port: int) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(64)
        while True:
            conn, _ = srv.accept()
            with contextlib.suppress(OSError):
                conn.sendall(b"ok")
            conn.close()

    def udp_loop(port: int) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("0.0.0.0", port))
        while True:
            data, peer = srv.recvfrom(2048)
            srv.sendto(b"ok:" + data, peer)

    for p in tcp:
        threading.Thread(target=tcp_loop, args=(p,), daemon=True).start()
    for p in udp:
        threading.Thread(target=udp_loop, args=(p,), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def _tcp(ip: str, port: int) -> bool:
    # A random source port: Linux picks nearly sequential ports per destination, so a probe
    # of a later case could reuse the 5-tuple of one from an earlier case, which OVS
    # conntrack (TIME_WAIT on the server side) then treats as the old, allowed connection.
    source = ("0.0.0.0", random.randint(20000, 60999))
    try:
        with socket.create_connection((ip, port), timeout=TCP_TIMEOUT, source_address=source) as c:
            c.settimeout(TCP_TIMEOUT)
            return c.recv(2) == b"ok"
    except OSError:
        return False


def _udp(ip: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.4)
    deadline = time.monotonic() + UDP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            s.sendto(b"x", (ip, port))
            try:
                data, _ = s.recvfrom(2048)
                if data.startswith(b"ok:"):
                    return True
            except OSError:
                continue
        return False
    finally:
        s.close()


def _icmp(ip: str) -> bool:
    r = subprocess.run(["ping", "-c", "2", "-i", "0.3", "-W", "1", ip], capture_output=True)
    return r.returncode == 0


def probe(targets: list[list]) -> list[bool]:
    out: list[bool] = [False] * len(targets)

    def one(i: int, ip: str, proto: str, port: int) -> None:
        if proto == "TCP":
            out[i] = _tcp(ip, port)
        elif proto == "UDP":
            out[i] = _udp(ip, port)
        else:
            out[i] = _icmp(ip)

    threads = [threading.Thread(target=one, args=(i, *t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(json.loads(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        print(json.dumps(probe(json.loads(sys.stdin.read()))))
