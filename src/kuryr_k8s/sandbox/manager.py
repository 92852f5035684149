"""Lifecycle of the whole sandbox: preflight, up, down, status, reset, env."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.sandbox import hostobjects, naming
from kuryr_k8s.sandbox.components import (
    Component,
    Context,
    all_components,
    is_root,
)
from kuryr_k8s.sandbox.openstack import configs
from kuryr_k8s.sandbox.openstack.services import delete_leftover_taps
from kuryr_k8s.sandbox.paths import paths_for
from kuryr_k8s.sandbox.process import SandboxError, pss_mib
from kuryr_k8s.sandbox.settings import SandboxSettings

Progress = Callable[[str], None]


def preflight(os_release: Path = Path("/etc/os-release"), *, root: bool | None = None) -> None:
    """Refuse to run where the sandbox cannot work, saying why."""
    if not (is_root() if root is None else root):
        raise SandboxError(
            "the sandbox needs root (it installs packages, creates network namespaces and "
            "runs OVS): run it as root, e.g. 'sudo kuryr sandbox ...'"
        )
    fields: dict[str, str] = {}
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip('"')
    except FileNotFoundError:
        pass
    if fields.get("ID") != "debian" or fields.get("VERSION_ID") != "12":
        found = fields.get("PRETTY_NAME", "an unknown OS")
        raise SandboxError(
            f"unsupported OS: {found}. The sandbox is built and tested on Debian 12 "
            "(bookworm) only, because it relies on its package versions (OVS 3.1, OVN 23.03, "
            "Neutron Zed)."
        )


def context(settings: SandboxSettings) -> Context:
    return Context(settings=settings, paths=paths_for(settings))


def _check_installed(ctx: Context) -> None:
    missing = [
        b
        for b in ("ovs-vsctl", "ovn-northd", "mariadbd", "neutron-db-manage")
        if shutil.which(b) is None
    ]
    if missing:
        raise SandboxError(
            f"not installed: {', '.join(missing)}. Run 'kuryr sandbox install' first."
        )


def write_client_config(ctx: Context) -> None:
    ctx.paths.clouds_yaml.write_text(configs.clouds_yaml(ctx.settings))


def up(
    settings: SandboxSettings,
    progress: Progress,
    components: list[Component] | None = None,
    *,
    reuse: bool | None = None,
) -> list[str]:
    """Start every enabled component that is not running. Returns those started.

    If one fails, the ones this call started are stopped again: nothing half-started.
    With the product on (``kuryr``) it then verifies the demo's objects it would reuse
    (the VM stand-in, the seed pods) and repairs the broken ones, saying so
    (``demo.repair_reused``); ``reuse=False`` skips that (default: only when
    ``components`` is not given).
    """
    ctx = context(settings)
    if components is None:
        _check_installed(ctx)
        components = all_components(ctx)
    ctx.paths.ensure()
    naming.record_sandbox_id(ctx.paths.root)
    write_client_config(ctx)
    started: list[Component] = []
    try:
        for comp in components:
            if not comp.enabled():
                continue
            t0 = time.monotonic()
            if comp.start():
                started.append(comp)
                progress(f"  started {comp.name:<22} {time.monotonic() - t0:6.1f} s")
            else:
                progress(f"  running {comp.name:<22} (pid {comp.pid()})")
    except BaseException:
        for comp in reversed(started):
            comp.stop()
        if any(c.name == "ovs-vswitchd" for c in started):
            delete_leftover_taps()
        raise
    names = [c.name for c in started]
    if reuse is None:
        reuse = components is None
    if reuse and settings.kuryr and settings.kubeconfig is None:
        from kuryr_k8s.sandbox import demo  # demo builds on this module

        demo.repair_reused(ctx, progress, settle=NODE_AGENT in names)
    return names


NODE_AGENT = "node-agent"


def down(settings: SandboxSettings, progress: Progress) -> list[str]:
    """Stop what the sandbox started, in reverse order; leaves state on disk."""
    ctx = context(settings)
    stopped = []
    stopped += _stop_vms(ctx, progress)
    for comp in reversed(all_components(ctx)):
        if comp.stop():
            stopped.append(comp.name)
            progress(f"  stopped {comp.name}")
    removed = delete_leftover_taps()
    if removed:
        progress(f"  removed leftover tap devices: {', '.join(removed)}")
    host = hostobjects.remove_owned(ctx)
    if host:
        progress(f"  removed this sandbox's host objects: {', '.join(host)}")
    return stopped


def _stop_vms(ctx: Context, progress: Progress) -> list[str]:
    """Stop this sandbox's VMs (before OVS goes: their taps are br-int ports). Their
    records and Neutron ports stay, as a stopped Nova VM's do; ``vm start`` or the demo
    starts them again."""
    from kuryr_k8s.sandbox import vm

    stopped = []
    for info in vm.list_vms(ctx):
        if info.state == "running" and vm.stop(ctx, info.name, progress):
            stopped.append(f"vm {info.name}")
    return stopped


def _forget_vms(ctx: Context, progress: Progress) -> None:
    """For ``reset`` (Neutron's database is wiped with the rest): stopped VMs' folders
    and any tap device named for this sandbox."""
    from kuryr_k8s.sandbox import vm
    from kuryr_k8s.sandbox.vm import hostnet, layout

    for tap in vm.machine.orphan_taps(ctx):
        hostnet.delete_tap(tap)
    for info in vm.list_vms(ctx):
        shutil.rmtree(info.dir, ignore_errors=True)
        progress(f"  forgot VM {info.name}")
    shutil.rmtree(layout.vms_dir(ctx.paths.root), ignore_errors=True)


def reset(settings: SandboxSettings, progress: Progress) -> None:
    """Stop everything and wipe state (databases, OVS/OVN, config); keep logs and venvs."""
    down(settings, progress)  # removes the pods' and the VM stand-in's netns
    _forget_vms(context(settings), progress)
    paths = paths_for(settings)
    for d in paths.state_dirs():
        if d.exists():
            shutil.rmtree(d)
            progress(f"  wiped {d}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    enabled: bool
    pid: int | None
    pss_mib: float | None
    api: bool | None
    log_file: Path

    @property
    def healthy(self) -> bool:
        if not self.enabled:
            return True
        return self.pid is not None and self.api is not False


def status(settings: SandboxSettings) -> list[ComponentStatus]:
    ctx = context(settings)
    out = []
    for comp in all_components(ctx):
        pid = comp.pid() if comp.enabled() else None
        api = None
        if pid is not None:
            try:
                api = comp.api_probe()
            except Exception:
                api = False
        out.append(
            ComponentStatus(
                name=comp.name,
                enabled=comp.enabled(),
                pid=pid,
                pss_mib=_memory(pid, comp.extra_pids()),
                api=api,
                log_file=comp.log_file,
            )
        )
    return out


def _memory(pid: int | None, extra: list[int]) -> float | None:
    if pid is None:
        return None
    return sum(pss_mib(p) or 0.0 for p in [pid, *extra])


def format_status(rows: list[ComponentStatus]) -> str:
    lines = [f"{'COMPONENT':<22} {'STATE':<9} {'PID':>7} {'PSS MiB':>8}  API   LOG"]
    for r in rows:
        if not r.enabled:
            state = "disabled"
        elif r.pid is None:
            state = "DOWN"
        else:
            state = "running"
        api = "-" if r.api is None else ("ok" if r.api else "FAIL")
        pss = f"{r.pss_mib:8.1f}" if r.pss_mib is not None else f"{'-':>8}"
        pid = str(r.pid) if r.pid is not None else "-"
        lines.append(f"{r.name:<22} {state:<9} {pid:>7} {pss}  {api:<5} {r.log_file}")
    total = sum(r.pss_mib or 0 for r in rows)
    lines.append(f"{'total':<22} {'':<9} {'':>7} {total:8.1f}")
    return "\n".join(lines)


def env_lines(settings: SandboxSettings) -> list[str]:
    """Shell ``export`` lines for the clients: openstack, ovs-vsctl, ovn-nbctl, kubectl."""
    ctx = context(settings)
    exports = {
        "OS_CLIENT_CONFIG_FILE": str(ctx.paths.clouds_yaml),
        "OS_CLOUD": "kuryr-sandbox",
        **ctx.ovs_env(),
    }
    if ctx.paths.kubeconfig.exists():
        exports["KUBECONFIG"] = str(ctx.paths.kubeconfig)
    return [f"export {k}={v}" for k, v in exports.items()]
