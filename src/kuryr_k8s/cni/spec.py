"""The CNI specification as data: versions, error codes, result conversion.

Shared by the plugin executable (which must start fast: stdlib ``json`` only, no
dataclasses, no third-party imports) and the daemon. Spec: containernetworking/cni
``SPEC.md`` 1.1.0.

Result conversion: the daemon builds results in the 1.x shape; :func:`convert_result`
renders them for the ``cniVersion`` the runtime asked for (0.3.x/0.4.0 put a ``version``
on each IP; 1.1.0 allows ``mtu`` on interfaces, earlier versions do not).
"""

from __future__ import annotations

# ``typing`` costs ~2 ms of the plugin's start; annotations are strings anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Well-known error codes (SPEC.md, "Error"); 100+ are ours.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED = 51
UNSUPPORTED_VIF = 100
"""Ours: the VIF kind has no binding driver on this node (e.g. ``vlan`` for now)."""
INTERNAL = 101
"""Ours: an unexpected failure inside the daemon (a bug); details carry the reason."""

RESULT_KEYS = ("interfaces", "ips", "routes", "dns")


class CniError(Exception):
    """A failure as the spec reports it: ``{"cniVersion", "code", "msg", "details"}``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str = LATEST_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CniError:
        if not isinstance(data, dict) or not isinstance(data.get("code"), int):
            return cls(INTERNAL, "malformed error from the daemon", repr(data)[:200])
        return cls(data["code"], str(data.get("msg", "")), str(data.get("details", "")))


def version_key(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` → ``(1, 0, 0)``; raises :class:`CniError` (code 1) if malformed."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(INCOMPATIBLE_VERSION, "malformed cniVersion", repr(version))
    return int(parts[0]), int(parts[1]), int(parts[2])


def check_version(version: Any) -> str:
    """The config's ``cniVersion`` if we support it, else :class:`CniError` code 1.

    A missing ``cniVersion`` means 0.1.0 (spec), which we do not support.
    """
    if version is None:
        version = "0.1.0"
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, "cniVersion must be a string", repr(version))
    version_key(version)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            f"{version} is not one of {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def version_result(cni_version: str) -> dict[str, Any]:
    """The answer to ``VERSION``."""
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def convert_result(result: dict[str, Any], cni_version: str) -> dict[str, Any]:
    """Render a 1.x-shaped result for ``cni_version`` (ours are always 1.x-shaped inside)."""
    key = version_key(cni_version)
    out: dict[str, Any] = {"cniVersion": cni_version}
    interfaces = [dict(i) for i in result.get("interfaces", [])]
    if key < (1, 1, 0):
        for iface in interfaces:
            iface.pop("mtu", None)
    ips = [dict(ip) for ip in result.get("ips", [])]
    if key < (1, 0, 0):
        for ip in ips:
            ip["version"] = "6" if ":" in str(ip.get("address", "")) else "4"
    out["interfaces"] = interfaces
    out["ips"] = ips
    if result.get("routes"):
        out["routes"] = [dict(r) for r in result["routes"]]
    out["dns"] = dict(result.get("dns") or {})
    return out


def parse_cni_args(raw: str) -> dict[str, str]:
    """``CNI_ARGS`` (``K=V;K2=V2``) → dict; raises code 4 on a malformed pair."""
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CniError(INVALID_ENVIRONMENT, "malformed CNI_ARGS", f"{pair!r} is not KEY=VALUE")
        out[name] = value
    return out
