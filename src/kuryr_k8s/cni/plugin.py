"""``kuryr-cni``: the executable a container runtime runs for every pod (CNI spec 1.1).

It checks the environment and the network configuration, answers ``VERSION`` itself,
and hands everything else to ``kuryr daemon`` over its unix socket (:mod:`wire`). It
imports only the standard library and our two tiny protocol modules, so it starts in a
few milliseconds (``benchmarks/cni_overhead.py``).

Network configuration keys of ours (all optional)::

    "daemonSocket": "/run/kuryr/cni.sock"   where the daemon listens
    "timeout": 300                          seconds to wait for the daemon's answer

:class:`Dispatcher` takes the environment and the streams as arguments (like the
reference plugins' ``skel``), so tests run it in-process as well as by ``exec``.
"""

from __future__ import annotations

import json
import os
import re
import sys

from kuryr_k8s.cni import spec, wire

# ``typing`` costs ~2 ms of the plugin's start; annotations are strings anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

    Caller = Callable[[str, dict[str, Any], float], dict[str, Any] | None]

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_BAD_IFNAME = re.compile(r"[/:\s]")
DEFAULT_TIMEOUT = 300.0


class Dispatcher:
    """One plugin invocation: ``run()`` returns the exit status and writes stdout."""

    def __init__(
        self,
        environ: Mapping[str, str],
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
        call: Caller = wire.call,
    ) -> None:
        self.env = environ
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.call = call
        self.cni_version = spec.LATEST_VERSION

    def run(self) -> int:
        try:
            result = self._dispatch()
        except spec.CniError as err:
            self._emit(err.to_dict(self.cni_version))
            print(f"kuryr-cni: {err}", file=self.stderr)
            return 1
        except Exception as exc:  # a bug: still answer in the spec's format
            bug = spec.CniError(spec.INTERNAL, "kuryr-cni failed", f"{type(exc).__name__}: {exc}")
            self._emit(bug.to_dict(self.cni_version))
            return 1
        if result is not None:
            self._emit(result)
        return 0

    def _emit(self, doc: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(doc) + "\n")
        self.stdout.flush()

    def _dispatch(self) -> dict[str, Any] | None:
        command = self.env.get("CNI_COMMAND", "")
        if command not in spec.COMMANDS:
            raise spec.CniError(
                spec.INVALID_ENVIRONMENT,
                "invalid CNI_COMMAND",
                f"{command!r} is not one of {', '.join(spec.COMMANDS)}",
            )
        config = self._config(command)
        if command == "VERSION":
            return spec.version_result(self.cni_version)
        self._check_command_version(command, config)
        body = self._request(command, config)
        timeout = _timeout(config)
        socket_path = config.get("daemonSocket") or wire.DEFAULT_SOCKET
        if not isinstance(socket_path, str):
            raise spec.CniError(spec.INVALID_NETWORK_CONFIG, "daemonSocket must be a string")
        return self.call(socket_path, body, timeout)

    def _config(self, command: str) -> dict[str, Any]:
        text = self.stdin.read()
        if command == "VERSION" and not text.strip():
            return {}
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise spec.CniError(
                spec.DECODE_FAILURE, "cannot decode the network configuration", str(exc)
            ) from exc
        if not isinstance(config, dict):
            raise spec.CniError(
                spec.DECODE_FAILURE,
                "the network configuration must be a JSON object",
                f"got {type(config).__name__}",
            )
        if command == "VERSION":
            version = config.get("cniVersion")
            if isinstance(version, str) and version in spec.SUPPORTED_VERSIONS:
                self.cni_version = version
            return config
        self.cni_version = spec.check_version(config.get("cniVersion"))
        name = config.get("name")
        if not isinstance(name, str) or not name:
            raise spec.CniError(
                spec.INVALID_NETWORK_CONFIG, "the network configuration has no name"
            )
        return config

    def _check_command_version(self, command: str, config: dict[str, Any]) -> None:
        key = spec.version_key(self.cni_version)
        if command == "CHECK" and key < (0, 4, 0):
            raise spec.CniError(spec.INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later")
        if command in ("STATUS", "GC") and key < (1, 1, 0):
            raise spec.CniError(
                spec.INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0 or later"
            )
        if command == "CHECK" and not isinstance(config.get("prevResult"), dict):
            raise spec.CniError(spec.INVALID_NETWORK_CONFIG, "CHECK needs prevResult")
        if command == "GC":
            _check_attachments(config)

    def _request(self, command: str, config: dict[str, Any]) -> dict[str, Any]:
        container_id = netns = ifname = ""
        args: dict[str, str] = {}
        if command in ("ADD", "DEL", "CHECK"):
            container_id = self._required("CNI_CONTAINERID")
            if not _CONTAINER_ID.match(container_id):
                raise spec.CniError(
                    spec.INVALID_ENVIRONMENT,
                    "invalid CNI_CONTAINERID",
                    f"{container_id!r}: use letters, digits, '_', '.', '-'",
                )
            ifname = self._required("CNI_IFNAME")
            if len(ifname) > 15 or _BAD_IFNAME.search(ifname) or ifname in (".", ".."):
                raise spec.CniError(
                    spec.INVALID_ENVIRONMENT,
                    "invalid CNI_IFNAME",
                    f"{ifname!r} is not a Linux interface name (at most 15 characters, "
                    "no '/', ':' or spaces)",
                )
            netns = self.env.get("CNI_NETNS", "")
            if command != "DEL":
                netns = self._required("CNI_NETNS")
                _check_netns(netns)
            args = spec.parse_cni_args(self.env.get("CNI_ARGS", ""))
        if command in ("ADD", "CHECK"):
            for key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
                if not args.get(key):
                    raise spec.CniError(
                        spec.INVALID_ENVIRONMENT,
                        f"CNI_ARGS has no {key}",
                        "kuryr plugs Kubernetes pods: the runtime must pass the pod identity",
                    )
        path = self.env.get("CNI_PATH", "")
        return wire.request_body(command, container_id, netns, ifname, args, path, config)

    def _required(self, name: str) -> str:
        value = self.env.get(name, "")
        if not value:
            raise spec.CniError(spec.INVALID_ENVIRONMENT, f"{name} is required")
        return value


def _timeout(config: dict[str, Any]) -> float:
    raw = config.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
        raise spec.CniError(
            spec.INVALID_NETWORK_CONFIG, "timeout must be a positive number of seconds"
        )
    return float(raw)


def _check_netns(netns: str) -> None:
    # os.path, not pathlib: the plugin's start time counts (see the module docstring).
    if not os.path.isabs(netns):  # noqa: PTH117
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT, "invalid CNI_NETNS", f"{netns!r} is not an absolute path"
        )
    if not os.path.exists(netns):  # noqa: PTH110
        raise spec.CniError(spec.UNKNOWN_CONTAINER, "the network namespace does not exist", netns)


def _check_attachments(config: dict[str, Any]) -> None:
    items = config.get("cni.dev/valid-attachments", config.get("cni.dev/attachments"))
    ok = isinstance(items, list) and all(
        isinstance(i, dict)
        and isinstance(i.get("containerID"), str)
        and isinstance(i.get("ifname"), str)
        for i in items
    )
    if not ok:
        raise spec.CniError(
            spec.INVALID_NETWORK_CONFIG,
            "GC needs cni.dev/valid-attachments",
            "a list of {containerID, ifname}",
        )


def main() -> None:
    """Entry point of ``kuryr-cni``."""
    dispatcher = Dispatcher(os.environ, sys.stdin, sys.stdout, sys.stderr)
    sys.exit(dispatcher.run())


if __name__ == "__main__":
    main()
