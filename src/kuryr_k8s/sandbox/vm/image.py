"""The VM image: Debian cloud kernel, trimmed modules, initramfs and a small Debian 12 root
disk carrying Python 3.11, this project's runtime dependencies and the guest init.

Built once into ``/var/cache/kuryr-sandbox/vm/images/<key>/`` (shared by every state
directory, survives ``reset``). The key hashes the recipe version, the guest packages,
the pinned runtime dependency set (the versions installed in the host venv), the guest
init and the initramfs script, so any change there builds a new image and nothing else
does. The project's own code is not in the image: it is pushed at every VM start
(``appdisk``). Builds take a lock, build in a temporary folder and rename it into place,
so concurrent builds never corrupt the cache. Facts: shared/notes/nested-vm.md sections
3 and 4.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kuryr_k8s.sandbox.process import SandboxError

Progress = Callable[[str], None]

RECIPE_VERSION = "3"
"""Bump when the build steps change in a way the other key parts do not show."""

CACHE_DIR = Path(os.environ.get("KURYR_SANDBOX_VM_CACHE", "/var/cache/kuryr-sandbox/vm"))

SUITE = "bookworm"
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
GUEST_PACKAGES = [
    "python3",
    "iproute2",
    "kmod",
    "iputils-ping",
    "procps",
    "tcpdump",
    "ethtool",
    "busybox",
]
"""Guest Debian packages (minbase + these). No pip: the guest has no route out."""

DPKG_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*"]
DPKG_EXCLUDES += ["/usr/share/locale/*", "/usr/share/lintian/*"]

DROP_MODULE_TREES = [
    "kernel/drivers/gpu",
    "kernel/drivers/infiniband",
    "kernel/drivers/media",
    "kernel/drivers/scsi",
    "kernel/drivers/md",
    "kernel/drivers/nvdimm",
    "kernel/drivers/hv",
    "kernel/drivers/xen",
    "kernel/drivers/input",
    "kernel/drivers/hid",
    "kernel/drivers/usb",
    "kernel/drivers/platform",
    "kernel/drivers/acpi",
    "kernel/drivers/ptp",
    "kernel/drivers/pps",
    "kernel/drivers/i2c",
    "kernel/sound",
    *(
        f"kernel/fs/{fs}"
        for fs in [
            *("btrfs", "xfs", "ocfs2", "gfs2", "nfs", "nfsd", "cifs", "smb", "ceph", "udf"),
            *("jfs", "f2fs", "nilfs2", "reiserfs", "dlm", "ubifs"),
        ]
    ),
]
"""Module trees a virtio VM never uses (nested-vm.md section 4)."""

INITRAMFS_ROOT_MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk"]
GUEST_MODULES = ["virtio_net", "virtio_console", "8021q", "macvlan", "veth"]
"""Must resolve in the image (checked with ``modprobe --show-depends`` at build time)."""

INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "initramfs: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 -o rw,noatime /dev/vda /newroot || { echo "initramfs: no root disk"; exec sh; }
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /sbin/kuryr-init
"""

WRAPPERS = {
    "kuryr": (
        "#!/bin/sh\n"
        "export PYTHONPATH=/opt/kuryr/lib:/opt/kuryr/app\n"
        'exec python3 -m kuryr_k8s.cli.main "$@"\n'
    ),
    "kuryr-cni": (
        "#!/bin/sh\n"
        "export PYTHONPATH=/opt/kuryr/lib:/opt/kuryr/app\n"
        "exec python3 -c 'import sys; from kuryr_k8s.cni.plugin import main; sys.exit(main())'"
        ' "$@"\n'
    ),
}
"""``/usr/local/bin`` entry points in the guest (the app disk holds the code)."""

ROOTFS_SIZE = "2G"
"""Apparent size of the sparse root disk (about 300 MB are allocated)."""


class ImageBuildError(SandboxError):
    """A build step failed; the message names the step and the build log."""


@dataclass(frozen=True)
class Image:
    """A built image in the cache: kernel, initramfs and root disk of one key."""

    key: str
    dir: Path
    kernel_version: str

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.gz"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"


# -- the cache key --------------------------------------------------------------------


def _requirement_cls() -> Any:
    """``packaging``'s Requirement; pip's vendored copy where packaging is not installed."""
    try:
        mod = importlib.import_module("packaging.requirements")
    except ImportError:  # pragma: no cover - pip always vendors it
        mod = importlib.import_module("pip._vendor.packaging.requirements")
    return mod.Requirement


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def runtime_pins(project: str = "kuryr-k8s") -> list[str]:
    """``name==version`` for the project's runtime dependency closure, with the versions
    installed next to it (the host venv): the guest runs exactly what the host tests."""
    requirement = _requirement_cls()
    try:
        top = metadata.requires(project) or []
    except metadata.PackageNotFoundError as exc:
        raise ImageBuildError(
            f"{project} is not installed in {sys.prefix}: run scripts/bootstrap first"
        ) from exc
    todo = [(requirement(r), "") for r in top]
    pins: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = _canon(req.name)
        for wanted_extra in ("", *sorted(req.extras)):
            if (name, wanted_extra) in seen:
                continue
            seen.add((name, wanted_extra))
            try:
                dist = metadata.distribution(req.name)
            except metadata.PackageNotFoundError as exc:
                raise ImageBuildError(
                    f"dependency {req.name} (of {project}) is not installed in {sys.prefix}: "
                    "run scripts/bootstrap"
                ) from exc
            pins[name] = dist.version
            todo += [(requirement(r), wanted_extra) for r in dist.requires or []]
    return sorted(f"{n}=={v}" for n, v in pins.items())


def _recipe_sources() -> list[bytes]:
    here = Path(__file__).parent
    return [(here / "guest_init.py").read_bytes(), INITRAMFS_INIT.encode()]


def image_key(pins: Sequence[str]) -> str:
    h = hashlib.sha256()
    for part in (
        RECIPE_VERSION,
        SUITE,
        KERNEL_METAPACKAGE,
        " ".join(GUEST_PACKAGES),
        " ".join(DPKG_EXCLUDES),
        " ".join(DROP_MODULE_TREES),
        json.dumps(WRAPPERS, sort_keys=True),
        ROOTFS_SIZE,
        "\n".join(pins),
        f"{sys.version_info.major}.{sys.version_info.minor}",
    ):
        h.update(part.encode() + b"\0")
    for blob in _recipe_sources():
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()[:16]


def find_image(key: str, cache_dir: Path = CACHE_DIR) -> Image | None:
    d = cache_dir / "images" / key
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    img = Image(key, d, str(manifest["kernel_version"]))
    if all(p.exists() for p in (img.kernel, img.initrd, img.rootfs)):
        return img
    return None


def ensure_image(progress: Progress, cache_dir: Path = CACHE_DIR) -> Image:
    """The cached image for the current recipe and dependencies; built if missing."""
    pins = runtime_pins()
    key = image_key(pins)
    found = find_image(key, cache_dir)
    if found is not None:
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / "build.lock", progress):
        found = find_image(key, cache_dir)  # another process built it while we waited
        if found is not None:
            return found
        return Builder(key, pins, cache_dir, progress).build()


@contextmanager
def _locked(path: Path, progress: Progress) -> Iterator[None]:
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"image: another build holds {path}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- the build ------------------------------------------------------------------------


class Builder:
    """One build of one key. Every step logs to ``build-<key>.log`` in the cache."""

    def __init__(self, key: str, pins: list[str], cache_dir: Path, progress: Progress) -> None:
        self.key = key
        self.pins = pins
        self.cache = cache_dir
        self.progress = progress
        self.log = cache_dir / f"build-{key}.log"
        self.tmp = cache_dir / "images" / f".tmp-{key}-{os.getpid()}"
        self.t0 = time.monotonic()
        self.step = "start"

    # -- helpers ----------------------------------------------------------------------
    def say(self, msg: str) -> None:
        self.step = msg
        self.progress(f"image: {msg} ({time.monotonic() - self.t0:.0f} s)")
        with open(self.log, "a") as fh:
            fh.write(f"==> {msg}\n")

    def run(self, step: str, argv: Sequence[str], *, timeout: float = 900, **kw: object) -> str:
        with open(self.log, "a") as fh:
            fh.write(f"$ {' '.join(argv)}\n")
            fh.flush()
            try:
                proc = subprocess.run(
                    list(argv),
                    stdout=subprocess.PIPE,
                    stderr=fh,
                    text=True,
                    timeout=timeout,
                    check=False,
                    **kw,  # type: ignore[call-overload]
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise self.failed(step, str(exc)) from exc
            fh.write(proc.stdout[-4000:])
        if proc.returncode != 0:
            raise self.failed(step, f"{argv[0]} exited with {proc.returncode}")
        out: str = proc.stdout
        return out

    def failed(self, step: str, why: str) -> ImageBuildError:
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
        except FileNotFoundError:
            tail = []
        lines = "\n".join("    " + line for line in tail)
        return ImageBuildError(
            f"VM image build failed at step '{step}': {why}\n  log: {self.log}\n{lines}\n"
            "  likely fixes: network access to the Debian mirror and to the Python package "
            "index (pip), 'apt-get update', or 'kuryr sandbox install' for the host packages"
        )

    # -- steps ------------------------------------------------------------------------
    def build(self) -> Image:
        self.log.write_text(f"build of VM image {self.key}\n")
        self.say(f"building VM image {self.key} (once; usually 30-90 s), log {self.log}")
        self._check_host_tools()
        self._clean_stale_tmp()
        self.tmp.mkdir(parents=True)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                kernel_job = pool.submit(self.kernel)
                wheels_job = pool.submit(self.wheels)
                self.rootfs()
                kver = kernel_job.result()
                wheelhouse = wheels_job.result()
            self.modules(kver)
            self.install_wheels(wheelhouse)
            self.guest_files()
            self.initramfs(kver)
            self.disk()
            self.finish(kver)
            final = self.cache / "images" / self.key
            shutil.rmtree(final, ignore_errors=True)
            self.tmp.rename(final)
        except ImageBuildError:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        except Exception as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise self.failed(self.step, repr(exc)) from exc
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.prune()
        self.say("image ready")
        img = find_image(self.key, self.cache)
        if img is None:
            raise self.failed("finish", "the built image is incomplete")
        return img

    def _check_host_tools(self) -> None:
        missing = [
            t
            for t in ("mmdebstrap", "mkfs.ext4", "cpio", "busybox", "depmod", "dpkg-deb")
            if shutil.which(t) is None
        ]
        if missing:
            raise ImageBuildError(
                f"VM image build needs {', '.join(missing)}: run 'kuryr sandbox install'"
            )

    def _clean_stale_tmp(self) -> None:
        for d in (self.cache / "images").glob(".tmp-*"):
            shutil.rmtree(d, ignore_errors=True)  # we hold the lock: its builder is gone

    def kernel(self) -> str:
        """Resolve the cloud kernel's ABI with apt-cache, download and unpack it."""
        out = self.run("kernel: resolve", ["apt-cache", "depends", KERNEL_METAPACKAGE])
        pkgs = [
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.strip().startswith("Depends:") and "linux-image-" in line
        ]
        if not pkgs:
            raise self.failed("kernel: resolve", f"{KERNEL_METAPACKAGE} depends on no kernel")
        pkg = pkgs[0]
        debs = self.cache / "debs"
        debs.mkdir(exist_ok=True)
        if not list(debs.glob(f"{pkg}_*.deb")):
            self.say(f"downloading {pkg}")
            self.run("kernel: apt-get download", ["apt-get", "download", "-q", pkg], cwd=debs)
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        kdir = self.tmp / "kernel"
        self.run("kernel: unpack", ["dpkg-deb", "-x", str(deb), str(kdir)])
        vmlinuz = sorted(kdir.glob("boot/vmlinuz-*"))
        if not vmlinuz:
            raise self.failed("kernel: unpack", f"no boot/vmlinuz-* in {deb}")
        shutil.copy(vmlinuz[0], self.tmp / "vmlinuz")
        return vmlinuz[0].name.removeprefix("vmlinuz-")

    def wheels(self) -> Path:
        """Wheels of the pinned runtime dependencies, built on the host (cached)."""
        wheelhouse = self.cache / "wheelhouse"
        wheelhouse.mkdir(exist_ok=True)
        reqs = self.tmp / "requirements.txt"
        reqs.write_text("\n".join(self.pins) + "\n")
        self.say(f"wheels for {len(self.pins)} runtime dependencies")
        self.run(
            "wheels: pip wheel",
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--wheel-dir",
                str(wheelhouse),
                "--find-links",
                str(wheelhouse),
                "-r",
                str(reqs),
            ],
        )
        return wheelhouse

    def rootfs(self) -> None:
        self.say(f"mmdebstrap {SUITE} minbase + {' '.join(GUEST_PACKAGES)}")
        argv = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            f"--include={','.join(GUEST_PACKAGES)}",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--dpkgopt=force-unsafe-io",
            *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            '--aptopt=Acquire::Check-Valid-Until "false"',
            SUITE,
            str(self.tmp / "rootfs"),
            *host_sources(),
        ]
        self.run("rootfs: mmdebstrap", argv, timeout=1200)

    def modules(self, kver: str) -> None:
        self.say(f"modules of {kver} (trimmed)")
        src = _modules_dir(self.tmp / "kernel", kver)
        dst = self.tmp / "rootfs" / "usr" / "lib" / "modules" / kver
        shutil.copytree(src, dst, symlinks=True)
        for tree in DROP_MODULE_TREES:
            shutil.rmtree(dst / tree, ignore_errors=True)
        self.run("modules: depmod", ["depmod", "-b", str(self.tmp / "rootfs"), "-a", kver])
        for mod in GUEST_MODULES + INITRAMFS_ROOT_MODULES:
            self._show_depends(kver, mod)

    def _show_depends(self, kver: str, module: str) -> list[str]:
        out = self.run(
            f"modules: resolve {module}",
            [
                "modprobe",
                "-d",
                str(self.tmp / "rootfs"),
                "-S",
                kver,
                "--show-depends",
                module,
            ],
        )
        # modprobe -d prints host paths (under the rootfs being built)
        return [line.split()[1] for line in out.splitlines() if line.startswith("insmod ")]

    def install_wheels(self, wheelhouse: Path) -> None:
        self.say("installing the runtime dependencies into /opt/kuryr/lib")
        target = self.tmp / "rootfs" / "opt" / "kuryr" / "lib"
        self.run(
            "wheels: pip install --target",
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                str(wheelhouse),
                "--target",
                str(target),
                "-r",
                str(self.tmp / "requirements.txt"),
            ],
        )

    def guest_files(self) -> None:
        root = self.tmp / "rootfs"
        init = root / "sbin" / "kuryr-init"
        shutil.copy(Path(__file__).parent / "guest_init.py", init)
        init.chmod(0o755)
        for name, text in WRAPPERS.items():
            path = root / "usr" / "local" / "bin" / name
            path.write_text(text)
            path.chmod(0o755)
        (root / "etc" / "hostname").write_text("kuryr-vm\n")
        (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 kuryr-vm\n")
        (root / "etc" / "resolv.conf").unlink(missing_ok=True)
        (root / "etc" / "resolv.conf").write_text("")
        for d in ("opt/kuryr/app", "etc/kuryr", "run/netns", "root"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def initramfs(self, kver: str) -> None:
        self.say("initramfs (busybox + virtio modules)")
        ird = self.tmp / "initramfs"
        (ird / "bin").mkdir(parents=True)
        (ird / "modules").mkdir()
        shutil.copy(shutil.which("busybox") or "/bin/busybox", ird / "bin" / "busybox")
        order: list[str] = []
        for mod in INITRAMFS_ROOT_MODULES:
            for path in self._show_depends(kver, mod):
                name = Path(path).name
                if name not in order:
                    order.append(name)
                    shutil.copy(path, ird / "modules" / name)
        (ird / "modules.order").write_text("\n".join(order) + "\n")
        (ird / "init").write_text(INITRAMFS_INIT)
        (ird / "init").chmod(0o755)
        files = sorted(str(p.relative_to(ird)) for p in ird.rglob("*"))
        with open(self.tmp / "initrd.gz", "wb") as out:
            cpio = subprocess.Popen(
                ["cpio", "-o", "-H", "newc", "--quiet"],
                cwd=ird,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            gz = subprocess.Popen(["gzip", "-9"], stdin=cpio.stdout, stdout=out)
            assert cpio.stdin is not None and cpio.stdout is not None
            cpio.stdout.close()
            cpio.stdin.write(("\n".join(files) + "\n").encode())
            cpio.stdin.close()
            if cpio.wait() != 0 or gz.wait() != 0:
                raise self.failed("initramfs", "cpio | gzip failed")
        shutil.rmtree(ird)

    def disk(self) -> None:
        self.say(f"root disk (ext4, sparse {ROOTFS_SIZE})")
        self.run(
            "disk: mkfs.ext4",
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "kuryr-root",
                "-O",
                "^has_journal",
                "-E",
                "root_owner=0:0",
                "-d",
                str(self.tmp / "rootfs"),
                str(self.tmp / "rootfs.img"),
                ROOTFS_SIZE,
            ],
        )

    def finish(self, kver: str) -> None:
        allocated = (self.tmp / "rootfs.img").stat().st_blocks * 512
        manifest = {
            "key": self.key,
            "kernel_version": kver,
            "suite": SUITE,
            "packages": GUEST_PACKAGES,
            "pins": self.pins,
            "rootfs_allocated_mb": round(allocated / 1e6, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - self.t0, 1),
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(self.tmp / "rootfs")
        shutil.rmtree(self.tmp / "kernel")

    def prune(self, keep: int = 2) -> None:
        """Keep the newest ``keep`` images (a running VM keeps its open file anyway)."""
        images = [d for d in (self.cache / "images").iterdir() if not d.name.startswith(".")]
        images.sort(key=lambda d: d.stat().st_mtime, reverse=True)
        for old in images[keep:]:
            shutil.rmtree(old, ignore_errors=True)
            (self.cache / f"build-{old.name}.log").unlink(missing_ok=True)


def _modules_dir(kernel_root: Path, kver: str) -> Path:
    for cand in (kernel_root / "lib" / "modules" / kver, kernel_root / "usr/lib/modules" / kver):
        if cand.is_dir():
            return cand
    raise ImageBuildError(f"no modules for {kver} under {kernel_root}")


def host_sources() -> list[str]:
    """The host's active Debian apt sources (files mmdebstrap pastes in as they are)."""
    found: list[str] = []
    candidates = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        active = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if any("/debian" in line for line in active):
            found.append(str(path))
    if not found:
        found = [
            f"deb http://deb.debian.org/debian {SUITE} main",
            f"deb http://deb.debian.org/debian-security {SUITE}-security main",
        ]
    return found
