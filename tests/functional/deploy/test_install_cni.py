"""The daemon's init container (``kuryr deploy install-cni``) for real: the bundle it
writes runs ``kuryr-cni`` with its own interpreter and libraries, under an empty
environment, and ``uninstall-cni`` removes all of it."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kuryr_k8s.cli.deploy_cmd import bundle_name

KURYR = [sys.executable, "-m", "kuryr_k8s.cli.main"]


@contextlib.contextmanager
def _fake_daemon(path: Path, result: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Answers one CNI request on ``path`` with ``result``; yields the requests seen."""
    seen: list[dict[str, Any]] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(60)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            seen.append(json.loads(body))
            answer = json.dumps({"result": result}).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        thread.join(timeout=60)
        server.close()


def _kuryr(tmp_path: Path, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``kuryr deploy <command>`` with every directory under ``tmp_path``."""
    return subprocess.run(
        [
            *KURYR,
            "deploy",
            command,
            "--bin-dir",
            str(tmp_path / "bin"),
            "--conf-dir",
            str(tmp_path / "net.d"),
            "--bundle-dir",
            str(tmp_path / "bundle"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def _install(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _kuryr(tmp_path, "install-cni", "--socket", str(tmp_path / "daemon.sock"))


def _plugin(
    tmp_path: Path, env: dict[str, str], conf: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tmp_path / "bin" / "kuryr-cni")],
        input=json.dumps(conf),
        env=env,  # nothing inherited: no PATH, no PYTHON*, a hostile LD_LIBRARY_PATH
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bundle_runs_on_its_own_runtime_and_uninstall_removes_it(tmp_path: Path) -> None:
    # An older version's bundle is pruned once the launcher names the new one.
    (tmp_path / "bundle" / "0.0.1-py39" / "bin").mkdir(parents=True)
    _install(tmp_path)
    bundle = tmp_path / "bundle" / bundle_name()
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [bundle.name]
    launcher = (tmp_path / "bin" / "kuryr-cni").read_text()
    assert f"{bundle}/lib/ld-linux" in launcher and "--inhibit-cache" in launcher
    conflist = json.loads((tmp_path / "net.d" / "10-kuryr.conflist").read_text())
    assert conflist["plugins"][0]["daemonSocket"] == str(tmp_path / "daemon.sock")

    hostile = {"LD_LIBRARY_PATH": str(tmp_path / "nowhere"), "PYTHONHOME": "/nonexistent"}
    out = _plugin(tmp_path, {"CNI_COMMAND": "VERSION", **hostile}, {"cniVersion": "1.0.0"})
    assert out.returncode == 0, out.stderr
    assert "1.1.0" in json.loads(out.stdout)["supportedVersions"]

    # ADD through the bundle to a daemon stand-in on the conflist's socket, and back.
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.7/24"}]}
    with _fake_daemon(tmp_path / "daemon.sock", result) as seen:
        env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "c1",
            "CNI_NETNS": "/proc/self/ns/net",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1",
            "CNI_PATH": str(tmp_path / "bin"),
            **hostile,
        }
        conf = {**conflist["plugins"][0], "cniVersion": "1.0.0", "name": conflist["name"]}
        out = _plugin(tmp_path, env, conf)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["ips"] == result["ips"]
    (request,) = seen
    assert request["containerId"] == "c1" and request["args"]["K8S_POD_NAME"] == "pod1"

    # The bundle is this interpreter's, not a link to it.
    python = bundle / "bin" / "python3"
    assert python.is_file() and not python.is_symlink()

    _kuryr(tmp_path, "uninstall-cni")
    assert not (tmp_path / "bin" / "kuryr-cni").exists()
    assert not (tmp_path / "net.d" / "10-kuryr.conflist").exists()
    assert list((tmp_path / "bundle").iterdir()) == []


def test_install_is_idempotent(tmp_path: Path) -> None:
    _install(tmp_path)
    first = (tmp_path / "bin" / "kuryr-cni").read_text()
    _install(tmp_path)
    assert (tmp_path / "bin" / "kuryr-cni").read_text() == first
    assert [p.name for p in (tmp_path / "bundle").iterdir()] == [bundle_name()]
