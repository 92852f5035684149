"""The ``KuryrPort`` custom resource (``kuryrports.openstack.org``, v1, namespaced).

Compatible with upstream Kuryr's fields: ``spec.podUid``, ``spec.podNodeName``,
``spec.podStatic``, ``status.vifs`` keyed by interface name, each ``{default, vif}``;
the node label ``kuryr.openstack.org/nodeName`` and the finalizers. The ``vif`` payload is
our own plain JSON (:mod:`kuryr_k8s.model.vif`), not an os-vif versioned-object primitive
(see docs/design/kuryrport.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from kuryr_k8s.model.vif import InvalidVif, Vif, from_os_vif, is_os_vif_primitive, to_os_vif

GROUP = "openstack.org"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "KuryrPort"
PLURAL = "kuryrports"

NODE_LABEL = "kuryr.openstack.org/nodeName"
"""Label with the pod's node; the daemon of that node watches only its own."""
KURYRPORT_FINALIZER = "kuryr.openstack.org/kuryrport-finalizer"
POD_FINALIZER = "kuryr.openstack.org/pod-finalizer"
PLUGGED_ANNOTATION = "kuryr.openstack.org/plugged"
"""Set by the node's daemon on the KuryrPort once CNI ADD succeeded: JSON
``{"at": <wall time, s>, "node": ..., "container": ..., "addSeconds": ...}``. The
controller's ``kuryr_pod_wiring_seconds`` is ``at`` minus when it first saw the pod."""
DEFAULT_IFNAME = "eth0"


@dataclass(frozen=True)
class VifEntry:
    ifname: str
    default: bool
    vif: Vif


def parse_vifs(kuryrport: dict[str, Any]) -> dict[str, VifEntry]:
    """``status.vifs`` of a KuryrPort, validated. Empty while the controller works."""
    status = kuryrport.get("status") or {}
    raw = status.get("vifs") or {}
    if not isinstance(raw, dict):
        raise InvalidVif("status.vifs: must be an object keyed by interface name")
    out = {}
    for ifname, entry in raw.items():
        if not isinstance(entry, dict):
            raise InvalidVif(f"status.vifs.{ifname}: must be an object")
        out[ifname] = VifEntry(
            ifname, bool(entry.get("default", False)), Vif.from_dict(entry.get("vif"))
        )
    return out


def upstream_vifs(kuryrport: dict[str, Any]) -> dict[str, Any]:
    """``status.vifs`` entries that hold upstream kuryr-kubernetes's os-vif primitives
    (by interface name); empty for a KuryrPort of ours."""
    raw = (kuryrport.get("status") or {}).get("vifs") or {}
    if not isinstance(raw, dict):
        return {}
    return {
        ifname: entry
        for ifname, entry in raw.items()
        if isinstance(entry, dict) and is_os_vif_primitive(entry.get("vif"))
    }


def convert_upstream_vifs(
    kuryrport: dict[str, Any], subnet_ids: Mapping[str, str]
) -> dict[str, VifEntry]:
    """Every ``status.vifs`` entry in our format: upstream's converted
    (:func:`~kuryr_k8s.model.vif.from_os_vif`), ours kept. Raises :class:`InvalidVif`
    naming the interface for an entry that cannot be converted."""
    status = kuryrport.get("status") or {}
    raw = status.get("vifs") or {}
    if not isinstance(raw, dict):
        raise InvalidVif("status.vifs: must be an object keyed by interface name")
    out = {}
    for ifname, entry in raw.items():
        if not isinstance(entry, dict):
            raise InvalidVif(f"status.vifs.{ifname}: must be an object")
        data = entry.get("vif")
        try:
            vif = (
                from_os_vif(data, subnet_ids) if is_os_vif_primitive(data) else Vif.from_dict(data)
            )
        except InvalidVif as exc:
            raise InvalidVif(f"status.vifs.{ifname}: {exc}") from exc
        out[ifname] = VifEntry(ifname, bool(entry.get("default", False)), vif)
    return out


def keep_adoption(vif: Vif, kuryrport: dict[str, Any]) -> Vif:
    """``vif`` with the host device name and adoption mark of the VIF the KuryrPort names
    now for the same port: an attachment upstream made keeps its name when the controller
    re-renders the VIF, so the node can still find and unplug it."""
    try:
        current = parse_vifs(kuryrport)
    except InvalidVif:
        return vif
    for entry in current.values():
        if entry.vif.port_id == vif.port_id and entry.vif.adopted:
            return dataclasses.replace(vif, host_name=entry.vif.host_name, adopted=True)
    return vif


UPSTREAM_TAP_LEN = 14
"""kuryr-lib's ``NIC_NAME_LEN``: upstream names a port's device ``("tap" + port id)[:14]``."""


def to_upstream_vif(vif: Vif, *, network_label: str = "") -> dict[str, Any]:
    """Upstream's os-vif primitive for one of our VIFs (the rollback): ``ovs`` as
    :func:`~kuryr_k8s.model.vif.to_os_vif`; a nested ``vlan`` VIF (ours, or adopted) as
    upstream 10.0.0's ``VIFVlanNested`` (its ``kuryr_kubernetes.objects.vif``: namespace
    ``os_vif``, version 1.0, plugin ``noop``, ``vlan_id``, ``vif_name`` named as upstream
    names it; upstream's daemon uses that name only as the device's temporary name at ADD
    and removes it and ``CNI_IFNAME`` from the pod's namespace at DEL, so the device our
    daemon made, named ``CNI_IFNAME``, goes). The network is the one ``to_os_vif`` writes,
    without ``bridge`` (a nested network has none)."""
    if vif.vif_type != "vlan":
        return to_os_vif(vif, network_label=network_label)
    as_ovs = to_os_vif(
        dataclasses.replace(vif, vif_type="ovs", bridge="br-int"), network_label=network_label
    )
    data = as_ovs["versioned_object.data"]
    network = data["network"]
    network["versioned_object.data"].pop("bridge", None)
    return {
        "versioned_object.name": "VIFVlanNested",
        "versioned_object.namespace": "os_vif",
        "versioned_object.version": "1.0",
        "versioned_object.data": {
            "id": data["id"],
            "address": data["address"],
            "active": data["active"],
            "has_traffic_filtering": data["has_traffic_filtering"],
            "preserve_on_delete": data["preserve_on_delete"],
            "network": network,
            "plugin": "noop",
            "vif_name": ("tap" + vif.port_id)[:UPSTREAM_TAP_LEN],
            "vlan_id": vif.vlan_id,
        },
    }


def vifs_status(entries: dict[str, VifEntry]) -> dict[str, Any]:
    return {name: {"default": e.default, "vif": e.vif.to_dict()} for name, e in entries.items()}


def crd_manifests() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions this project installs (KuryrPort for now)."""
    text = (resources.files("kuryr_k8s.model") / "crds" / "kuryrports.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]
