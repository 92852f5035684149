"""Sandbox VMs: a real QEMU guest whose ``eth0`` is a Neutron port on ``br-int``.

A VM is a name, a Neutron port (``<name>-port``, optionally the parent of a trunk
``<name>-trunk``), a tap device on ``br-int`` carrying the port's ids, and a QEMU process
booting the cached image. Its record (``<state>/vms/<name>/vm.json``) holds the port,
trunk, MAC and addresses; stop and delete touch only what the record and the owner ids on
the OVS row name. Every entry point takes the VM's lifecycle lock, so two processes never
start or delete the same VM at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.sandbox.components import Context, http_ok
from kuryr_k8s.sandbox.openstack.topology import Topology, connect
from kuryr_k8s.sandbox.process import SandboxError, log_tail, run
from kuryr_k8s.sandbox.vm import appdisk, hostnet, image, ports, qemu
from kuryr_k8s.sandbox.vm.channel import Channel, ChannelError, ExecResult
from kuryr_k8s.sandbox.vm.layout import (
    VmPaths,
    sandbox_id,
    tap_name,
    validate_name,
    vm_paths,
    vm_uuid,
    vms_dir,
)

Progress = Callable[[str], None]

BOOT_TIMEOUT = 180.0
"""Guest boot takes 6-13 s under TCG on this host; 180 s allows for heavy host load."""
ACTIVE_TIMEOUT = 60.0
"""Ports go ACTIVE within a second, but up to ~9 s right after router changes on Zed."""

PROCESS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _quiet(msg: str) -> None:
    pass


class NoSuchVm(ConfigError):
    """The name has no VM record in this state directory."""


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True)
class VmSpec:
    """What ``ensure_vm`` makes. ``network`` is a name in the sandbox project or an id."""

    name: str
    network: str = "net0"
    trunk: bool = False
    security_groups: tuple[str, ...] | None = None
    """Security group ids of the port (applied to an existing port too); None: the
    project's ``default`` group for a new port, an existing port keeps its groups."""


@dataclass
class VmRecord:
    """``vm.json``: what the VM owns, written before anything is plugged."""

    name: str
    sandbox_id: str
    vm_uuid: str
    tap: str
    network_id: str
    network_name: str
    subnet_id: str
    port_id: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str | None
    mtu: int
    trunk_id: str | None = None
    image_key: str | None = None
    app_stamp: str | None = None
    started_at: float | None = None
    boot_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


def load_record(paths: VmPaths) -> VmRecord | None:
    try:
        data = json.loads(paths.record.read_text())
    except (FileNotFoundError, ValueError):
        return None
    known = VmRecord.__dataclass_fields__
    return VmRecord(**{k: v for k, v in data.items() if k in known})


def save_record(paths: VmPaths, rec: VmRecord) -> None:
    tmp = paths.record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(rec), indent=2) + "\n")
    tmp.replace(paths.record)


@dataclass(frozen=True)
class VmInfo:
    """A VM as ``list_vms`` and ``Vm.info`` report it (``state``: running or stopped)."""

    name: str
    state: str
    ip: str
    prefixlen: int
    gateway: str | None
    mac: str
    mtu: int
    network_id: str
    network_name: str
    port_id: str
    trunk_id: str | None
    tap: str
    pid: int | None
    dir: Path
    console_log: Path
    rss_mib: float | None
    boot_seconds: float | None

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


def _info(paths: VmPaths, rec: VmRecord) -> VmInfo:
    pid = qemu.pid(paths)
    return VmInfo(
        name=rec.name,
        state="running" if pid is not None else "stopped",
        ip=rec.ip,
        prefixlen=rec.prefixlen,
        gateway=rec.gateway,
        mac=rec.mac,
        mtu=rec.mtu,
        network_id=rec.network_id,
        network_name=rec.network_name,
        port_id=rec.port_id,
        trunk_id=rec.trunk_id,
        tap=rec.tap,
        pid=pid,
        dir=paths.dir,
        console_log=paths.console,
        rss_mib=qemu.rss_mib(pid) if pid is not None else None,
        boot_seconds=rec.boot_seconds,
    )


# -- the handle -----------------------------------------------------------------------


class Vm:
    """A handle on one VM: run commands in it, push files, start background processes.

    Commands go through the guest's command channel (virtio-serial), one at a time per VM
    (calls from several threads or processes queue). They do not need the guest network.
    """

    def __init__(self, ctx: Context, record: VmRecord) -> None:
        self.ctx = ctx
        self.record = record
        self.paths = vm_paths(ctx.paths.root, record.name)
        self.channel = Channel(self.paths.cmd_sock, self.paths.chan_lock)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def info(self) -> VmInfo:
        return _info(self.paths, self.record)

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, {self.record.cidr}, port={self.record.port_id})"

    def runs_current_code(self) -> bool:
        """True if the guest booted with ``src/kuryr_k8s`` as it is now (the code is
        pushed at start; ``ensure_vm(..., restart=True)`` pushes the current one)."""
        rec = load_record(self.paths) or self.record
        return rec.app_stamp == appdisk.source_stamp()

    def exec(
        self,
        argv: list[str],
        *,
        timeout: float = 600.0,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        check: bool = False,
    ) -> ExecResult:
        """Run ``argv`` in the guest (as root, PATH and PYTHONPATH set); ``rc`` 124 on
        timeout (the command's process group is killed). ``check`` raises on rc != 0."""
        if qemu.pid(self.paths) is None:
            raise SandboxError(
                f"VM {self.name} is not running: start it ('kuryr sandbox vm start {self.name}')"
            )
        result = self.channel.exec(list(argv), stdin=stdin, timeout=timeout, env=env)
        return result.check() if check else result

    def exec_sh(self, script: str, **kw: Any) -> ExecResult:
        """Run a shell script with ``bash -c`` (pipes, redirections, ``&&``)."""
        return self.exec(["bash", "-c", script], **kw)

    def push_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` in the guest atomically (parents created)."""
        script = (
            'set -e; mkdir -p "$(dirname "$1")"; cat >"$1.kuryr-tmp"; '
            'chmod "$2" "$1.kuryr-tmp"; mv -f "$1.kuryr-tmp" "$1"'
        )
        self.exec(["sh", "-c", script, "push", path, f"{mode:o}"], stdin=data, check=True)

    def read_file(self, path: str) -> bytes:
        return self.exec(["cat", path], check=True).stdout

    def spawn(self, name: str, command: str, *, env: dict[str, str] | None = None) -> int:
        """Start ``command`` (bash) in the background under ``name``; returns its pid.

        Idempotent: if ``/run/kuryr/<name>.pid`` names a live process, that pid is
        returned and nothing is started. Output goes to ``/var/log/<name>.log``; the
        process leads its own session (``kill_process`` stops the whole group).
        """
        self._check_process_name(name)
        script = (
            'set -e; pidf="/run/kuryr/$1.pid"; mkdir -p /run/kuryr /var/log; '
            'if [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then cat "$pidf"; '
            'exit 0; fi; setsid bash -c "$2" >>"/var/log/$1.log" 2>&1 </dev/null & '
            'echo $! >"$pidf"; echo $!'
        )
        out = self.exec(["bash", "-c", script, "spawn", name, command], env=env, check=True)
        return int(out.out.strip().splitlines()[-1])

    def process_pid(self, name: str) -> int | None:
        """The pid of a ``spawn``-ed process if it still runs."""
        self._check_process_name(name)
        script = 'p=$(cat "/run/kuryr/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null && echo $p'
        out = self.exec(["bash", "-c", script, "pid", name]).out.strip()
        return int(out) if out.isdigit() else None

    def kill_process(self, name: str, timeout: float = 10.0) -> bool:
        """SIGTERM the ``spawn``-ed process group, SIGKILL after ``timeout``. True if it ran."""
        self._check_process_name(name)
        script = (
            'pidf="/run/kuryr/$1.pid"; p=$(cat "$pidf" 2>/dev/null) || exit 3; '
            'kill -0 "$p" 2>/dev/null || { rm -f "$pidf"; exit 3; }; kill -TERM -- "-$p"; '
            'for i in $(seq 1 $(( $2 * 10 ))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; '
            'done; kill -KILL -- "-$p" 2>/dev/null; rm -f "$pidf"; exit 0'
        )
        rc = self.exec(["bash", "-c", script, "kill", name, str(int(timeout))]).rc
        return rc == 0

    def log_of(self, name: str, lines: int = 50) -> str:
        """The tail of a ``spawn``-ed process's log."""
        self._check_process_name(name)
        return self.exec(["tail", "-n", str(lines), f"/var/log/{name}.log"]).out

    def ping(self, timeout: float = 5.0) -> float:
        """Round trip of the command channel, in seconds."""
        t0 = time.monotonic()
        self.channel.ping(timeout)
        return time.monotonic() - t0

    def console(self, lines: int = 40) -> str:
        return console_tail(self.paths, lines)

    @staticmethod
    def _check_process_name(name: str) -> None:
        if not PROCESS_NAME_RE.match(name):
            raise ConfigError(f"bad process name {name!r}: use letters, digits, '_', '.', '-'")


def console_tail(paths: VmPaths, lines: int = 40) -> str:
    try:
        text = paths.console.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no console log yet)"
    return "\n".join(text[-lines:])


# -- lifecycle ------------------------------------------------------------------------


@contextmanager
def _lifecycle_lock(paths: VmPaths) -> Iterator[None]:
    paths.dir.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def require_sandbox(ctx: Context) -> None:
    """Refuse clearly when the sandbox's OVS or Neutron is not running."""
    try:
        ok = ctx.vsctl("br-exists", "br-int", timeout=10) == ""
    except SandboxError:
        ok = False
    if not ok:
        raise SandboxError(
            f"the sandbox in {ctx.paths.root} is not up (no br-int in its OVS): "
            "run 'kuryr sandbox up' first"
        )
    if not http_ok(ctx.settings.neutron_url, timeout=10):
        raise SandboxError(
            f"Neutron does not answer at {ctx.settings.neutron_url}: run 'kuryr sandbox up' "
            "(and 'kuryr sandbox status' to see what is down)"
        )


def known_names(ctx: Context) -> list[str]:
    root = vms_dir(ctx.paths.root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "vm.json").exists())


def _no_such(ctx: Context, name: str) -> NoSuchVm:
    known = known_names(ctx)
    return NoSuchVm(
        f"no such VM {name!r} (known: {', '.join(known) or 'none'}); "
        f"create it with 'kuryr sandbox vm create {name}'"
    )


def get_vm(ctx: Context, name: str) -> Vm:
    """The handle of an existing VM (running or not); NoSuchVm names the known ones."""
    validate_name(name)
    rec = load_record(vm_paths(ctx.paths.root, name))
    if rec is None:
        raise _no_such(ctx, name)
    return Vm(ctx, rec)


def list_vms(ctx: Context) -> list[VmInfo]:
    infos = []
    for name in known_names(ctx):
        paths = vm_paths(ctx.paths.root, name)
        rec = load_record(paths)
        if rec is not None:
            infos.append(_info(paths, rec))
    return infos


def ensure_vm(
    ctx: Context,
    conn: Any,
    topo: Topology,
    spec: VmSpec,
    progress: Progress = _quiet,
    *,
    restart: bool = False,
) -> Vm:
    """Create or reuse the VM of ``spec``, make sure it runs, and return its handle.

    A VM already running is verified (QEMU alive, channel answers, tap on this sandbox's
    br-int with the port's iface-id, guest eth0 with the port's MAC, IP and MTU) and
    repaired otherwise, saying what was repaired. ``restart`` restarts it anyway (to run
    changed project code: the code is pushed at start).
    """
    paths = vm_paths(ctx.paths.root, spec.name)
    paths.check_socket_paths()
    require_sandbox(ctx)
    img = image.ensure_image(progress)
    with _lifecycle_lock(paths):
        fresh = load_record(paths) is None and ports.find_port(conn, spec.name) is None
        try:
            return _ensure_locked(ctx, conn, topo, spec, paths, img, progress, restart)
        except BaseException:
            if fresh:  # no partial VM: remove what this call made
                with contextlib.suppress(Exception):
                    made = _delete_locked(ctx, conn, paths, spec.name, progress)
                    progress(f"VM {spec.name}: creation failed; removed {', '.join(made)}")
                shutil.rmtree(paths.dir, ignore_errors=True)
            raise


def _ensure_locked(
    ctx: Context,
    conn: Any,
    topo: Topology,
    spec: VmSpec,
    paths: VmPaths,
    img: image.Image,
    progress: Progress,
    restart: bool,
) -> Vm:
    rec = _ensure_neutron(ctx, conn, topo, spec, paths, progress)
    running = qemu.pid(paths) is not None
    if running and restart:
        progress(f"VM {spec.name}: restarting as asked")
        _stop_locked(ctx, paths, rec)
    elif running:
        problems = verify(ctx, paths, rec)
        if not problems:
            _warn_stale_code(paths, rec, img, progress)
            progress(f"VM {spec.name}: running and verified ({rec.cidr}, tap {rec.tap})")
            return Vm(ctx, rec)
        if problems == ["OVS row"]:
            _plug(ctx, rec)
            progress(f"VM {spec.name}: repaired its br-int port row")
            return Vm(ctx, rec)
        progress(f"VM {spec.name}: repairing ({'; '.join(problems)}): restarting it")
        _stop_locked(ctx, paths, rec)
    _start_locked(ctx, conn, paths, rec, img, progress)
    return Vm(ctx, rec)


def ensure_vms(
    ctx: Context,
    topo: Topology,
    specs: Sequence[VmSpec],
    progress: Progress = _quiet,
    *,
    restart: Collection[str] = (),
    parallel: int = 2,
) -> dict[str, Vm]:
    """``ensure_vm`` for several VMs, ``parallel`` at a time, so their boots overlap.

    Under TCG each guest keeps one host core busy while it boots, so more than the host's
    core count gains nothing. Each worker uses its own Neutron connection. Every VM is
    attempted; the first error is raised after all have finished, naming the others.
    ``restart`` names VMs to restart if they already run.
    """
    image.ensure_image(progress)  # once, before the workers

    def one(spec: VmSpec) -> Vm:
        conn = connect(ctx.settings)
        try:
            return ensure_vm(ctx, conn, topo, spec, progress, restart=spec.name in restart)
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {spec.name: pool.submit(one, spec) for spec in specs}
    errors = {name: f.exception() for name, f in futures.items() if f.exception() is not None}
    if errors:
        first = next(iter(errors.values()))
        assert first is not None
        if len(errors) > 1:
            raise SandboxError(
                "; ".join(f"VM {name}: {exc}" for name, exc in errors.items())
            ) from first
        raise first
    return {name: f.result() for name, f in futures.items()}


def start(
    ctx: Context,
    conn: Any,
    topo: Topology,
    name: str,
    progress: Progress = _quiet,
    *,
    restart: bool = False,
) -> Vm:
    """Start an existing VM as recorded (same network, a trunk if it had one); a running
    one is verified like ``ensure_vm`` does."""
    rec = get_vm(ctx, name).record
    spec = VmSpec(name, network=rec.network_id, trunk=rec.trunk_id is not None)
    return ensure_vm(ctx, conn, topo, spec, progress, restart=restart)


def _ensure_neutron(
    ctx: Context, conn: Any, topo: Topology, spec: VmSpec, paths: VmPaths, progress: Progress
) -> VmRecord:
    """Port (and trunk) of the VM, looked up before created; the record written."""
    old = load_record(paths)
    net = ports.resolve_network(conn, topo, spec.network)
    if old is not None and old.network_id != net.network_id:
        raise ConfigError(
            f"VM {spec.name!r} exists on network {old.network_name} ({old.network_id}), not "
            f"{spec.network!r}: delete it first ('kuryr sandbox vm delete {spec.name}')"
        )
    sid = sandbox_id(ctx.paths.root)
    port = ports.ensure_port(
        conn,
        topo,
        net,
        spec.name,
        device_id=vm_uuid(sid, spec.name),
        host=ctx.settings.hostname,
        security_groups=list(spec.security_groups) if spec.security_groups else None,
        progress=progress,
    )
    if old is not None and old.port_id != port.id:
        progress(f"VM {spec.name}: its port {old.port_id} is gone; now using {port.id}")
    trunk = ports.find_trunk(conn, spec.name, port.id)
    if spec.trunk and trunk is None:
        trunk = ports.ensure_trunk(conn, topo, spec.name, port, progress)
    rec = VmRecord(
        name=spec.name,
        sandbox_id=sid,
        vm_uuid=vm_uuid(sid, spec.name),
        tap=tap_name(sid, spec.name),
        network_id=net.network_id,
        network_name=net.network_name,
        subnet_id=net.subnet_id,
        port_id=port.id,
        mac=port.mac_address,
        ip=next(ip["ip_address"] for ip in port.fixed_ips if ip["subnet_id"] == net.subnet_id),
        prefixlen=net.prefixlen,
        gateway=net.gateway,
        mtu=net.mtu,
        trunk_id=trunk.id if trunk is not None else None,
    )
    if old is not None and (old.port_id, old.mac, old.ip) == (rec.port_id, rec.mac, rec.ip):
        rec.image_key, rec.app_stamp = old.image_key, old.app_stamp
        rec.started_at, rec.boot_seconds = old.started_at, old.boot_seconds
    save_record(paths, rec)
    return rec


def _plug(ctx: Context, rec: VmRecord) -> None:
    hostnet.ensure_tap(rec.tap, rec.mtu)
    hostnet.ensure_ovs_port(
        ctx,
        hostnet.TapPlug(
            rec.tap, rec.port_id, rec.mac, rec.vm_uuid, rec.sandbox_id, rec.name, rec.mtu
        ),
    )


def _unplug(ctx: Context, rec: VmRecord, progress: Progress = _quiet) -> list[str]:
    """Remove the br-int row and the tap. An OVS that is down keeps its row (``start``
    rewrites it); the tap goes anyway."""
    removed = []
    try:
        if hostnet.delete_ovs_port(ctx, rec.tap, rec.sandbox_id):
            removed.append(f"br-int port {rec.tap}")
    except SandboxError as exc:
        progress(f"VM {rec.name}: br-int row of {rec.tap} left in place: {exc}")
    if hostnet.delete_tap(rec.tap):
        removed.append(f"tap {rec.tap}")
    return removed


def _start_locked(
    ctx: Context, conn: Any, paths: VmPaths, rec: VmRecord, img: image.Image, progress: Progress
) -> None:
    t0 = time.monotonic()
    _plug(ctx, rec)
    try:
        if appdisk.ensure_app_disk(paths.app_img):
            progress(f"VM {rec.name}: packed the project's code ({appdisk.PACKAGE_DIR})")
        net = qemu.GuestNet(rec.name, rec.mac, rec.cidr, rec.gateway, rec.mtu)
        pid = qemu.launch(paths, img, rec.tap, net)
        t_launch = time.monotonic()
        progress(f"VM {rec.name}: QEMU pid {pid} booting ({rec.cidr}, tap {rec.tap})")
        _wait_channel(paths, rec, pid)
        t_boot = time.monotonic()
        problems = _verify_guest(Vm(ctx, rec))
        if problems:
            raise SandboxError(f"VM {rec.name} booted wrong: {'; '.join(problems)}")
        ports.wait_port_status(conn, rec.port_id, "ACTIVE", ACTIVE_TIMEOUT)
    except BaseException:
        qemu.stop(paths)
        _unplug(ctx, rec)
        raise
    rec.image_key = img.key
    rec.app_stamp = appdisk.source_stamp()
    rec.started_at = time.time()
    rec.boot_seconds = round(time.monotonic() - t0, 2)
    save_record(paths, rec)
    progress(
        f"VM {rec.name}: up in {rec.boot_seconds:.1f} s (plug + launch {t_launch - t0:.1f} s, "
        f"boot {t_boot - t_launch:.1f} s, checks {time.monotonic() - t_boot:.1f} s; "
        f"port {rec.port_id} ACTIVE)"
    )


def _wait_channel(paths: VmPaths, rec: VmRecord, pid: int) -> None:
    """Wait for the guest's first answer. One request stays queued on the socket until the
    guest opens its port (QEMU holds it meanwhile), so the answer comes as soon as the
    command server runs, not at the next poll."""
    channel = Channel(paths.cmd_sock, paths.chan_lock)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            channel.ping(timeout=max(1.0, min(30.0, deadline - time.monotonic())))
            return
        except ChannelError:
            pass
        if qemu.pid(paths) != pid:
            raise SandboxError(
                f"VM {rec.name}: QEMU exited while booting; console ({paths.console}):\n"
                f"{log_tail(paths.console)}"
            )
        if time.monotonic() > deadline:
            raise SandboxError(
                f"VM {rec.name}: the guest did not answer within {BOOT_TIMEOUT:.0f} s; "
                f"console ({paths.console}):\n{log_tail(paths.console)}"
            )
        time.sleep(0.05)


def _warn_stale_code(paths: VmPaths, rec: VmRecord, img: image.Image, progress: Progress) -> None:
    """A reused VM runs what it booted with: say when that is no longer current."""
    hint = f"restart it to pick that up ('kuryr sandbox vm start --restart {rec.name}')"
    if rec.app_stamp is not None and rec.app_stamp != appdisk.source_stamp():
        progress(f"VM {rec.name}: note: src/kuryr_k8s changed since it started; {hint}")
    if rec.image_key is not None and rec.image_key != img.key:
        progress(f"VM {rec.name}: note: it runs image {rec.image_key}, now {img.key}; {hint}")


def verify(ctx: Context, paths: VmPaths, rec: VmRecord) -> list[str]:
    """What is wrong with a running VM (empty when healthy). ``"OVS row"`` alone means only
    the br-int row is missing or wrong, which is fixed without a restart."""
    if qemu.pid(paths) is None:
        return ["QEMU is not running"]
    if not hostnet.tap_exists(rec.tap):
        return [f"tap {rec.tap} is missing"]
    try:
        Channel(paths.cmd_sock, paths.chan_lock).ping(timeout=10)
    except ChannelError as exc:
        return [f"the command channel does not answer ({exc})"]
    problems = _verify_guest(Vm(ctx, rec))
    ids = hostnet.ovs_external_ids(ctx, rec.tap)
    if ids is None or ids.get("iface-id") != rec.port_id or ids.get("attached-mac") != rec.mac:
        problems.append("OVS row")
    return problems


def _verify_guest(vm: Vm) -> list[str]:
    """Guest eth0 must carry the port's MAC, IP and the network's MTU."""
    res = vm.exec(["ip", "-j", "addr", "show", "dev", "eth0"], timeout=30)
    if res.rc != 0:
        return [f"guest has no eth0 ({res.err.strip()})"]
    link = json.loads(res.out)[0]
    problems = []
    if link.get("address") != vm.record.mac:
        problems.append(f"guest eth0 MAC is {link.get('address')}, port's is {vm.record.mac}")
    addrs = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
    if vm.record.cidr not in addrs:
        problems.append(f"guest eth0 has {sorted(addrs)}, not {vm.record.cidr}")
    if int(link.get("mtu", 0)) != vm.record.mtu:
        problems.append(f"guest eth0 MTU is {link.get('mtu')}, network's is {vm.record.mtu}")
    return problems


def stop(ctx: Context, name: str, progress: Progress = _quiet) -> bool:
    """Stop the VM (QEMU, tap, br-int row); the Neutron port and record stay. True if it
    was running. The port goes DOWN, as a stopped Nova VM's does."""
    vm = get_vm(ctx, name)
    with _lifecycle_lock(vm.paths):
        return _stop_locked(ctx, vm.paths, vm.record, progress)


def _stop_locked(ctx: Context, paths: VmPaths, rec: VmRecord, progress: Progress = _quiet) -> bool:
    t0 = time.monotonic()
    was = qemu.stop(paths)
    removed = _unplug(ctx, rec, progress)
    if was or removed:
        progress(f"VM {rec.name}: stopped in {time.monotonic() - t0:.1f} s")
    return was


def delete(ctx: Context, conn: Any, name: str, progress: Progress = _quiet) -> list[str]:
    """Delete the VM and all it owns: QEMU, tap and br-int row, trunk (subports removed
    first; tagged ones deleted), port, its folder. Idempotent: returns what it removed
    (empty if nothing was there). Works from the record, or from the names when the
    record is gone."""
    paths = vm_paths(ctx.paths.root, name)
    with _lifecycle_lock(paths):
        removed = _delete_locked(ctx, conn, paths, name, progress)
    shutil.rmtree(paths.dir, ignore_errors=True)
    if removed:
        progress(f"VM {name}: deleted {', '.join(removed)}")
    return removed


def _delete_locked(
    ctx: Context, conn: Any, paths: VmPaths, name: str, progress: Progress
) -> list[str]:
    sid = sandbox_id(ctx.paths.root)
    removed: list[str] = []
    rec = load_record(paths)
    if qemu.stop(paths):
        removed.append("QEMU")
    tap = rec.tap if rec is not None else tap_name(sid, name)
    try:
        if hostnet.delete_ovs_port(ctx, tap, sid):
            removed.append(f"br-int port {tap}")
    except SandboxError as exc:
        progress(f"  {exc}")
    if hostnet.delete_tap(tap):
        removed.append(f"tap {tap}")
    port = conn.network.find_port(rec.port_id, ignore_missing=True) if rec else None
    port = port or ports.find_port(conn, name)
    trunk_id = rec.trunk_id if rec is not None else None
    trunk = ports.find_trunk(conn, name, port.id if port is not None else None)
    for tid in {t for t in (trunk_id, trunk.id if trunk is not None else None) if t}:
        removed += ports.delete_trunk(conn, tid, progress)
    if port is not None:
        conn.network.delete_port(port, ignore_missing=True)
        removed.append(f"port {port.id}")
    return removed


def orphan_taps(ctx: Context) -> list[str]:
    """Tap devices named for this sandbox (``kv<sandbox id>...``) that no record claims."""
    sid = sandbox_id(ctx.paths.root)
    claimed = {tap_name(sid, n) for n in known_names(ctx)}
    out = run(["ip", "-o", "link", "show", "type", "tun"], check=False).stdout
    names = [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line]
    return [n for n in names if n.startswith("kv" + sid) and n not in claimed]


def format_vms(infos: list[VmInfo]) -> str:
    header = ("NAME", "STATE", "IP", "MAC", "PORT", "TRUNK", "TAP", "PID", "RSS MiB")
    rows = [header] + [
        (
            i.name,
            i.state,
            i.cidr,
            i.mac,
            i.port_id,
            i.trunk_id or "-",
            i.tap,
            str(i.pid or "-"),
            f"{i.rss_mib:.0f}" if i.rss_mib is not None else "-",
        )
        for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
