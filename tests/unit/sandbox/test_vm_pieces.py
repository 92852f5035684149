"""Sandbox VM pieces that need no QEMU: names, the QEMU command line, the image key, the
guest init's request handling, and the host channel against a stand-in guest on a real
unix socket (including a stale reply to drop)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.sandbox.vm import guest_init, image, layout, qemu
from kuryr_k8s.sandbox.vm.channel import Channel, ChannelError


def test_names_are_per_state_dir_and_fit_linux() -> None:
    a = layout.sandbox_id(Path("/var/lib/kuryr-sandbox"))
    assert a == layout.sandbox_id(Path("/var/lib/kuryr-sandbox"))
    assert a != layout.sandbox_id(Path("/var/lib/kuryr-sandbox-n29"))
    assert len(layout.tap_name(a, "w" * 31)) == 15
    assert layout.tap_name(a, "worker0") != layout.tap_name(a, "worker1")
    assert layout.vm_uuid(a, "worker0") == layout.vm_uuid(a, "worker0")
    for bad in ("", "Worker0", "0worker", "a_b", "x" * 32):
        with pytest.raises(ConfigError, match="bad VM name"):
            layout.validate_name(bad)


def test_socket_path_limit_is_reported(tmp_path: Path) -> None:
    paths = layout.VmPaths(tmp_path / ("d" * 120))
    with pytest.raises(ConfigError, match="shorter --state-dir"):
        paths.check_socket_paths()


def test_qemu_command_line(tmp_path: Path) -> None:
    img = image.Image("k", tmp_path, "6.1.0-56-cloud-amd64")
    net = qemu.GuestNet("w0", "fa:16:3e:00:00:01", "10.10.0.5/24", "10.10.0.1", 1442)
    argv = qemu.argv(layout.VmPaths(tmp_path / "vm"), img, "kvabcdef1234567", net)
    joined = " ".join(argv)
    assert "tap,id=n0,ifname=kvabcdef1234567,script=no,downscript=no,vnet_hdr=off" in joined
    assert "virtio-net-pci,netdev=n0,mac=fa:16:3e:00:00:01" in joined
    assert f"mac={guest_init.USER_MAC}" in joined
    assert "snapshot=on" in joined and "readonly=on" in joined
    assert "tcg,tb-size=64" in joined
    append = argv[argv.index("-append") + 1]
    params = guest_init.parse_cmdline(append)
    assert params["ip"] == "10.10.0.5/24" and params["gw"] == "10.10.0.1"
    assert params["mtu"] == "1442" and params["mac"] == "fa:16:3e:00:00:01"


def test_image_key_follows_the_dependency_set() -> None:
    pins = image.runtime_pins()
    names = {p.split("==")[0] for p in pins}
    assert {"openstacksdk", "pyroute2", "aiohttp", "pyyaml"} <= names
    assert all("==" in p for p in pins)
    assert image.image_key(pins) == image.image_key(list(pins))
    assert image.image_key(pins) != image.image_key([*pins, "extra==1.0"])


def test_guest_handles_exec_ping_and_bad_input() -> None:
    reply, off = guest_init.handle(
        json.dumps(
            {
                "id": "1",
                "op": "exec",
                "argv": ["sh", "-c", "cat; echo err >&2; exit 3"],
                "stdin": base64.b64encode(b"in").decode(),
            }
        ).encode()
    )
    assert not off
    assert (reply["id"], reply["rc"]) == ("1", 3)
    assert base64.b64decode(reply["out"]) == b"in"
    assert base64.b64decode(reply["err"]) == b"err\n"
    reply, _ = guest_init.handle(
        b'{"id": "2", "op": "exec", "argv": ["sleep", "5"], "timeout": 0.2}'
    )
    assert reply["rc"] == 124
    # a background process in its own session keeps the pipe open: still bounded
    t0 = time.monotonic()
    reply, _ = guest_init.handle(
        b'{"id": "2b", "op": "exec", "argv": ["sh", "-c", "setsid sleep 30 & echo x"], '
        b'"timeout": 0.5}'
    )
    assert reply["rc"] == 124 and time.monotonic() - t0 < 15
    assert base64.b64decode(reply["out"]) == b"x\n"
    reply, _ = guest_init.handle(b'{"id": "3", "op": "exec", "argv": ["no-such-binary-x"]}')
    assert reply["rc"] == 127
    reply, _ = guest_init.handle(b'{"id": "4", "op": "ping"}')
    assert reply["rc"] == 0 and reply["uptime"] > 0
    assert guest_init.handle(b"not json")[0]["rc"] == 2
    assert guest_init.handle(b'{"id": "5", "op": "poweroff"}')[1] is True


@pytest.fixture
def fake_guest(tmp_path: Path) -> Iterator[Path]:
    """A unix socket server that answers like the guest, after first writing a stale
    reply (another id, and a broken line), as after a client killed mid-command."""
    sock_path = tmp_path / "cmd.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    srv.listen(4)
    srv.settimeout(0.1)  # so the thread sees ``stop`` (close does not wake accept)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with conn:
                conn.sendall(b'{"id": "stale", "rc": 9, "out": "", "err": ""}\n{"broken\n')
                buf = b""
                while b"\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                if buf:
                    reply, _ = guest_init.handle(buf.split(b"\n")[0])
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock_path
    stop.set()
    srv.close()
    thread.join(timeout=5)


def test_channel_drops_stale_replies(fake_guest: Path, tmp_path: Path) -> None:
    channel = Channel(fake_guest, tmp_path / "chan.lock")
    res = channel.exec(["sh", "-c", "echo hello"], timeout=10)
    assert (res.rc, res.stdout, res.argv) == (0, b"hello\n", ["sh", "-c", "echo hello"])
    assert channel.ping()["rc"] == 0
    with pytest.raises(Exception, match="guest command failed"):
        channel.exec(["false"], timeout=10).check()


def test_channel_without_a_guest(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="cannot connect"):
        Channel(tmp_path / "missing.sock", tmp_path / "chan.lock").ping(timeout=1)
