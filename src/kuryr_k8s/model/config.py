"""Reading ``kuryr.conf`` (INI, upstream option names) into typed settings.

Each process defines its own frozen dataclasses (one per section, a docstring per
field) and builds them once in ``main()`` with :class:`ConfigFile`. Unknown sections
and options, and values of the wrong type, fail at start with a :class:`ConfigError`
naming the section, the option, the value and what is allowed.
"""

from __future__ import annotations

import configparser
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kuryr_k8s.model.errors import ConfigError
from kuryr_k8s.model.upstream_options import (
    ALIASES,
    LIBRARY_SECTIONS,
    NEUTRAL_VALUES,
    UPSTREAM_OPTIONS,
)

KNOWN_OPTIONS: dict[str, frozenset[str]] = {
    "neutron": frozenset(
        {"cloud", "auth_type", "endpoint_override", "region_name", "timeout", "max_concurrency"}
    ),
    "neutron_defaults": frozenset(
        {
            "project",
            "pod_subnet",
            "pod_security_groups",
            "cluster_id",
            "ovs_bridge",
            "network_device_mtu",
            "resource_tags",
            # Services (controller/lbwiring.py):
            "service_subnet",
            "external_svc_net",
            "lbaas_activation_timeout",
        }
    ),
    "vif_pool": frozenset(
        {"ports_pool_min", "ports_pool_batch", "ports_pool_max", "ports_pool_update_frequency"}
    ),
    "garbage_collection": frozenset({"interval", "grace_period"}),
    "kubernetes": frozenset(
        {
            "api_root",
            "kubeconfig",
            "pod_vif_driver",
            "vif_pool_driver",
            "port_debug",
            "controller_ha",
            "leader_lease_namespace",
            "leader_lease_name",
            "leader_lease_duration",
            "leader_renew_deadline",
            "leader_retry_period",
            "workers",
            "watch_reconcile_period",
            "port_status_poll_max",
            "port_sweep_interval",
            "endpoints_driver_octavia_provider",
            # upstream options accepted for compatibility, without effect:
            "ssl_verify_server_crt",
            "enabled_handlers",
            "pod_subnets_driver",
            "pod_security_groups_driver",
            "pod_project_driver",
            "service_project_driver",
        }
    ),
    "health_server": frozenset({"host", "port"}),
    # Namespace networks (controller/namespaces.py), with [kubernetes] pod_subnets_driver:
    "namespace_subnet": frozenset({"pod_router", "pod_subnet_pool"}),
    "network_policy": frozenset({"security_group_mode"}),
    "octavia_defaults": frozenset(
        {
            "endpoint_override",
            "lb_algorithm",
            "health_monitors",
            "enforce_sg_rules",
            "member_mode",
            "sg_mode",
        }
    ),
    "pod_vif_nested": frozenset(
        {"worker_nodes_subnets", "worker_nodes_subnet", "rev_update_attempts"}
    ),
    "binding": frozenset({"link_iface", "driver"}),
    "cni_daemon": frozenset(
        {
            "node_name",
            "socket_path",
            "metrics_address",
            "ovsdb_connection",
            "bridge",
            "sync_timeout",
            "vif_annotation_timeout",
            "ready_timeout",
        }
    ),
}
"""Every section and option of ``kuryr.conf``, across all processes.

One file serves the controller and the daemons (as upstream), so each process rejects
what *no* process knows, not merely what it does not read itself. A unit test checks that
every option any loader reads is listed here."""


@dataclass(frozen=True)
class OptionUse:
    """One option set in the file, and what our processes do with it."""

    section: str
    option: str
    honoured: bool
    why: str
    upstream: bool
    """An upstream kuryr-kubernetes option (else one of ours)."""

    def line(self) -> str:
        origin = "upstream option" if self.upstream else "option"
        verb = "honoured" if self.honoured else "ignored"
        return f"{verb} {origin} [{self.section}] {self.option}" + (
            f": {self.why}" if self.why else ""
        )


def log_ignored(path: Path, log: logging.Logger) -> None:
    """One warning line per ignored option of ``path`` (the controller and the daemon call
    it at start, after their loaders accepted the file)."""
    for use in ConfigFile.load(path).ignored():
        log.warning("%s: %s", path, use.line())


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigFile:
    """A parsed ``kuryr.conf``; getters record which options were read.

    Call :meth:`reject_unknown` after building every section, so a typo
    (``pod_subet``) is an error instead of a silently ignored option.
    """

    def __init__(self, parser: configparser.ConfigParser, source: str) -> None:
        self._parser = parser
        self.source = source
        self._known: dict[str, set[str]] = {}

    @classmethod
    def load(cls, path: Path | None) -> ConfigFile:
        parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
        if path is None:
            return cls(parser, "(no config file)")
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist (--config-file)") from exc
        return cls.from_text(text, str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> ConfigFile:
        parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
        try:
            parser.read_string(text, source=source)
        except configparser.Error as exc:
            raise ConfigError(f"{source}: not a valid INI file: {exc}") from exc
        return cls(parser, source)

    def _raw(self, section: str, option: str) -> str | None:
        self._known.setdefault(section, set()).add(option)
        alias = ALIASES.get((section, option))
        if self._parser.has_option(section, option):
            value = self._parser.get(section, option).strip()
        elif alias is not None and self._parser.has_option(*alias):
            self._known.setdefault(alias[0], set()).add(alias[1])
            value = self._parser.get(*alias).strip()
        else:
            return None
        neutral = NEUTRAL_VALUES.get((section, option))
        if neutral is not None and value == neutral[0]:
            return None  # upstream's value with no meaning here: our default (see uses())
        return value

    def _where(self, section: str, option: str) -> str:
        return f"{self.source}: [{section}] {option}"

    def get_str(self, section: str, option: str, default: str = "") -> str:
        raw = self._raw(section, option)
        return default if raw is None else raw

    def get_required(self, section: str, option: str, what: str) -> str:
        raw = self._raw(section, option)
        if not raw:
            raise ConfigError(f"{self._where(section, option)} is required: {what}")
        return raw

    def get_int(
        self, section: str, option: str, default: int, *, minimum: int | None = None
    ) -> int:
        raw = self._raw(section, option)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise ConfigError(f"{self._where(section, option)} = {raw!r}: not an integer") from exc
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._where(section, option)} = {value}: must be >= {minimum}")
        return value

    def get_float(self, section: str, option: str, default: float) -> float:
        raw = self._raw(section, option)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError as exc:
            raise ConfigError(f"{self._where(section, option)} = {raw!r}: not a number") from exc

    def get_bool(self, section: str, option: str, default: bool) -> bool:
        raw = self._raw(section, option)
        if raw is None or raw == "":
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{self._where(section, option)} = {raw!r}: use true or false")

    def get_list(self, section: str, option: str, default: Iterable[str] = ()) -> list[str]:
        raw = self._raw(section, option)
        if raw is None:
            return list(default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def get_choice(self, section: str, option: str, default: str, choices: Iterable[str]) -> str:
        allowed = list(choices)
        value = self.get_str(section, option, default)
        if value not in allowed:
            raise ConfigError(
                f"{self._where(section, option)} = {value!r}: allowed values are "
                + ", ".join(allowed)
            )
        return value

    def tolerate(self, section: str, *options: str) -> None:
        """Options we accept for upstream compatibility but do not use."""
        for option in options:
            self._known.setdefault(section, set()).add(option)

    @property
    def read_options(self) -> dict[str, frozenset[str]]:
        """What this process asked for (tests check it against :data:`KNOWN_OPTIONS`)."""
        return {section: frozenset(opts) for section, opts in self._known.items()}

    def uses(self) -> list[OptionUse]:
        """Every option set in the file that upstream kuryr-kubernetes documents or we
        read, honoured or ignored, with why (``kuryr config check`` prints it; the
        controller and daemon log the ignored ones at start)."""
        out = []
        for section in self._parser.sections():
            for option in self._parser.options(section):
                up = UPSTREAM_OPTIONS.get((section, option))
                neutral = NEUTRAL_VALUES.get((section, option))
                value = self._parser.get(section, option).strip()
                if neutral is not None and value == neutral[0]:
                    out.append(OptionUse(section, option, False, f"= {value}: {neutral[1]}", True))
                elif up is not None:
                    why = up.note + (f" (read as {up.ours})" if up.ours else "")
                    out.append(OptionUse(section, option, up.honoured, why, True))
                elif section in LIBRARY_SECTIONS:
                    out.append(OptionUse(section, option, False, LIBRARY_SECTIONS[section], True))
                elif option in KNOWN_OPTIONS.get(section, frozenset()):
                    out.append(OptionUse(section, option, True, "", False))
        return out

    def ignored(self) -> list[OptionUse]:
        return [u for u in self.uses() if not u.honoured]

    def reject_unknown(self) -> None:
        """Fail on sections and options that neither any process of the project nor
        upstream kuryr-kubernetes knows (upstream's are reported by :meth:`ignored`)."""
        problems = []
        for section in self._parser.sections():
            if section in LIBRARY_SECTIONS:
                continue
            known = (
                self._known.get(section, set())
                | KNOWN_OPTIONS.get(section, frozenset())
                | {o for s, o in UPSTREAM_OPTIONS if s == section}
            )
            if not known:
                problems.append(f"unknown section [{section}]")
                continue
            for option in self._parser.options(section):
                if option not in known:
                    problems.append(
                        f"unknown option [{section}] {option} (known: {', '.join(sorted(known))})"
                    )
        if problems:
            raise ConfigError(f"{self.source}: " + "; ".join(problems))
