"""An in-memory Neutron behind the :class:`~kuryr_k8s.openstack.neutron.Transport` seam.

For unit tests of everything above the adapter (providers, pools, GC, reconcilers): it
speaks the same JSON as Neutron for the calls we make, keeps ports, tags, revision
numbers and timestamps, allocates addresses from subnet CIDRs, enforces a per-project
port quota and ``If-Match`` revision constraints, and answers with Neutron's error types
(``OverQuota``, ``IpAddressGenerationFailure``, ``SubnetNotFound``, ...). Use it as
``Neutron(FakeNeutron(), inline=True)``.

Trunks behave as measured on Neutron Zed ML2/OVN (``docs/design/nested.md``):
``add_subports`` is all-or-nothing, rewrites ``device_owner`` to ``trunk:subport`` and
bumps the port's revision; a VLAN id in use is 409 ``DuplicateSubPort``, an attached port
409 ``TrunkPortInUse``, a port with a ``device_id`` 409 ``PortInUse``; ``DELETE`` of a
subport is 409 ``PortInUseAsSubPort`` and of a trunk parent 409
``PortInUseAsTrunkParent``; ``remove_subports`` clears ``device_owner`` (``device_id``
kept), 404 ``SubPortNotFound`` for a port that is not attached; deleting a trunk (its
parent unbound) detaches its subports. Parent ports carry ``trunk_details``.

A bulk ``POST /ports`` refused for lack of addresses leaks like Neutron Zed's ML2
``create_port_bulk`` (verified in its code and on the sandbox, ``openstack/addresses.py``):
the addresses the ports before the refused one got stay allocated, no port holds them,
``network-ip-availabilities`` counts them as free and no create can have them
(:attr:`FakeNeutron.lost_ips`; ``bulk_leaks=False`` for a Neutron without the bug).

Failures can be injected with :meth:`FakeNeutron.fail_next`. It is deliberately small: a
request it does not know is a 400, so a test never passes on a silently ignored call.
"""

from __future__ import annotations

import ipaddress
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_MAC = itertools.count(1)


def _err(status: int, kind: str, message: str) -> tuple[int, Any]:
    return status, {"NeutronError": {"type": kind, "message": message, "detail": ""}}


@dataclass
class _Failure:
    method: str
    path_prefix: str
    status: int
    kind: str
    message: str
    times: int


class FakeNeutron:
    """Callable as a :class:`~kuryr_k8s.openstack.neutron.Transport`."""

    def __init__(
        self,
        *,
        port_quota: int = 500,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        bulk_leaks: bool = True,
    ) -> None:
        self.now = now
        self.bulk_leaks = bulk_leaks
        self.lost_ips: dict[str, list[str]] = {}
        """Subnet id -> addresses leaked by refused bulk creates (as on Neutron Zed)."""
        self.port_quota = port_quota
        self.networks: dict[str, dict[str, Any]] = {}
        self.subnets: dict[str, dict[str, Any]] = {}
        self.security_groups: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.trunks: dict[str, dict[str, Any]] = {}
        self.extensions: set[str] = {"trunk", "trunk-details", "revision-if-match"}
        self.requests: list[tuple[str, str]] = []
        self._failures: list[_Failure] = []
        self.on_request: Callable[[str, str], None] | None = None
        """Called before each request is served (to simulate concurrent changes)."""

    # ---- set-up helpers -----------------------------------------------------------------

    def add_network(self, project_id: str, mtu: int = 1442) -> str:
        net_id = str(uuid.uuid4())
        self.networks[net_id] = {"id": net_id, "project_id": project_id, "mtu": mtu}
        return net_id

    def add_subnet(self, network_id: str, cidr: str) -> str:
        sub_id = str(uuid.uuid4())
        net = ipaddress.ip_network(cidr)
        hosts = list(net.hosts())
        self.subnets[sub_id] = {
            "id": sub_id,
            "network_id": network_id,
            "project_id": self.networks[network_id]["project_id"],
            "cidr": cidr,
            "ip_version": net.version,
            "gateway_ip": str(hosts[0]),
            "host_routes": [],
            "_free": [str(h) for h in hosts[1:]],
        }
        return sub_id

    def add_security_group(self, project_id: str, name: str = "default") -> str:
        sg_id = str(uuid.uuid4())
        self.security_groups[sg_id] = {"id": sg_id, "project_id": project_id, "name": name}
        return sg_id

    def add_port(self, network_id: str, subnet_id: str, *, name: str = "") -> dict[str, Any]:
        """A port made outside the controller (a VM's NIC), with an address on the subnet."""
        project = self.networks[network_id]["project_id"]
        item = {"network_id": network_id, "project_id": project, "name": name}
        item["fixed_ips"] = [{"subnet_id": subnet_id}]
        status, port = self._one_port(item)
        assert status == 201, port
        return dict(port)

    def add_trunk(self, parent_port_id: str, name: str = "") -> str:
        trunk_id = str(uuid.uuid4())
        parent = self.ports[parent_port_id]
        self.trunks[trunk_id] = {
            "id": trunk_id,
            "name": name,
            "port_id": parent_port_id,
            "project_id": parent["project_id"],
            "status": "ACTIVE",
            "admin_state_up": True,
            "sub_ports": [],
        }
        return trunk_id

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        kind: str = "HTTPInternalServerError",
        message: str = "injected failure",
        *,
        times: int = 1,
    ) -> None:
        self._failures.append(_Failure(method, path_prefix, status, kind, message, times))

    def touch(self, port_id: str) -> None:
        """What Neutron does on its own (binding, status): bump the revision."""
        port = self.ports[port_id]
        port["revision_number"] += 1
        port["updated_at"] = self._stamp()

    # ---- the transport ------------------------------------------------------------------

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        self.requests.append((method, path))
        if self.on_request is not None:
            self.on_request(method, path)
        for failure in self._failures:
            if failure.method == method and path.startswith(failure.path_prefix):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return _err(failure.status, failure.kind, failure.message)
        parts = [p for p in path.split("/") if p]
        params = dict(params or {})
        headers = dict(headers or {})
        if parts[0] == "ports":
            return self._ports(method, parts[1:], body, params, headers)
        if parts[0] == "trunks":
            return self._trunks(method, parts[1:], body, params)
        if parts[0] == "extensions" and method == "GET":
            return 200, {"extensions": [{"alias": a} for a in sorted(self.extensions)]}
        if parts[0] == "network-ip-availabilities" and method == "GET" and len(parts) == 2:
            return self._availability(parts[1])
        if parts[0] in ("subnets", "networks", "security-groups"):
            return self._read_only(method, parts, params)
        return _err(400, "HTTPBadRequest", f"fake Neutron does not know {method} {path}")

    def _stamp(self) -> str:
        return self.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _availability(self, network_id: str) -> tuple[int, Any]:
        if network_id not in self.networks:
            return _err(404, "NetworkNotFound", f"Network {network_id} could not be found.")
        subs = []
        for sub in self.subnets.values():
            if sub["network_id"] == network_id:
                used = sum(
                    1
                    for p in self.ports.values()
                    for ip in p["fixed_ips"]
                    if ip["subnet_id"] == sub["id"]
                )
                lost = len(self.lost_ips.get(sub["id"], ()))  # counted free, as on Zed
                subs.append(
                    {
                        "subnet_id": sub["id"],
                        "used_ips": used,
                        "total_ips": used + len(sub["_free"]) + lost,
                    }
                )
        return 200, {"network_ip_availability": {"subnet_ip_availability": subs}}

    def _read_only(self, method: str, parts: list[str], params: dict[str, str]) -> tuple[int, Any]:
        table, singular, missing = {
            "subnets": (self.subnets, "subnet", "SubnetNotFound"),
            "networks": (self.networks, "network", "NetworkNotFound"),
            "security-groups": (self.security_groups, "security_group", "SecurityGroupNotFound"),
        }[parts[0]]
        if method != "GET":
            return _err(400, "HTTPBadRequest", "read-only in the fake")
        public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in table.values()]
        if len(parts) == 1:
            project = params.get("project_id")
            found = [r for r in public if project is None or r["project_id"] == project]
            return 200, {parts[0].replace("-", "_"): found}
        for res in public:
            if res["id"] == parts[1]:
                return 200, {singular: res}
        return _err(404, missing, f"{singular} {parts[1]} could not be found.")

    def _ports(
        self,
        method: str,
        rest: list[str],
        body: Any,
        params: dict[str, str],
        headers: dict[str, str],
    ) -> tuple[int, Any]:
        if not rest:
            if method == "GET":
                return 200, {
                    "ports": [self._show(p) for p in self.ports.values() if _match(p, params)]
                }
            if method == "POST":
                return self._create(body)
        else:
            port = self.ports.get(rest[0])
            if port is None:
                return _err(404, "PortNotFound", f"Port {rest[0]} could not be found.")
            if len(rest) == 2 and rest[1] == "tags" and method == "PUT":
                port["tags"] = list(body["tags"])
                self.touch(port["id"])
                return 200, {"tags": list(port["tags"])}
            if len(rest) == 1 and method == "GET":
                return 200, {"port": self._show(port)}
            if len(rest) == 1 and method == "DELETE":
                stale = self._stale(port, headers)
                if stale is not None:
                    return stale
                trunk = self._trunk_of_subport(port["id"])
                if trunk is not None:
                    return _err(
                        409,
                        "PortInUseAsSubPort",
                        f"Port {port['id']} is currently a subport for trunk {trunk['id']}.",
                    )
                for trunk in self.trunks.values():
                    if trunk["port_id"] == port["id"]:
                        return _err(
                            409,
                            "PortInUseAsTrunkParent",
                            f"Port {port['id']} is currently a parent port for trunk "
                            f"{trunk['id']}.",
                        )
                self._free_ips(port)
                del self.ports[port["id"]]
                return 204, None
            if len(rest) == 1 and method == "PUT":
                return self._update(port, body["port"], headers)
        return _err(400, "HTTPBadRequest", f"fake Neutron does not know {method} /ports/{rest}")

    def _show(self, port: dict[str, Any]) -> dict[str, Any]:
        out = dict(port)
        for trunk in self.trunks.values():
            if trunk["port_id"] == port["id"]:
                out["trunk_details"] = {
                    "trunk_id": trunk["id"],
                    "sub_ports": [dict(sp) for sp in trunk["sub_ports"]],
                }
        return out

    def _trunk_of_subport(self, port_id: str) -> dict[str, Any] | None:
        for trunk in self.trunks.values():
            if any(sp["port_id"] == port_id for sp in trunk["sub_ports"]):
                return trunk
        return None

    def _trunks(
        self, method: str, rest: list[str], body: Any, params: dict[str, Any]
    ) -> tuple[int, Any]:
        if not rest and method == "GET":
            ids = params.get("id")
            wanted = None if ids is None else set([ids] if isinstance(ids, str) else ids)
            found = [
                _copy_trunk(t) for t in self.trunks.values() if wanted is None or t["id"] in wanted
            ]
            return 200, {"trunks": found}
        trunk = self.trunks.get(rest[0]) if rest else None
        if trunk is None:
            return _err(
                404, "TrunkNotFound", f"Trunk {rest[0] if rest else ''} could not be found."
            )
        if len(rest) == 1 and method == "GET":
            return 200, {"trunk": _copy_trunk(trunk)}
        if len(rest) == 1 and method == "DELETE":
            for sp in trunk["sub_ports"]:
                self._detached(self.ports[sp["port_id"]])
            del self.trunks[trunk["id"]]
            return 204, None
        if len(rest) == 2 and rest[1] == "get_subports" and method == "GET":
            return 200, {"sub_ports": [dict(sp) for sp in trunk["sub_ports"]]}
        if len(rest) == 2 and rest[1] == "add_subports" and method == "PUT":
            return self._add_subports(trunk, body["sub_ports"])
        if len(rest) == 2 and rest[1] == "remove_subports" and method == "PUT":
            ids = [sp["port_id"] for sp in body["sub_ports"]]
            attached = {sp["port_id"] for sp in trunk["sub_ports"]}
            for pid in ids:
                if pid not in attached:
                    return _err(
                        404,
                        "SubPortNotFound",
                        f"SubPort {pid} on trunk {trunk['id']} could not be found.",
                    )
            trunk["sub_ports"] = [sp for sp in trunk["sub_ports"] if sp["port_id"] not in ids]
            for pid in ids:
                self._detached(self.ports[pid])
            return 200, _copy_trunk(trunk)
        return _err(400, "HTTPBadRequest", f"fake Neutron does not know {method} /trunks/{rest}")

    def _add_subports(self, trunk: dict[str, Any], items: list[dict[str, Any]]) -> tuple[int, Any]:
        used = {sp["segmentation_id"] for sp in trunk["sub_ports"]}
        for item in items:
            port = self.ports.get(item["port_id"])
            if port is None:
                return _err(404, "PortNotFound", f"Port {item['port_id']} could not be found.")
            if port["device_id"]:
                return _err(
                    409,
                    "PortInUse",
                    f"Unable to complete operation on port {port['id']} for network "
                    f"{port['network_id']}. Port already has an attached device "
                    f"{port['device_id']}.",
                )
            if self._trunk_of_subport(port["id"]) is not None or any(
                t["port_id"] == port["id"] for t in self.trunks.values()
            ):
                return _err(409, "TrunkPortInUse", f"Port {port['id']} is in use by another trunk.")
            seg = int(item["segmentation_id"])
            if seg in used or not 1 <= seg <= 4094:
                return _err(
                    409,
                    "DuplicateSubPort",
                    f"segmentation_type vlan and segmentation_id {seg} already in use on "
                    f"trunk {trunk['id']}.",
                )
            used.add(seg)
        for item in items:
            trunk["sub_ports"].append(
                {
                    "port_id": item["port_id"],
                    "segmentation_type": "vlan",
                    "segmentation_id": int(item["segmentation_id"]),
                }
            )
            port = self.ports[item["port_id"]]
            port["device_owner"] = "trunk:subport"
            port["binding:profile"] = {
                "parent_name": trunk["port_id"],
                "tag": int(item["segmentation_id"]),
            }
            self.touch(port["id"])
        return 200, _copy_trunk(trunk)

    def _detached(self, port: dict[str, Any]) -> None:
        port["device_owner"] = ""
        port["binding:profile"] = {}
        self.touch(port["id"])

    @staticmethod
    def _stale(port: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any] | None:
        wanted = headers.get("If-Match")
        if wanted is None:
            return None
        expected = int(wanted.split("=", 1)[1])
        if expected == port["revision_number"]:
            return None
        return _err(
            412,
            "RevisionNumberConstraintFailed",
            f"Constrained to {expected}, but current revision is {port['revision_number']}",
        )

    def _update(
        self, port: dict[str, Any], changes: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any]:
        stale = self._stale(port, headers)
        if stale is not None:
            return stale
        if "tags" in changes:
            return _err(400, "HTTPBadRequest", "Cannot update read-only attribute tags")
        for sg in changes.get("security_groups", ()):
            if sg not in self.security_groups:
                return _err(404, "SecurityGroupNotFound", f"Security group {sg} does not exist")
        port.update(changes)
        self.touch(port["id"])
        return 200, {"port": dict(port)}

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        bulk = "ports" in body
        items: list[dict[str, Any]] = body["ports"] if bulk else [body["port"]]
        owned = sum(1 for p in self.ports.values() if p["project_id"] == items[0]["project_id"])
        if owned + len(items) > self.port_quota:
            return _err(409, "OverQuota", "Quota exceeded for resources: ['port'].")
        made: list[dict[str, Any]] = []
        for item in items:
            status, result = self._one_port(item)
            if status != 201:
                leak = bulk and self.bulk_leaks and _kind(result) == "IpAddressGenerationFailure"
                for port in made:  # bulk create is all-or-nothing
                    if leak:  # Zed: the allocations made before the refusal stay
                        for ip in port["fixed_ips"]:
                            self.lost_ips.setdefault(ip["subnet_id"], []).append(ip["ip_address"])
                    else:
                        self._free_ips(port)
                    del self.ports[port["id"]]
                return status, result
            made.append(result)
        if bulk:
            return 201, {"ports": [dict(p) for p in made]}
        return 201, {"port": dict(made[0])}

    def _one_port(self, item: dict[str, Any]) -> tuple[int, Any]:
        if "project_id" not in item:
            return _err(
                400,
                "HTTPBadRequest",
                "Running without keystone AuthN requires that tenant_id is specified",
            )
        if item["network_id"] not in self.networks:
            return _err(404, "NetworkNotFound", f"Network {item['network_id']} could not be found.")
        for sg in item.get("security_groups", ()):
            if sg not in self.security_groups:
                return _err(404, "SecurityGroupNotFound", f"Security group {sg} does not exist")
        fixed_ips = []
        for req in item.get("fixed_ips", ()):
            subnet = self.subnets.get(req["subnet_id"])
            if subnet is None:
                return _err(404, "SubnetNotFound", f"Subnet {req['subnet_id']} could not be found.")
            if not subnet["_free"]:
                return _err(
                    409,
                    "IpAddressGenerationFailure",
                    f"No more IP addresses available on network {item['network_id']}.",
                )
            fixed_ips.append({"subnet_id": subnet["id"], "ip_address": subnet["_free"].pop(0)})
        n = next(_MAC)
        stamp = self._stamp()
        port = {
            "id": str(uuid.uuid4()),
            "name": item.get("name", ""),
            "network_id": item["network_id"],
            "project_id": item["project_id"],
            "mac_address": f"fa:16:3e:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
            "status": "DOWN",
            "device_id": item.get("device_id", ""),
            "device_owner": item.get("device_owner", ""),
            "fixed_ips": fixed_ips,
            "security_groups": list(item.get("security_groups", ())),
            "binding:host_id": item.get("binding:host_id", ""),
            "tags": list(item.get("tags", ())),
            "revision_number": 1,
            "created_at": stamp,
            "updated_at": stamp,
        }
        self.ports[port["id"]] = port
        return 201, port

    def _free_ips(self, port: dict[str, Any]) -> None:
        for ip in port["fixed_ips"]:
            subnet = self.subnets.get(ip["subnet_id"])
            if subnet is not None:
                subnet["_free"].append(ip["ip_address"])


def _kind(result: Any) -> str:
    return str(result.get("NeutronError", {}).get("type", "")) if isinstance(result, dict) else ""


def _copy_trunk(trunk: dict[str, Any]) -> dict[str, Any]:
    return {**trunk, "sub_ports": [dict(sp) for sp in trunk["sub_ports"]]}


def _match(port: dict[str, Any], params: dict[str, Any]) -> bool:
    for key, value in params.items():
        if key in ("fields", "limit"):
            continue
        if key == "fixed_ips":
            wanted = dict(v.split("=", 1) for v in ([value] if isinstance(value, str) else value))
            if not any(all(ip.get(k) == v for k, v in wanted.items()) for ip in port["fixed_ips"]):
                return False
        elif isinstance(value, list):
            if str(port.get(key, "")) not in value:
                return False
        elif key == "tags":
            if not set(value.split(",")) <= set(port["tags"]):
                return False
        elif str(port.get(key, "")) != value:
            return False
    return True
