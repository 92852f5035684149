"""Run the emulator as a child process (how the sandbox and the test fixture use it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import yaml


class EmulatorProcess:
    """``python -m kuryr_k8s.sandbox.kubeapi`` in a subprocess.

    ``start()`` returns once the child has written its kubeconfig (it does so after it
    listens); ``url`` and ``kubeconfig`` are then usable; ``stop()`` sends SIGTERM (the
    child flushes its state file) and waits.
    """

    def __init__(
        self,
        kubeconfig: Path,
        *,
        port: int = 0,
        state_file: Path | None = None,
        log_file: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.port = port
        self.state_file = state_file
        self.log_file = log_file
        self.extra_args = extra_args or []
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "kuryr_k8s.sandbox.kubeapi",
            "--port",
            str(self.port),
            "--kubeconfig-out",
            str(self.kubeconfig),
        ]
        if self.state_file is not None:
            cmd += ["--state-file", str(self.state_file)]
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.kubeconfig.unlink(missing_ok=True)
        if self.log_file is not None:
            with open(self.log_file, "ab") as log:
                self._proc = subprocess.Popen(
                    self.command(), stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ)
                )
        else:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=dict(os.environ),
            )
        deadline = time.monotonic() + timeout
        while not self.kubeconfig.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the emulator did not start in time")
            time.sleep(0.02)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = str(config["clusters"][0]["cluster"]["server"])
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
