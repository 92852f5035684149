"""A self-contained ``kuryr-cni`` for the node, the way Calico's and Cilium's installers
put a static binary into ``/opt/cni/bin``.

The plugin is Python, and the node's own Python (if any) is not ours to rely on. So the
daemon's init container copies, from its image onto the host:

* ``<bundle>/bin/python3``: this interpreter's binary;
* ``<bundle>/lib/``: every shared library it links (``ldd``), the dynamic loader among
  them, run explicitly with ``--library-path`` and ``--inhibit-cache``, so the node's
  glibc version and library cache play no part;
* ``<bundle>/lib/pythonX.Y/``: the standard library (without tests, IDLE, tkinter,
  ensurepip, lib2to3, distutils, the build configuration and site packages);
* ``<bundle>/site/kuryr_k8s/``: the plugin's own modules (standard library only);

and writes ``<bin_dir>/kuryr-cni``, a ``/bin/sh`` launcher that ``exec``s the loader on
the interpreter in isolated mode (``-IS``). Everything is written to a temporary
directory first and renamed into place, so a runtime never runs half a bundle.
"""

from __future__ import annotations

import compileall
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.cni.errors import HostError

PLUGIN_MODULES = ("__init__.py", "cni/__init__.py", "cni/plugin.py", "cni/spec.py", "cni/wire.py")
"""The plugin's closure inside ``kuryr_k8s`` (``cni/plugin.py`` imports only these)."""
STDLIB_SKIP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "distutils",
        "site-packages",
        "dist-packages",
        "__pycache__",
    }
)
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)")


@dataclass(frozen=True)
class Bundle:
    """``<root>/<name>/``: one bundle; ``root`` is where it is written, ``host_root``
    where the node sees that directory (they differ when the host's directory is
    mounted elsewhere, as in the init container)."""

    root: Path
    host_root: str
    name: str
    python: str = sys.executable

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def host_path(self) -> str:
        return f"{self.host_root.rstrip('/')}/{self.name}"


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries ``binary`` loads, the dynamic loader included (from ``ldd``)."""
    try:
        out = subprocess.run(
            ["ldd", str(binary)], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HostError(f"cannot list the shared libraries of {binary} with ldd: {exc}") from exc
    libs = [Path(m.group(1)) for line in out.splitlines() if (m := _LDD_LINE.match(line))]
    if not any(p.name.startswith("ld-linux") for p in libs):
        raise HostError(f"ldd {binary}: no dynamic loader in its output:\n{out}")
    return libs


def loader_name(libs: list[Path]) -> str:
    return next(p.name for p in libs if p.name.startswith("ld-linux"))


def _copy_stdlib(src: Path, dest: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        if Path(directory) == src:
            return {n for n in names if n in STDLIB_SKIP or n.startswith("config-")}
        return {n for n in names if n in ("__pycache__", "test", "tests")}

    shutil.copytree(src, dest, ignore=ignore, symlinks=False)


def launcher(bundle: Bundle, loader: str) -> str:
    home = bundle.host_path
    return (
        "#!/bin/sh\n"
        "# kuryr-cni: the plugin on its own interpreter and libraries (kuryr deploy\n"
        "# install-cni wrote this; the node's Python and glibc are not used).\n"
        f"exec {home}/lib/{loader} --inhibit-cache --library-path {home}/lib "
        f'{home}/bin/python3 -IS {home}/kuryr-cni.py "$@"\n'
    )


def entry_script(bundle: Bundle) -> str:
    return (
        f"import sys; sys.path.insert(0, {bundle.host_path + '/site'!r})\n"
        "from kuryr_k8s.cni.plugin import main; main()\n"
    )


def build(bundle: Bundle) -> str:
    """Write the bundle under ``bundle.root`` (replacing an older one); returns the
    launcher's text for ``<bin_dir>/kuryr-cni``."""
    python = Path(bundle.python).resolve()
    libs = shared_libraries(python)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    package = Path(__file__).resolve().parents[1]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tmp = bundle.root / f".{bundle.name}.new"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "bin").mkdir(parents=True)
    (tmp / "lib").mkdir()
    shutil.copy2(python, tmp / "bin" / "python3")
    for lib in libs:
        shutil.copy2(lib.resolve(), tmp / "lib" / lib.name)
    _copy_stdlib(stdlib, tmp / "lib" / version)
    for rel in PLUGIN_MODULES:
        target = tmp / "site" / "kuryr_k8s" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package / rel, target)
    (tmp / "kuryr-cni.py").write_text(entry_script(bundle))
    # Byte-compile now (the plugin runs with -I on every pod; nothing writes caches then).
    compileall.compile_dir(tmp / "lib" / version, quiet=1, workers=1)
    compileall.compile_dir(tmp / "site", quiet=1)
    old = bundle.root / f".{bundle.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if bundle.path.exists():
        bundle.path.rename(old)
    tmp.rename(bundle.path)
    if old.exists():
        shutil.rmtree(old)
    return launcher(bundle, loader_name(libs))


def prune(bundle: Bundle) -> list[Path]:
    """Remove the other bundles under ``root`` (call once the launcher names this one)."""
    removed = []
    for entry in sorted(bundle.root.iterdir()) if bundle.root.exists() else []:
        if entry.name != bundle.name and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
            removed.append(entry)
    return removed


def remove(root: Path) -> list[Path]:
    """Remove every bundle under ``root`` (uninstall)."""
    removed = []
    for entry in sorted(root.iterdir()) if root.exists() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
            removed.append(entry)
    return removed
