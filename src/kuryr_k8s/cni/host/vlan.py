"""VLAN devices for nested pods, through netlink (pyroute2).

The pod's device is an 802.1Q device on the VM's NIC (the trunk parent), created
*directly in the pod's network namespace* (``RTM_NEWLINK`` with ``IFLA_NET_NS_FD``: the
parent is looked up in the daemon's namespace, the device is born in the pod's), named
``CNI_IFNAME``, with the VIF's MAC and MTU. Nothing is created on the host side and
moved, so a crash never leaves a half-named device in the VM's own namespace.

The kernel allows one device per (parent, VLAN id), wherever that device lives. A device
left by a previous pod (a daemon crash, a runtime that never sent DEL) makes the next
``add`` fail with ``EEXIST`` — upstream Kuryr's "reboot the node" bug. So before creating
one we look for the holder of the id in every named network namespace
(:func:`find_vlan`): ours (``ifalias`` ``kuryr-cni <node> <container> <ifname>``) for
another attachment is removed; anybody else's is reported, never touched.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kuryr_k8s.cni.errors import HostError, UnknownContainer
from kuryr_k8s.cni.host.links import _netns_iproute
from kuryr_k8s.cni.host.netns import check_netns

NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
TEMP_PREFIX = "kvl"
"""Name prefix of a pod's VLAN device between its creation and its rename in the pod."""


class VlanInUse(HostError):
    """The VLAN id is already taken on the parent NIC (by some device, somewhere)."""


"""Where runtimes bind-mount pod network namespaces (``ip netns`` uses the same)."""


@dataclass(frozen=True)
class ParentLink:
    """The VM's NIC that carries the trunk (``[binding] link_iface``)."""

    name: str
    index: int
    mtu: int
    up: bool


@dataclass(frozen=True)
class VlanDevice:
    """A VLAN device on the parent, wherever it lives."""

    netns: str
    """Path of its network namespace; ``""`` for the daemon's own."""
    name: str
    vlan_id: int
    alias: str


def vlan_supported() -> bool:
    """Whether this kernel can make 802.1Q devices (module loaded or built in)."""
    return Path("/proc/net/vlan").exists() or Path("/sys/module/8021q").exists()


SYS_NET = Path("/sys/class/net")


def parent_link(name: str | None) -> ParentLink:
    """The named NIC, or (no name) the one holding the IPv4 default route.

    Read from sysfs and procfs, not netlink: this also runs in the daemon's event loop
    (``/readyz``), where pyroute2's synchronous socket cannot be used."""
    if name is None:
        name = _default_route_iface()
    base = SYS_NET / name
    try:
        index = int((base / "ifindex").read_text())
        mtu = int((base / "mtu").read_text())
        flags = int((base / "flags").read_text(), 16)
    except (OSError, ValueError) as exc:
        have = ", ".join(sorted(p.name for p in SYS_NET.iterdir())) if SYS_NET.exists() else ""
        raise HostError(
            f"[binding] link_iface = {name}: no such interface on this node (have: {have})"
        ) from exc
    return ParentLink(name=name, index=index, mtu=mtu, up=bool(flags & 1))


def _default_route_iface(route_file: Path = Path("/proc/net/route")) -> str:
    try:
        lines = route_file.read_text().splitlines()[1:]
    except OSError as exc:
        raise HostError(f"cannot read {route_file}: {exc}") from exc
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and int(fields[3], 16) & 0x2:
            return fields[0]
    raise HostError("cannot find the VM's NIC: no IPv4 default route; set [binding] link_iface")


def named_netns() -> list[str]:
    """Paths of the named network namespaces (``/run/netns/*``), de-duplicated."""
    seen: dict[tuple[int, int], str] = {}
    for d in NETNS_DIRS:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for path in entries:
            try:
                st = path.stat()
            except OSError:
                continue
            seen.setdefault((st.st_dev, st.st_ino), str(path))
    return list(seen.values())


def _vlan_id(link: Any) -> int | None:
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    vid = data.get_attr("IFLA_VLAN_ID") if data is not None else None
    return int(vid) if vid is not None else None


def _vlans_in(ipr: Any, parent: ParentLink, netns: str) -> Iterator[VlanDevice]:
    for link in ipr.get_links():
        vid = _vlan_id(link)
        if vid is None or link.get_attr("IFLA_LINK") != parent.index:
            continue
        # In a pod namespace the parent lives elsewhere (the VM's namespace), which the
        # kernel says with IFLA_LINK_NETNSID; without it the index names a local link.
        if netns and link.get_attr("IFLA_LINK_NETNSID") is None:
            continue
        yield VlanDevice(
            netns,
            str(link.get_attr("IFLA_IFNAME")),
            vid,
            str(link.get_attr("IFLA_IFALIAS") or ""),
        )


def vlan_devices(parent: ParentLink) -> list[VlanDevice]:
    """Every VLAN device on ``parent``: in our namespace and in every named one."""
    found: list[VlanDevice] = []
    with IPRoute() as ipr:
        found += _vlans_in(ipr, parent, "")
    for netns in named_netns():
        try:
            with _netns_iproute(netns) as ipr:
                found += _vlans_in(ipr, parent, netns)
        except (UnknownContainer, OSError):
            continue  # vanished while we looked
    return found


def vlan_device_named(parent: ParentLink, netns: str, ifname: str) -> VlanDevice | None:
    """``ifname`` in ``netns`` if it is a VLAN device on ``parent``; None if it is not
    there, is something else, or the namespace is gone."""
    try:
        with _netns_iproute(netns) as ipr:
            return next((d for d in _vlans_in(ipr, parent, netns) if d.name == ifname), None)
    except UnknownContainer:
        return None


def find_vlan(parent: ParentLink, vlan_id: int) -> VlanDevice | None:
    return next((d for d in vlan_devices(parent) if d.vlan_id == vlan_id), None)


def temp_name(vlan_id: int) -> str:
    """The name a pod's VLAN device is born with, before it is renamed in the pod."""
    return f"{TEMP_PREFIX}{vlan_id}"


def create_vlan(
    parent: ParentLink, netns: str, ifname: str, vlan_id: int, *, mac: str, mtu: int, alias: str
) -> None:
    """``ifname`` (802.1Q id ``vlan_id`` on ``parent``) born inside ``netns``, tagged.

    The kernel checks a new device's name in the creating namespace too, where the VM's
    own ``eth0`` lives, so the device is born under :func:`temp_name` (unique per VLAN id
    on the parent) and renamed inside the pod's namespace."""
    check_netns(netns)
    tmp = temp_name(vlan_id)
    fd = os.open(netns, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            try:
                ipr.link(
                    "add",
                    ifname=tmp,
                    kind="vlan",
                    link=parent.index,
                    vlan_id=vlan_id,
                    net_ns_fd=fd,
                    address=mac,
                    mtu=mtu,
                )
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise VlanInUse(
                        f"cannot create VLAN {vlan_id} on {parent.name} in {netns}: "
                        f"VLAN {vlan_id} is already used on {parent.name}"
                    ) from exc
                if exc.code in (errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise HostError(
                        "this kernel cannot create VLAN devices (load the 8021q module)"
                    ) from exc
                raise HostError(
                    f"cannot create VLAN {vlan_id} on {parent.name} in {netns}: {exc}"
                ) from exc
    finally:
        os.close(fd)
    with _netns_iproute(netns) as ipr:
        found = ipr.link_lookup(ifname=tmp)
        if not found:
            raise HostError(f"{tmp} vanished from {netns} right after it was created")
        ipr.link("set", index=found[0], ifalias=alias)
        try:
            ipr.link("set", index=found[0], ifname=ifname)
        except NetlinkError as exc:
            ipr.link("del", index=found[0])
            raise HostError(
                f"cannot name the VLAN {vlan_id} device {ifname} in {netns}: {exc} "
                f"(an interface {ifname} already exists there?)"
            ) from exc


def delete_in_netns(netns: str, ifname: str) -> bool:
    """Delete ``ifname`` inside ``netns`` (``""``: our own); ``False`` if it was not there."""
    try:
        if netns:
            with _netns_iproute(netns) as ipr:
                return _delete(ipr, ifname)
        with IPRoute() as ipr:
            return _delete(ipr, ifname)
    except UnknownContainer:
        return False  # the namespace is gone, and its devices with it


def _delete(ipr: Any, ifname: str) -> bool:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise HostError(f"cannot delete {ifname}: {exc}") from exc
    return True


def device_in(netns: str, ifname: str) -> tuple[int | None, str] | None:
    """``(vlan id or None, alias)`` of ``ifname`` in ``netns``; ``None`` if it is missing."""
    try:
        with _netns_iproute(netns) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return None
            link = ipr.get_links(found[0])[0]
            return _vlan_id(link), str(link.get_attr("IFLA_IFALIAS") or "")
    except UnknownContainer:
        return None
