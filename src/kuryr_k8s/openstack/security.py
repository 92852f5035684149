"""Security groups, address groups, networks, subnets and router interfaces.

The same adapter style as :mod:`kuryr_k8s.openstack.neutron` (raw Neutron JSON over the
:class:`~kuryr_k8s.openstack.neutron.Transport`, errors translated by
:func:`~kuryr_k8s.openstack.neutron.translate`, calls counted in ``NeutronStats``), for
what NetworkPolicy (``controller/policies.py``) and namespace networks
(``controller/namespaces.py``) create.

Ownership: every SG, network and subnet carries the cluster tag and
``kuryr.owner:<uid>`` (+ a role tag) and is looked up by those tags before it is created.
Address groups have no tags in Neutron (no ``standard-attr`` tagging for them in Zed):
their *name* carries the same facts (``kuryr:<cluster>:<owner uid>:<key>``) and they are
looked up by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.openstack.neutron import GONE, Neutron, NeutronRejected, NeutronUnavailable

OWNER_PREFIX = "kuryr.owner:"


class SecurityGroupInUse(NeutronUnavailable):
    """The SG (or address group) is still used by a port (or an SG rule): retry later."""


@dataclass(frozen=True)
class Rule:
    id: str
    direction: str
    ethertype: str
    protocol: str | None
    port_min: int | None
    port_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    remote_address_group_id: str | None


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    name: str
    tags: tuple[str, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AddressGroup:
    id: str
    name: str
    addresses: frozenset[str]


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    tags: tuple[str, ...]
    mtu: int
    subnet_ids: tuple[str, ...]


@dataclass(frozen=True)
class Subnet:
    id: str
    network_id: str
    cidr: str
    gateway_ip: str | None
    tags: tuple[str, ...]


def _rule(data: dict[str, Any]) -> Rule:
    return Rule(
        id=data["id"],
        direction=data["direction"],
        ethertype=data["ethertype"],
        protocol=data.get("protocol"),
        port_min=data.get("port_range_min"),
        port_max=data.get("port_range_max"),
        remote_ip_prefix=data.get("remote_ip_prefix"),
        remote_group_id=data.get("remote_group_id"),
        remote_address_group_id=data.get("remote_address_group_id"),
    )


def _sg(data: dict[str, Any]) -> SecurityGroup:
    return SecurityGroup(
        id=data["id"],
        name=data.get("name") or "",
        tags=tuple(data.get("tags") or ()),
        rules=tuple(_rule(r) for r in data.get("security_group_rules") or ()),
    )


def _ag(data: dict[str, Any]) -> AddressGroup:
    return AddressGroup(data["id"], data.get("name") or "", frozenset(data.get("addresses") or ()))


def _net(data: dict[str, Any]) -> Network:
    return Network(
        data["id"],
        data.get("name") or "",
        tuple(data.get("tags") or ()),
        int(data.get("mtu") or 0),
        tuple(data.get("subnets") or ()),
    )


def _subnet(data: dict[str, Any]) -> Subnet:
    return Subnet(
        data["id"],
        data["network_id"],
        data["cidr"],
        data.get("gateway_ip"),
        tuple(data.get("tags") or ()),
    )


def _in_use(exc: NeutronRejected) -> bool:
    return exc.neutron_type in {
        "SecurityGroupInUse",
        "AddressGroupInUse",
        "SubnetInUse",
        "NetworkInUse",
        "RouterInterfaceInUseByFloatingIP",
    } or (exc.status == 409)


class SecurityApi:
    """Neutron calls for SGs, address groups and namespace networks (over :class:`Neutron`)."""

    def __init__(self, neutron: Neutron) -> None:
        self.neutron = neutron

    async def _call(self, op: str, method: str, path: str, **kw: Any) -> Any:
        return await self.neutron._call(op, method, path, **kw)  # the shared adapter

    async def _delete(self, op: str, path: str) -> bool:
        """True if deleted, False if already gone; :class:`SecurityGroupInUse` while used."""
        try:
            data = await self._call(op, "DELETE", path, missing_ok=True)
        except NeutronUnavailable as exc:
            if "InUse" in str(exc) or "in use" in str(exc):
                raise SecurityGroupInUse(str(exc), delay=1.0) from exc
            raise
        except NeutronRejected as exc:
            if _in_use(exc):
                raise SecurityGroupInUse(str(exc), delay=1.0) from exc
            raise
        return data is not GONE

    async def _tag_or_delete(self, path: str, tags: Sequence[str]) -> None:
        """Tag a resource just created; if that fails (or is cancelled), delete it: this
        Neutron takes no tags on create, and untagged it is found by nobody."""
        try:
            await self._call("set_tags", "PUT", f"{path}/tags", body={"tags": list(tags)})
        except BaseException:
            with contextlib.suppress(Exception):
                await self._delete("delete_untagged", path)
            raise

    # ---- security groups ----------------------------------------------------------------

    async def list_security_groups(self, tags: Iterable[str]) -> list[SecurityGroup]:
        data = await self._call(
            "list_security_groups", "GET", "/security-groups", params={"tags": ",".join(tags)}
        )
        return [_sg(sg) for sg in data["security_groups"]]

    async def create_security_group(
        self,
        name: str,
        project_id: str,
        tags: Sequence[str],
        description: str = "",
        *,
        keep_default_rules: bool = False,
    ) -> SecurityGroup:
        """A stateful SG, tagged; without Neutron's two default egress rules (allow all
        egress, IPv4 and IPv6) unless ``keep_default_rules``."""
        body = {"security_group": {"name": name, "project_id": project_id}}
        if description:
            body["security_group"]["description"] = description
        data = await self._call("create_security_group", "POST", "/security-groups", body=body)
        sg = _sg(data["security_group"])
        await self._tag_or_delete(f"/security-groups/{sg.id}", tags)
        try:
            if keep_default_rules:
                return SecurityGroup(sg.id, sg.name, tuple(tags), sg.rules)
            for rule in sg.rules:
                await self.delete_rule(rule.id)
        except BaseException:  # failed or cancelled half-way: do not leave it behind
            with contextlib.suppress(Exception):
                await self.delete_security_group(sg.id)
            raise
        return SecurityGroup(sg.id, sg.name, tuple(tags), ())

    async def list_untagged_security_groups(
        self, project_id: str, name_prefix: str
    ) -> list[tuple[str, str]]:
        """(id, name) of the project's SGs named ``name_prefix...`` that carry no tag: left
        by a process killed between creating and tagging them (Neutron Zed takes no tags
        in the create request)."""
        data = await self._call(
            "list_security_groups",
            "GET",
            "/security-groups",
            params={"project_id": project_id, "fields": ["id", "name", "tags"]},
        )
        return [
            (sg["id"], str(sg.get("name") or ""))
            for sg in data["security_groups"]
            if str(sg.get("name") or "").startswith(name_prefix) and not sg.get("tags")
        ]

    async def delete_security_group(self, sg_id: str) -> bool:
        return await self._delete("delete_security_group", f"/security-groups/{sg_id}")

    async def ports_using(self, sg_id: str) -> list[str]:
        """Ids of the ports whose ``security_groups`` name the SG (Neutron's DB view)."""
        data = await self._call(
            "list_ports",
            "GET",
            "/ports",
            params={"security_groups": sg_id, "fields": ["id"]},
        )
        return [p["id"] for p in data["ports"]]

    async def create_rules(
        self, sg_id: str, project_id: str, rules: Sequence[dict[str, Any]]
    ) -> tuple[Rule, ...]:
        """One bulk ``POST /security-group-rules`` (all or nothing); the rules made."""
        if not rules:
            return ()
        body = {
            "security_group_rules": [
                {"security_group_id": sg_id, "project_id": project_id, **r} for r in rules
            ]
        }
        data = await self._call(
            "create_security_group_rules", "POST", "/security-group-rules", body=body
        )
        return tuple(_rule(r) for r in (data or {}).get("security_group_rules") or ())

    async def delete_rule(self, rule_id: str) -> None:
        await self._call(
            "delete_security_group_rule",
            "DELETE",
            f"/security-group-rules/{rule_id}",
            missing_ok=True,
        )

    # ---- address groups -----------------------------------------------------------------

    async def list_address_groups(self, name_prefix: str) -> list[AddressGroup]:
        """Address groups whose name starts with ``name_prefix`` (no tags on them)."""
        data = await self._call("list_address_groups", "GET", "/address-groups")
        return [
            _ag(a) for a in data["address_groups"] if str(a.get("name", "")).startswith(name_prefix)
        ]

    async def create_address_group(
        self, name: str, project_id: str, addresses: Iterable[str]
    ) -> AddressGroup:
        body = {
            "address_group": {
                "name": name,
                "project_id": project_id,
                "addresses": sorted(addresses),
                "description": "kuryr-kubernetes NetworkPolicy peers",
            }
        }
        data = await self._call("create_address_group", "POST", "/address-groups", body=body)
        return _ag(data["address_group"])

    async def change_addresses(self, ag_id: str, add: Iterable[str], remove: Iterable[str]) -> None:
        """Additions first, then removals (one call each, skipped when empty)."""
        for verb, addrs in (("add_addresses", sorted(add)), ("remove_addresses", sorted(remove))):
            if addrs:
                await self._call(
                    verb, "PUT", f"/address-groups/{ag_id}/{verb}", body={"addresses": addrs}
                )

    async def delete_address_group(self, ag_id: str) -> bool:
        return await self._delete("delete_address_group", f"/address-groups/{ag_id}")

    # ---- networks, subnets, router interfaces (namespace networks) ------------------------

    async def list_networks(self, tags: Iterable[str]) -> list[Network]:
        data = await self._call(
            "list_networks", "GET", "/networks", params={"tags": ",".join(tags)}
        )
        return [_net(n) for n in data["networks"]]

    async def create_network(self, name: str, project_id: str, tags: Sequence[str]) -> Network:
        body = {"network": {"name": name, "project_id": project_id, "admin_state_up": True}}
        data = await self._call("create_network", "POST", "/networks", body=body)
        net = _net(data["network"])
        await self._tag_or_delete(f"/networks/{net.id}", tags)
        return Network(net.id, net.name, tuple(tags), net.mtu, net.subnet_ids)

    async def delete_network(self, net_id: str) -> bool:
        return await self._delete("delete_network", f"/networks/{net_id}")

    async def list_subnets(self, tags: Iterable[str]) -> list[Subnet]:
        data = await self._call("list_subnets", "GET", "/subnets", params={"tags": ",".join(tags)})
        return [_subnet(s) for s in data["subnets"]]

    async def create_subnet_from_pool(
        self, name: str, network_id: str, project_id: str, subnetpool_id: str, tags: Sequence[str]
    ) -> Subnet:
        body = {
            "subnet": {
                "name": name,
                "network_id": network_id,
                "project_id": project_id,
                "subnetpool_id": subnetpool_id,
                "ip_version": 4,
                "enable_dhcp": False,
            }
        }
        data = await self._call("create_subnet", "POST", "/subnets", body=body)
        sub = _subnet(data["subnet"])
        await self._tag_or_delete(f"/subnets/{sub.id}", tags)
        return Subnet(sub.id, sub.network_id, sub.cidr, sub.gateway_ip, tuple(tags))

    async def delete_subnet(self, subnet_id: str) -> bool:
        return await self._delete("delete_subnet", f"/subnets/{subnet_id}")

    async def get_subnetpool(self, pool_id: str) -> dict[str, Any] | None:
        data = await self._call("get_subnetpool", "GET", f"/subnetpools/{pool_id}", missing_ok=True)
        return None if data is GONE else dict(data["subnetpool"])

    async def ports_on(self, network_id: str) -> list[str]:
        """Ids of the ports on the network other than router interfaces and DHCP."""
        data = await self._call(
            "list_ports",
            "GET",
            "/ports",
            params={"network_id": network_id, "fields": ["id", "device_owner"]},
        )
        return [
            p["id"]
            for p in data["ports"]
            if not str(p.get("device_owner") or "").startswith(("network:router", "network:dhcp"))
        ]

    async def router_subnets(self, router_id: str) -> set[str]:
        """Subnets with an interface on the router."""
        data = await self._call(
            "list_ports", "GET", "/ports", params={"device_id": router_id, "fields": "fixed_ips"}
        )
        return {ip["subnet_id"] for p in data["ports"] for ip in p.get("fixed_ips") or ()}

    async def add_router_interface(self, router_id: str, subnet_id: str) -> None:
        await self._call(
            "add_router_interface",
            "PUT",
            f"/routers/{router_id}/add_router_interface",
            body={"subnet_id": subnet_id},
        )

    async def remove_router_interface(self, router_id: str, subnet_id: str) -> None:
        try:
            await self._call(
                "remove_router_interface",
                "PUT",
                f"/routers/{router_id}/remove_router_interface",
                body={"subnet_id": subnet_id},
                missing_ok=True,
            )
        except NeutronRejected as exc:
            if exc.neutron_type != "RouterInterfaceNotFoundForSubnet":
                raise
