"""The project's own code for the guest: a small read-only ext4 disk made at each start.

``src/kuryr_k8s`` changes often, so it is not in the image. At every VM start its files
(``__pycache__`` left out) are copied to a staging folder, byte-compiled on the host
(the guest's Python is the same 3.11; ``unchecked-hash`` pycs, so the guest never
recompiles on a read-only disk, which is slow under emulation) and packed with
``mkfs.ext4 -d``. The guest init mounts it read-only on ``/opt/kuryr/app``. A stamp (a
hash of the sources' names, sizes and mtimes) skips the rebuild when nothing changed.
"""

from __future__ import annotations

import compileall
import hashlib
import py_compile
import shutil
import subprocess
import tempfile
from pathlib import Path

import kuryr_k8s
from kuryr_k8s.sandbox.process import SandboxError

PACKAGE_DIR = Path(kuryr_k8s.__file__).parent


def _source_files(src: Path) -> list[Path]:
    return sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def source_stamp(src: Path = PACKAGE_DIR) -> str:
    h = hashlib.sha256()
    for p in _source_files(src):
        st = p.stat()
        h.update(f"{p.relative_to(src)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def ensure_app_disk(img: Path, src: Path = PACKAGE_DIR) -> bool:
    """Make ``img`` from the package sources unless its stamp is current.

    Returns True if it was (re)built. The image is written next to ``img`` and renamed.
    """
    stamp_file = img.with_suffix(".stamp")
    stamp = source_stamp(src)
    if img.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return False
    with tempfile.TemporaryDirectory(prefix="kuryr-app-") as tmp:
        stage = Path(tmp) / "root"
        pkg = stage / src.name
        for f in _source_files(src):
            dst = pkg / f.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        ok = compileall.compile_dir(
            str(pkg),
            quiet=1,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        if not ok:
            raise SandboxError(f"byte-compiling {src} for the VM failed: fix the syntax error")
        size_mb = 16 + sum(f.stat().st_size for f in stage.rglob("*") if f.is_file()) * 3 // 2**20
        part = img.with_suffix(".img.part")
        proc = subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "kuryr-app",
                "-O",
                "^has_journal",
                "-E",
                "root_owner=0:0",
                "-d",
                str(stage),
                str(part),
                f"{size_mb}M",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            part.unlink(missing_ok=True)
            raise SandboxError(f"mkfs.ext4 of the VM app disk failed: {proc.stderr.strip()}")
        part.rename(img)
    stamp_file.write_text(stamp + "\n")
    return True
