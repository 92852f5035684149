#!/usr/bin/python3
"""PID 1 of the sandbox VM guest: baked into the image as ``/sbin/kuryr-init``.

Standard library only (it runs on the guest's Debian python3, before anything else).
Boot (shared/notes/nested-vm.md sections 4.2 and 6):

1. mounts (proc, sysfs, devtmpfs, devpts, /dev/shm, /run, /tmp, cgroup2, bpf), /run/netns;
2. modules ``virtio_net virtio_console 8021q macvlan`` plus ``kuryr.modules=a,b``;
3. hostname, ``lo``, IPv6 off; the NIC whose MAC is ``kuryr.mac`` becomes ``eth0`` with
   ``kuryr.ip`` (CIDR), ``kuryr.mtu`` and a default route via ``kuryr.gw``; the QEMU
   user-networking NIC (MAC ``USER_MAC``) becomes ``eth1`` with 10.0.2.15/24 and no
   default route (the host's 127.0.0.1 services are 10.0.2.2:<port>);
4. the app disk (``/dev/vdb``, the project's code pushed at each start) read-only on
   ``/opt/kuryr/app``;
5. forks the command server on the virtio-serial port ``kuryr.port``, restarts it if it
   dies, and reaps orphans forever.

Command protocol: one JSON object per line each way. Request ``{"id", "op", ...}`` with
``op`` one of ``ping``, ``exec`` (``argv`` list, ``stdin`` base64 or null, ``timeout`` s)
and ``poweroff``; reply ``{"id", "rc", "out", "err" (base64), "dt"}``. A command runs in
its own session; on timeout its process group is killed and ``rc`` is 124.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

USER_MAC = "52:54:00:0a:00:0f"
USER_ADDR = "10.0.2.15/24"
APP_DEV = "/dev/vdb"
APP_DIR = "/opt/kuryr/app"
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "PYTHONPATH": "/opt/kuryr/lib:/opt/kuryr/app",
}
DEFAULT_TIMEOUT = 600.0
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC


def log(msg: str) -> None:
    up = Path("/proc/uptime").read_text().split()[0] if Path("/proc/uptime").exists() else "?"
    sys.stdout.write(f"kuryr-init [{up}] {msg}\n")
    sys.stdout.flush()


def parse_cmdline(text: str) -> dict[str, str]:
    """``kuryr.x=y`` parameters of the kernel command line, keyed by ``x``."""
    params: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith("kuryr."):
            params[key.removeprefix("kuryr.")] = value
    return params


def sh(*argv: str, check: bool = False, stdin: str | None = None) -> int:
    proc = subprocess.run(
        list(argv), env=ENV, input=stdin, text=True, capture_output=True, check=False
    )
    if proc.returncode != 0:
        log(f"{' '.join(argv)}: rc {proc.returncode}: {proc.stderr.strip()}")
        if check:
            raise RuntimeError(f"{argv[0]} failed")
    return proc.returncode


MS_RDONLY = 1


def mount(src: str, target: str, fstype: str, opts: str = "", flags: int = 0) -> None:
    """mount(2) through libc: a ``mount`` process per call costs ~0.15 s under TCG."""
    Path(target).mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(src.encode(), target.encode(), fstype.encode(), flags, opts.encode() or None)
    if rc != 0:
        log(f"mount {fstype} on {target}: {os.strerror(ctypes.get_errno())}")


def mount_all() -> None:
    mounts = [
        ("proc", "/proc", "proc", ""),
        ("sysfs", "/sys", "sysfs", ""),
        ("devtmpfs", "/dev", "devtmpfs", ""),
        ("devpts", "/dev/pts", "devpts", "gid=5,mode=620,ptmxmode=666"),
        ("tmpfs", "/dev/shm", "tmpfs", "mode=1777"),
        ("tmpfs", "/run", "tmpfs", "mode=755"),
        ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", ""),
        ("bpf", "/sys/fs/bpf", "bpf", "mode=700"),
    ]
    current = Path("/proc/mounts").read_text() if Path("/proc/mounts").exists() else ""
    for src, target, fstype, opts in mounts:
        if f" {target} " not in current:
            mount(src, target, fstype, opts)
    for d in ("/run/netns", "/run/kuryr", "/var/log", "/etc/kuryr"):
        Path(d).mkdir(parents=True, exist_ok=True)
    if not Path("/dev/ptmx").exists():
        Path("/dev/ptmx").symlink_to("pts/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        with contextlib.suppress(FileExistsError):
            Path(f"/dev/{name}").symlink_to(target)


def write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        path.write_text(value)
    except OSError as exc:
        log(f"sysctl {key}={value}: {exc}")


def by_mac() -> dict[str, str]:
    found: dict[str, str] = {}
    for dev in Path("/sys/class/net").iterdir():
        with contextlib.suppress(OSError):
            found[(dev / "address").read_text().strip().lower()] = dev.name
    return found


def wait_for(check: Any, timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    log(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


def name_nics(wanted: dict[str, str]) -> None:
    """Give the NIC with each MAC its wanted name (``eth0``/``eth1``), whatever the probe
    order was."""
    wait_for(lambda: set(wanted) <= set(by_mac()), 10, f"NICs {sorted(wanted)}")
    current = by_mac()
    moves = [(current[mac], name) for mac, name in wanted.items() if mac in current]
    for i, (old, new) in enumerate(moves):
        if old != new:
            sh("ip", "link", "set", old, "name", f"kuryrtmp{i}")
    for i, (old, new) in enumerate(moves):
        if old != new:
            sh("ip", "link", "set", f"kuryrtmp{i}", "name", new)


def setup_network(params: dict[str, str]) -> None:
    write_sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    write_sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    mac = params.get("mac", "").lower()
    name_nics({m: n for m, n in ((mac, "eth0"), (USER_MAC, "eth1")) if m})
    cmds = ["link set lo up"]
    if mac:
        mtu = params.get("mtu")
        if mtu:
            cmds.append(f"link set eth0 mtu {mtu}")
        cmds.append("link set eth0 up")
        if params.get("ip"):
            cmds.append(f"addr replace {params['ip']} dev eth0")
        if params.get("gw"):
            cmds.append(f"route replace default via {params['gw']} dev eth0")
    cmds += ["link set eth1 up", f"addr replace {USER_ADDR} dev eth1"]
    sh("ip", "-force", "-batch", "-", stdin="\n".join(cmds) + "\n")


def set_hostname(name: str) -> None:
    write_sysctl("kernel.hostname", name)
    Path("/etc/hostname").write_text(name + "\n")
    Path("/etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")


def mount_app() -> None:
    if not wait_for(lambda: Path(APP_DEV).exists(), 5, APP_DEV):
        return
    mount(APP_DEV, APP_DIR, "ext4", "noload", MS_RDONLY)


def find_port(name: str) -> str | None:
    root = Path("/sys/class/virtio-ports")
    if not root.is_dir():
        return None
    for entry in root.iterdir():
        with contextlib.suppress(OSError):
            if (entry / "name").read_text().strip() == name:
                return f"/dev/{entry.name}"
    return None


# -- command server -------------------------------------------------------------------


def run_command(req: dict[str, Any]) -> dict[str, Any]:
    argv = [str(a) for a in req.get("argv") or []]
    stdin_b64 = req.get("stdin")
    data = base64.b64decode(stdin_b64) if stdin_b64 else None
    timeout = float(req.get("timeout") or DEFAULT_TIMEOUT)
    env = {**ENV, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(req.get("cwd") or "/root"),
            start_new_session=True,
            preexec_fn=_unblock_sigio,  # the server blocks it (single-threaded: safe)
        )
    except OSError as exc:
        return {"rc": 127, "out": "", "err": _b64(f"{argv[:1]}: {exc}\n".encode()), "dt": 0.0}
    try:
        out, err = proc.communicate(data, timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired as exc:
            # a process outside the group (setsid, no redirect) holds the pipes: stop
            # reading rather than hang the command channel
            out, err = exc.output or b"", exc.stderr or b""
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
        err += f"\nkuryr-init: killed after the {timeout:.0f} s timeout\n".encode()
        rc = 124
    return {"rc": rc, "out": _b64(out), "err": _b64(err), "dt": time.monotonic() - t0}


def _unblock_sigio() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGIO})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def power_off() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(LINUX_REBOOT_CMD_POWER_OFF)


def handle(line: bytes) -> tuple[dict[str, Any], bool]:
    """The reply to one request line, and whether to power off after sending it."""
    try:
        req = json.loads(line)
    except ValueError:
        return {"id": None, "rc": 2, "error": "bad JSON"}, False
    op = req.get("op", "exec")
    if op == "ping":
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return {"id": req.get("id"), "rc": 0, "uptime": uptime, "pid": os.getpid()}, False
    if op == "poweroff":
        return {"id": req.get("id"), "rc": 0}, True
    if op == "exec":
        return {"id": req.get("id"), **run_command(req)}, False
    return {"id": req.get("id"), "rc": 2, "error": f"unknown op {op!r}"}, False


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def serve(port_path: str) -> None:
    """Read request lines forever. Without a host client, ``read`` returns EOF at once
    (virtio_console), so wait for SIGIO, which the port raises when the host connects or
    data arrives (``O_ASYNC``); a short timeout covers a lost signal."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGIO})
    fd = os.open(port_path, os.O_RDWR)
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    buf = b""
    last = time.monotonic()
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            buf = b""  # the client went away mid-line
            signal.sigtimedwait([signal.SIGIO], 0.02 if time.monotonic() - last < 1 else 0.5)
            continue
        last = time.monotonic()
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            reply, off = handle(line)
            write_all(fd, json.dumps(reply).encode() + b"\n")
            if off:
                log("power off requested")
                power_off()
            last = time.monotonic()


def start_server(port_path: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # only PID 1 ignores it
            serve(port_path)
        except BaseException as exc:  # report, then let init restart us
            log(f"command server died: {exc!r}")
        finally:
            os._exit(1)
    return pid


def supervise(port_path: str | None) -> None:
    server = start_server(port_path) if port_path else None
    while True:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            time.sleep(1)
            continue
        except InterruptedError:
            continue
        if server is not None and pid == server and port_path is not None:
            time.sleep(0.5)
            server = start_server(port_path)


def boot() -> str | None:
    """Everything before the command server; returns the port's device path."""
    mount_all()
    params = parse_cmdline(Path("/proc/cmdline").read_text())
    modules = ["virtio_net", "virtio_console", "8021q", "macvlan"]
    modules += [m for m in params.get("modules", "").split(",") if m]
    sh("modprobe", "-a", *modules)
    log("modules loaded")
    set_hostname(params.get("name", "kuryr-vm"))
    setup_network(params)
    if params.get("app") == "1":
        mount_app()
    port_name = params.get("port", "kuryr.cmd")
    found = [""]

    def ready() -> bool:
        found[0] = find_port(port_name) or ""
        return bool(found[0]) and Path(found[0]).exists()

    if not wait_for(ready, 10, f"virtio port {port_name}"):
        return None
    log(f"ready: eth0 {params.get('ip', '?')}, command channel {found[0]}")
    return found[0]


def main() -> None:
    os.environ.clear()
    os.environ.update(ENV)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl-alt-del
    port_path: str | None = None
    log("init started")
    try:
        port_path = boot()
    except Exception as exc:  # PID 1 must not exit (kernel panic)
        log(f"boot step failed: {exc!r}")
        with contextlib.suppress(Exception):
            port_path = find_port(parse_cmdline(Path("/proc/cmdline").read_text()).get("port", ""))
    supervise(port_path)


if __name__ == "__main__":
    main()
