"""The runtime side of the CNI specification: execute a network configuration list.

What a container runtime (containerd via libcni) does, and nothing more:

* the network is the lexicographically first ``*.conflist`` of the configuration directory,
  read again for every operation;
* each plugin ``type`` is an executable found in the ``CNI_PATH`` directories, run with
  ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS`` and
  ``CNI_PATH`` in its environment and its own configuration on stdin, into which the list's
  ``name`` and ``cniVersion`` are written, plus ``prevResult``: for ADD the result of the
  previous plugin (none for the first); for DEL the cached result of the ADD, plugins in
  reverse order;
* a non-zero exit status means failure, described by the error JSON on stdout
  (``code``, ``msg``, ``details``); execution of the list stops at the first failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuryr_k8s.model.errors import KuryrError

Result = dict[str, Any]


class CniError(KuryrError):
    """A plugin failed (or could not be run). ``code`` follows the spec's well-known codes."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        text = f'plugin type="{plugin}" failed ({command.lower()}): {msg}'
        if details:
            text += f": {details}"
        super().__init__(text)
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details


class NoNetworkConfig(CniError):
    """No ``*.conflist`` in the configuration directory (network not ready)."""


@dataclass(frozen=True)
class RuntimeConf:
    """Who the sandbox is: what the runtime passes in the environment."""

    container_id: str
    netns: Path
    ifname: str
    pod_namespace: str
    pod_name: str
    pod_uid: str

    def cni_args(self) -> str:
        return ";".join(
            [
                "IgnoreUnknown=1",
                f"K8S_POD_NAMESPACE={self.pod_namespace}",
                f"K8S_POD_NAME={self.pod_name}",
                f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}",
                f"K8S_POD_UID={self.pod_uid}",
            ]
        )


@dataclass(frozen=True)
class NetworkList:
    """A parsed ``*.conflist``."""

    path: Path
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]


def load_network_list(conf_dir: Path) -> NetworkList:
    """The lexicographically first ``*.conflist`` of ``conf_dir``."""
    files = sorted(conf_dir.glob("*.conflist")) if conf_dir.is_dir() else []
    if not files:
        raise NoNetworkConfig("", "ADD", 1, f"no network config found in {conf_dir}")
    path = files[0]
    try:
        doc = json.loads(path.read_text())
        plugins = tuple(doc["plugins"])
        name, version = str(doc["name"]), str(doc["cniVersion"])
        if not plugins or not all(isinstance(p, dict) and p.get("type") for p in plugins):
            raise ValueError("every plugin needs a type")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NoNetworkConfig("", "ADD", 1, f"invalid network config {path}: {exc}") from exc
    return NetworkList(path, name, version, plugins)


class CniRuntime:
    """Runs ADD and DEL of the configured network list for one sandbox.

    Plugins are started and waited for in threads of the runtime's own pool, as a kubelet
    runs them beside its other work: asyncio's subprocess support forks in the event-loop
    thread, and starting 50 plugins at once that way stalled the loop for ~0.5 s (measured
    2026-11-29), delaying every other request of the process (the benchmark saw a lone
    pod's API POST take 1 s during a burst because of it)."""

    def __init__(
        self, conf_dir: Path, bin_dirs: tuple[Path, ...], *, timeout: float, threads: int = 128
    ) -> None:
        self.conf_dir = conf_dir
        self.bin_dirs = bin_dirs
        self.timeout = timeout
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="cni-plugin")

    def network(self) -> NetworkList:
        return load_network_list(self.conf_dir)

    async def add(self, rt: RuntimeConf, net: NetworkList) -> Result:
        """Run every plugin's ADD in order; returns the last result."""
        prev: Result | None = None
        for plugin in net.plugins:
            prev = await self._exec("ADD", plugin, net, rt, prev)
        assert prev is not None
        return prev

    async def delete(self, rt: RuntimeConf, net: NetworkList, cached: Result | None) -> None:
        """Run every plugin's DEL in reverse order with the cached ADD result."""
        for plugin in reversed(net.plugins):
            await self._exec("DEL", plugin, net, rt, cached)

    def _find(self, plugin_type: str) -> Path:
        for d in self.bin_dirs:
            candidate = d / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        dirs = ":".join(map(str, self.bin_dirs))
        raise CniError(plugin_type, "ADD", 1, f"failed to find plugin in path [{dirs}]")

    async def _exec(
        self,
        command: str,
        plugin: dict[str, Any],
        net: NetworkList,
        rt: RuntimeConf,
        prev: Result | None,
    ) -> Result:
        ptype = str(plugin["type"])
        conf = dict(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version
        conf.pop("prevResult", None)
        if prev is not None:
            conf["prevResult"] = prev
        try:
            binary = self._find(ptype)
        except CniError as exc:
            raise CniError(ptype, command, exc.code, exc.msg) from None
        env = dict(os.environ)
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=rt.container_id,
            CNI_NETNS=str(rt.netns),
            CNI_IFNAME=rt.ifname,
            CNI_ARGS=rt.cni_args(),
            CNI_PATH=":".join(map(str, self.bin_dirs)),
        )
        try:
            rc, out, err = await asyncio.get_running_loop().run_in_executor(
                self._threads,
                _run_plugin,
                str(binary),
                env,
                json.dumps(conf).encode(),
                self.timeout,
            )
        except subprocess.TimeoutExpired:
            raise CniError(ptype, command, 11, f"timed out after {self.timeout}s") from None
        return _parse_output(ptype, command, rc, out, err)


def _run_plugin(
    binary: str, env: dict[str, str], stdin: bytes, timeout: float
) -> tuple[int, bytes, bytes]:
    """Run one plugin to its end (in a thread: see :class:`CniRuntime`); on timeout its
    whole process group is killed and reaped, then ``TimeoutExpired`` is raised."""
    proc = subprocess.Popen(
        [binary],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def _parse_output(ptype: str, command: str, rc: int, out: bytes, err: bytes) -> Result:
    text = out.decode(errors="replace").strip()
    if rc != 0:
        try:
            doc = json.loads(text)
            code = int(doc.get("code", 999))
            raise CniError(
                ptype, command, code, str(doc.get("msg", "")), str(doc.get("details", ""))
            )
        except (ValueError, AttributeError, TypeError):
            stderr = err.decode(errors="replace").strip()
            raise CniError(
                ptype, command, 999, f"exit status {rc}", (text or stderr)[:1000]
            ) from None
    if command == "DEL" or not text:
        return {}
    try:
        result = json.loads(text)
    except ValueError as exc:
        raise CniError(ptype, command, 999, f"invalid result JSON: {exc}", text[:1000]) from exc
    if not isinstance(result, dict):
        raise CniError(ptype, command, 999, "result is not a JSON object", text[:1000])
    return result


def pod_ips(result: Result) -> list[str]:
    """Pod addresses from a result: the first of each family on a sandbox interface.

    Order is kept (``podIPs[0]`` is the primary ``podIP``); prefix lengths are dropped.
    """
    interfaces = result.get("interfaces") or []
    ips: list[str] = []
    families: set[int] = set()
    for entry in result.get("ips") or []:
        idx = entry.get("interface")
        on_host = isinstance(idx, int) and 0 <= idx < len(interfaces)
        if on_host and not interfaces[idx].get("sandbox"):
            continue  # an address of a host-side interface
        try:
            address = ipaddress.ip_interface(str(entry.get("address", ""))).ip
        except ValueError:
            continue
        if address.version not in families:
            families.add(address.version)
            ips.append(str(address))
    return ips
