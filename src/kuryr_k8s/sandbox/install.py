"""``kuryr sandbox install``: Debian packages and the optional PyPI venvs.

Idempotent: packages already installed and venvs already complete are left alone.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from kuryr_k8s.sandbox.paths import SandboxPaths
from kuryr_k8s.sandbox.process import SandboxError, run
from kuryr_k8s.sandbox.settings import SandboxSettings

APT_PACKAGES = [
    "openvswitch-switch",
    "openvswitch-common",
    "ovn-central",
    "ovn-host",
    "neutron-server",
    "neutron-common",
    "python3-neutron",
    "python3-pymysql",
    "mariadb-server",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "curl",
    "tcpdump",
    "procps",
    "python3-venv",
    # sandbox VMs (kuryr sandbox vm; shared/notes/nested-vm.md section 3)
    "qemu-system-x86",
    "mmdebstrap",
    "e2fsprogs",
    "cpio",
    "busybox-static",
]
"""Debian 12 packages (shared/notes/openstack-sandbox.md section 2.1, nested-vm.md 3)."""

BUILD_PACKAGES = ["build-essential", "python3-dev"]
"""Needed to compile uWSGI for the PyPI Neutron."""

SYSTEMD_UNITS = [
    "openvswitch-switch",
    "ovs-vswitchd",
    "ovsdb-server",
    "ovn-central",
    "ovn-northd",
    "ovn-ovsdb-server-nb",
    "ovn-ovsdb-server-sb",
    "ovn-host",
    "ovn-controller",
    "mariadb",
    "neutron-api",
    "neutron-rpc-server",
    "neutron-server",
]
"""Distro services that would take our ports on a systemd host (section 5.10)."""

VENVS = {
    "neutron29": (["neutron==29.0.0", "PyMySQL", "uWSGI"], "neutron29-constraints.txt"),
    "octavia": (
        ["octavia==19.0.0", "ovn-octavia-provider==11.0.0", "PyMySQL"],
        "octavia19-constraints.txt",
    ),
}

Progress = Callable[[str], None]


def missing_packages(packages: list[str]) -> list[str]:
    out = run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *packages], check=False
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["ii"]}
    return [p for p in packages if p not in installed]


def apt_install(packages: list[str], progress: Progress) -> None:
    missing = missing_packages(packages)
    if not missing:
        progress(f"apt: all {len(packages)} packages already installed")
        return
    progress(f"apt: installing {len(missing)} packages: {' '.join(missing)}")
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy:
        # Keep the packages' own services from starting on default paths and ports.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-q"], env=env, timeout=600)
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            env=env,
            timeout=1800,
        )
    except SandboxError as exc:
        raise SandboxError(
            f"apt-get install failed: {exc}\n  likely fix: 'dpkg --configure -a', then run "
            "'kuryr sandbox install' again"
        ) from exc
    finally:
        if not had_policy:
            policy.unlink(missing_ok=True)
    if Path("/run/systemd/system").is_dir():
        progress("systemd host: disabling the distro services the sandbox replaces")
        run(["systemctl", "disable", "--now", *SYSTEMD_UNITS], check=False, timeout=300)


def system_python() -> str:
    """The Python for the PyPI venvs: Debian's python3 (3.11), else ours."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def ensure_venv(paths: SandboxPaths, name: str, progress: Progress) -> Path:
    """Create or complete a venv; a marker file records a finished install."""
    requirements, constraints = VENVS[name]
    venv = paths.venvs / name
    done = venv / ".kuryr-installed"
    wanted = " ".join(requirements) + " -c " + constraints
    if done.exists() and done.read_text().strip() == wanted:
        progress(f"venv {name}: already installed")
        return venv
    progress(f"venv {name}: installing {' '.join(requirements)} (a few minutes)")
    paths.venvs.mkdir(parents=True, exist_ok=True)
    run([system_python(), "-m", "venv", str(venv)], timeout=300)
    pip = str(venv / "bin" / "pip")
    run([pip, "install", "-q", "-U", "pip", "setuptools", "wheel"], timeout=900)
    with resources.as_file(resources.files("kuryr_k8s.sandbox") / "data" / constraints) as cfile:
        run([pip, "install", "-q", "-c", str(cfile), *requirements], timeout=1800)
    done.write_text(wanted + "\n")
    return venv


def link_neutron29_paste(paths: SandboxPaths) -> None:
    """PyPI Neutron ships api-paste.ini under its package data; put it where the conf says."""
    venv = paths.venvs / "neutron29"
    target = venv / "etc" / "neutron" / "api-paste.ini"
    if target.exists():
        return
    candidates = list(venv.glob("lib/python3*/site-packages/neutron/../etc/api-paste.ini"))
    candidates += list(venv.glob("etc/neutron/api-paste.ini"))
    candidates += list(venv.glob("lib/python3*/site-packages/etc/api-paste.ini"))
    if not candidates:
        raise SandboxError(
            f"neutron29: api-paste.ini not found in {venv}; reinstall with "
            f"'rm -r {venv}' and 'kuryr sandbox install --neutron pypi'"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(candidates[0], target)


def install(settings: SandboxSettings, paths: SandboxPaths, progress: Progress) -> None:
    packages = list(APT_PACKAGES)
    if settings.neutron == "pypi" or settings.octavia:
        packages += BUILD_PACKAGES
    apt_install(packages, progress)
    paths.ensure()
    if settings.neutron == "pypi":
        ensure_venv(paths, "neutron29", progress)
        link_neutron29_paste(paths)
    if settings.octavia:
        ensure_venv(paths, "octavia", progress)
    os.sync()
