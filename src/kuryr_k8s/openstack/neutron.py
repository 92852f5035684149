"""The Neutron adapter: async methods over openstacksdk, errors translated at this boundary.

Why the synchronous SDK in a thread pool and not an async HTTP client (see
``docs/design/ports-and-pools.md``): openstacksdk/keystoneauth already do clouds.yaml,
Keystone auth and token refresh, the service catalog and endpoint overrides, and every
Neutron call costs 10-400 ms, so a thread hop (~50 µs) is noise. We use the SDK's
``network`` proxy as an authenticated HTTP adapter and speak Neutron's JSON ourselves:
one code path for single and bulk creates (``POST /ports`` with a list), ``If-Match``
revision constraints for ownership flips, and Neutron's own error type and message for
the error tree. The pool of threads is ours and bounded
(:attr:`~kuryr_k8s.openstack.connection.NeutronSettings.max_concurrency`).

The seam for tests is :class:`Transport`: one synchronous function from
(method, path, body, params, headers) to (status, JSON). ``kuryr_k8s.openstack.fake``
holds an in-memory Neutron behind that seam.

Error mapping (:func:`translate`), by Neutron's ``NeutronError.type`` first, then status:

========================================  =====================================
``OverQuota``                             :class:`QuotaExceeded` (permanent)
``IpAddressGenerationFailure``            :class:`IpExhausted` (permanent)
``SubnetNotFound``/``NetworkNotFound``/   :class:`NeutronNotFound` (permanent)
``SecurityGroupNotFound``/other 404
``RevisionNumberConstraintFailed`` (412)  :class:`RevisionConflict` (temporary)
``DuplicateSubPort`` (409)                :class:`VlanConflict` (temporary: pick again)
``PortInUseAsSubPort``/``TrunkPortInUse`` :class:`PortIsSubport` (permanent: detach first)
``TrunkNotFound``/``SubPortNotFound``     :class:`TrunkNotFound`/:class:`NotASubport`
``PortInUse`` (409)                       :class:`NeutronRejected` (permanent)
other 409, 5xx, 429, timeouts, refused    :class:`NeutronUnavailable` (temporary)
other 4xx, auth/catalog failures          :class:`NeutronRejected` (permanent)
========================================  =====================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import keystoneauth1.exceptions as ksa
import requests

from kuryr_k8s.model.errors import KuryrError, PermanentError, TemporaryError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.ports import DEVICE_OWNER, FixedIp, NeutronPort

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class NeutronUnavailable(TemporaryError):
    """Neutron could not answer now (5xx, timeout, connection refused, retriable 409)."""


class RevisionConflict(TemporaryError):
    """An ``If-Match: revision_number=N`` update lost: the port changed since it was read."""


class NeutronRejected(PermanentError):
    """Neutron refused the request; its reason is the message."""

    def __init__(self, message: str, *, status: int = 0, neutron_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.neutron_type = neutron_type


class QuotaExceeded(NeutronRejected):
    """The project's quota does not allow more of this resource."""


class IpExhausted(NeutronRejected):
    """The subnet has no free address left."""


class NeutronNotFound(NeutronRejected):
    """The subnet, network, security group (or port) named in the request does not exist."""


class TrunkNotFound(NeutronNotFound):
    """The trunk named in the request does not exist (any more)."""


class NotASubport(NeutronNotFound):
    """``remove_subports`` of a port that is not a subport of that trunk."""


class PortIsSubport(NeutronRejected):
    """The port is a subport of a trunk: ``DELETE`` needs ``remove_subports`` first
    (``PortInUseAsSubPort``); ``add_subports`` of an attached port (``TrunkPortInUse``)."""


class VlanConflict(TemporaryError):
    """``add_subports``: the VLAN id is already used on the trunk (``DuplicateSubPort``,
    another writer got there first): re-read the trunk's subports and pick again."""


_PERMANENT_BY_TYPE: dict[str, type[NeutronRejected]] = {
    "OverQuota": QuotaExceeded,
    "IpAddressGenerationFailure": IpExhausted,
    "IpAddressGenerationFailureNoMatchingSubnet": IpExhausted,
    "SubnetNotFound": NeutronNotFound,
    "NetworkNotFound": NeutronNotFound,
    "SecurityGroupNotFound": NeutronNotFound,
    "PortNotFound": NeutronNotFound,
    "TrunkNotFound": TrunkNotFound,
    "SubPortNotFound": NotASubport,
    "PortInUseAsSubPort": PortIsSubport,
    "TrunkPortInUse": PortIsSubport,
    "PortInUse": NeutronRejected,
    "PortInUseAsTrunkParent": NeutronRejected,
}
_TEMPORARY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


def translate(what: str, status: int, body: Any) -> KuryrError:
    """The error-tree exception for a failed Neutron response (``what``: the operation)."""
    neutron_type, message = _neutron_reason(body)
    text = f"Neutron {what}: {message or f'HTTP {status}'}"
    if neutron_type == "DuplicateSubPort":
        return VlanConflict(text)
    if neutron_type in _PERMANENT_BY_TYPE:
        return _PERMANENT_BY_TYPE[neutron_type](text, status=status, neutron_type=neutron_type)
    if status == 412:
        return RevisionConflict(text)
    if status in _TEMPORARY_STATUSES:
        return NeutronUnavailable(text)
    if status == 404:
        return NeutronNotFound(text, status=status, neutron_type=neutron_type)
    return NeutronRejected(text, status=status, neutron_type=neutron_type)


def _neutron_reason(body: Any) -> tuple[str, str]:
    if isinstance(body, Mapping):
        err = body.get("NeutronError")
        if isinstance(err, Mapping):
            return str(err.get("type", "")), str(err.get("message", ""))
        if isinstance(body.get("message"), str):  # webob's plain errors
            return "", str(body["message"])
    if isinstance(body, str):
        return "", body.strip()[:300]
    return "", ""


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """Body of one port to create."""

    network_id: str
    subnet_id: str
    project_id: str
    security_groups: tuple[str, ...]
    host: str
    """``binding:host_id``: pre-binds the port to that node (OVN chassis name)."""
    tags: tuple[str, ...]
    name: str = ""
    device_id: str = ""
    device_owner: str = DEVICE_OWNER

    def body(self) -> dict[str, Any]:
        body = {
            "network_id": self.network_id,
            "project_id": self.project_id,
            "fixed_ips": [{"subnet_id": self.subnet_id}],
            "security_groups": list(self.security_groups),
            "device_owner": self.device_owner,
            "device_id": self.device_id,
            "name": self.name,
            "admin_state_up": True,
            "tags": list(self.tags),
        }
        if self.host:  # subports are created unbound: the trunk binds them
            body["binding:host_id"] = self.host
        return body


@dataclass(frozen=True)
class SubPort:
    """One ``(port, VLAN id)`` of a trunk."""

    port_id: str
    segmentation_id: int


@dataclass(frozen=True)
class NeutronTrunk:
    id: str
    port_id: str
    """The parent port (the VM's NIC)."""
    sub_ports: tuple[SubPort, ...]
    status: str = ""
    project_id: str = ""
    name: str = ""

    def vlan_of(self, port_id: str) -> int | None:
        return next((s.segmentation_id for s in self.sub_ports if s.port_id == port_id), None)


@dataclass(frozen=True)
class HostRoute:
    destination: str
    nexthop: str


@dataclass(frozen=True)
class NeutronSubnet:
    id: str
    network_id: str
    project_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    host_routes: tuple[HostRoute, ...] = ()
    shared: bool = False


@dataclass(frozen=True)
class NeutronNetwork:
    id: str
    project_id: str
    mtu: int
    shared: bool = False


@dataclass(frozen=True)
class NeutronSecurityGroup:
    id: str
    project_id: str
    name: str


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _subports_from_json(items: Any) -> tuple[SubPort, ...]:
    return tuple(
        SubPort(str(sp["port_id"]), int(sp["segmentation_id"]))
        for sp in items or ()
        if sp.get("segmentation_type", "vlan") == "vlan"
    )


def trunk_from_json(data: Mapping[str, Any]) -> NeutronTrunk:
    return NeutronTrunk(
        id=data["id"],
        port_id=data.get("port_id") or "",
        sub_ports=_subports_from_json(data.get("sub_ports")),
        status=data.get("status") or "",
        project_id=data.get("project_id") or data.get("tenant_id") or "",
        name=data.get("name") or "",
    )


def port_from_json(data: Mapping[str, Any]) -> NeutronPort:
    details = data.get("trunk_details")
    return NeutronPort(
        id=data["id"],
        mac_address=data.get("mac_address", ""),
        network_id=data.get("network_id", ""),
        fixed_ips=tuple(
            FixedIp(subnet_id=ip["subnet_id"], ip_address=ip["ip_address"])
            for ip in data.get("fixed_ips") or ()
        ),
        status=data.get("status", ""),
        binding_host_id=data.get("binding:host_id") or "",
        security_groups=tuple(sorted(data.get("security_groups") or ())),
        tags=tuple(data.get("tags") or ()),
        device_owner=data.get("device_owner") or "",
        name=data.get("name") or "",
        device_id=data.get("device_id") or "",
        project_id=data.get("project_id") or data.get("tenant_id") or "",
        revision_number=int(data.get("revision_number") or 0),
        created_at=_time(data.get("created_at")),
        updated_at=_time(data.get("updated_at")),
        trunk_parent_of=str(details.get("trunk_id") or "") if isinstance(details, dict) else "",
    )


def _subnet_from_json(data: Mapping[str, Any]) -> NeutronSubnet:
    return NeutronSubnet(
        id=data["id"],
        network_id=data["network_id"],
        project_id=data.get("project_id") or data.get("tenant_id") or "",
        cidr=data["cidr"],
        ip_version=int(data.get("ip_version", 4)),
        gateway_ip=data.get("gateway_ip"),
        host_routes=tuple(
            HostRoute(r["destination"], r["nexthop"]) for r in data.get("host_routes") or ()
        ),
        shared=bool(data.get("shared", False)),
    )


# --------------------------------------------------------------------------------------
# Counters (exported as Prometheus metrics by the controller)
# --------------------------------------------------------------------------------------


@dataclass
class CallStats:
    """Calls, errors and time spent, by operation. Plain counters: read them, do not reset."""

    calls: Counter[str] = field(default_factory=Counter)
    """``op`` -> number of calls (``list_ports``, ``create_ports``, ...)."""
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    """``(op, error class name)`` -> failed calls (``QuotaExceeded``, ``NeutronUnavailable``...)."""
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    """``op`` -> total seconds spent waiting for the API (queueing in our pool included)."""


@dataclass
class NeutronStats(CallStats):
    """:class:`CallStats` of Neutron, plus the ports made and removed."""

    ports_created: int = 0
    ports_deleted: int = 0


# --------------------------------------------------------------------------------------
# Transport seam and the adapter
# --------------------------------------------------------------------------------------


class Transport(Protocol):
    """One synchronous HTTP exchange with Neutron (paths relative to ``/v2.0``).

    Returns the status and the decoded JSON body (None when empty). Raises only for
    transport failures (refused, timed out); HTTP errors come back as statuses.
    """

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]: ...


class SdkTransport:
    """:class:`Transport` over an openstacksdk connection's ``network`` proxy (or another
    service's: ``service="load_balancer"`` for Octavia)."""

    def __init__(self, conn: Any, service: str = "network") -> None:
        self.conn = conn
        self.service = service

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        resp = getattr(self.conn, self.service).request(
            path, method, json=body, params=dict(params or {}), headers=dict(headers or {})
        )
        if not resp.content:
            return resp.status_code, None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text


def connect_sdk(settings: NeutronSettings) -> Any:
    """An openstacksdk connection from settings (a clouds.yaml cloud, or noauth)."""
    import openstack  # slow import: only the controller process needs it

    if settings.cloud:
        kwargs: dict[str, Any] = {"cloud": settings.cloud, "api_timeout": settings.timeout}
        if settings.region_name:
            kwargs["region_name"] = settings.region_name
        return openstack.connect(**kwargs)
    return openstack.connect(
        auth_type="none",
        auth={"endpoint": settings.endpoint},
        network_endpoint_override=settings.endpoint,
        api_timeout=settings.timeout,
    )


def _transport_failure(what: str, exc: Exception) -> KuryrError:
    """Exceptions raised by the SDK/keystoneauth/requests below :class:`Transport`."""
    permanent = (
        ksa.AuthorizationFailure,
        ksa.EndpointNotFound,
        ksa.EmptyCatalog,
        ksa.MissingAuthPlugin,
        ksa.NoMatchingPlugin,
    )
    if isinstance(exc, permanent):
        return NeutronRejected(f"Neutron {what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ksa.ClientException | requests.RequestException | OSError | TimeoutError):
        return NeutronUnavailable(f"Neutron {what}: {type(exc).__name__}: {exc}")
    return NeutronUnavailable(f"Neutron {what}: unexpected {type(exc).__name__}: {exc}")


GONE: Any = object()
"""What an :class:`ApiCaller` returns for a tolerated 404."""


class ApiCaller:
    """One OpenStack API's calls: off the event loop (a thread pool, or inline for in-memory
    fakes), counted in ``stats``, failures mapped to our errors: HTTP statuses by
    ``translate``, transport exceptions by ``transport_error``. Shared by Neutron and
    Octavia."""

    def __init__(
        self,
        transport: Transport,
        stats: CallStats,
        *,
        translate: Callable[[str, int, Any], KuryrError],
        transport_error: Callable[[str, Exception], KuryrError] = _transport_failure,
        max_concurrency: int,
        inline: bool,
        clock: Callable[[], float],
        thread_name: str,
    ) -> None:
        self.transport = transport
        self.stats = stats
        self._translate = translate
        self._transport_error = transport_error
        self._clock = clock
        self._executor = (
            None
            if inline
            else concurrent.futures.ThreadPoolExecutor(
                max_concurrency, thread_name_prefix=thread_name
            )
        )

    def shutdown(self, *, wait: bool = False) -> None:
        """Stop the thread pool (queued calls are dropped; with ``wait``, calls already
        sent are waited for)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)

    async def __call__(
        self,
        op: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The JSON of a 2xx answer; :data:`GONE` for a 404 when ``missing_ok``; else raises."""
        self.stats.calls[op] += 1
        call = functools.partial(
            self.transport, method, path, body=body, params=params, headers=headers
        )
        started = self._clock()
        try:
            if self._executor is None:
                await asyncio.sleep(0)  # a suspension point, as a real call has
                status, data = call()
            else:
                loop = asyncio.get_running_loop()
                status, data = await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            err = self._transport_error(op, exc)
            self.stats.errors[(op, type(err).__name__)] += 1
            raise err from exc
        finally:
            self.stats.seconds[op] += self._clock() - started
        if 200 <= status < 300:
            return data
        if status == 404 and missing_ok:
            return GONE
        err = self._translate(op, status, data)
        self.stats.errors[(op, type(err).__name__)] += 1
        raise err


class Neutron:
    """Async Neutron operations used by the port providers, GC and start-up validation.

    ``inline=True`` runs the transport on the event loop (in-memory fakes in tests).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_concurrency: int = 8,
        inline: bool = False,
        stats: NeutronStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats or NeutronStats()
        self._call = ApiCaller(
            transport,
            self.stats,
            translate=translate,
            max_concurrency=max_concurrency,
            inline=inline,
            clock=clock,
            thread_name="neutron",
        )

    @classmethod
    def connect(cls, settings: NeutronSettings) -> Neutron:
        return cls(SdkTransport(connect_sdk(settings)), max_concurrency=settings.max_concurrency)

    def close(self, *, wait: bool = False) -> None:
        """Stop the thread pool (queued calls are dropped; with ``wait``, calls already
        sent to Neutron are waited for) and close the connection."""
        self._call.shutdown(wait=wait)
        conn = getattr(self._call.transport, "conn", None)
        if conn is not None:
            conn.close()

    # ---- ports ------------------------------------------------------------------------

    async def list_ports(
        self, tags: Iterable[str] = (), **filters: str | Sequence[str]
    ) -> list[NeutronPort]:
        """Ports carrying *all* ``tags`` and matching the field filters (``device_id=…``)."""
        params: dict[str, Any] = {k: v for k, v in filters.items()}
        tag_list = list(tags)
        if tag_list:
            params["tags"] = ",".join(tag_list)
        data = await self._call("list_ports", "GET", "/ports", params=params)
        return [port_from_json(p) for p in data["ports"]]

    async def port_statuses(self, port_ids: Sequence[str]) -> dict[str, str]:
        """``status`` of each of ``port_ids`` that exists, in one ``GET /ports`` (the ids as
        repeated ``id`` filters, only the ``id`` and ``status`` fields)."""
        if not port_ids:
            return {}
        params: dict[str, Any] = {"id": list(port_ids), "fields": ["id", "status"]}
        data = await self._call("port_statuses", "GET", "/ports", params=params)
        return {str(p["id"]): str(p.get("status") or "") for p in data["ports"]}

    async def get_port(self, port_id: str) -> NeutronPort | None:
        data = await self._call("get_port", "GET", f"/ports/{port_id}", missing_ok=True)
        return None if data is GONE else port_from_json(data["port"])

    async def create_ports(self, specs: Sequence[PortSpec]) -> list[NeutronPort]:
        """One ``POST /ports`` (a list: Neutron's bulk create is all-or-nothing), tags in the
        body. Where the cloud lacks ``tag_ports_during_bulk_creation`` (tags silently
        dropped), the tags are set afterwards, one call per port."""
        if not specs:
            return []
        data = await self._call(
            "create_ports", "POST", "/ports", body={"ports": [s.body() for s in specs]}
        )
        ports = [port_from_json(p) for p in data["ports"]]
        self.stats.ports_created += len(ports)
        fixed = []
        for spec, port in zip(specs, ports, strict=True):
            if spec.tags and set(port.tags) != set(spec.tags):
                port = await self.set_tags(port, spec.tags)
            fixed.append(port)
        return fixed

    async def update_port(
        self,
        port_id: str,
        *,
        if_revision: int | None = None,
        name: str | None = None,
        security_groups: Sequence[str] | None = None,
        device_id: str | None = None,
        host: str | None = None,
    ) -> NeutronPort:
        """``PUT /ports/{id}``; with ``if_revision`` the update applies only if the port is
        still at that revision (else :class:`RevisionConflict`). A missing port raises
        :class:`NeutronNotFound`."""
        port: dict[str, Any] = {}
        if name is not None:
            port["name"] = name
        if security_groups is not None:
            port["security_groups"] = list(security_groups)
        if device_id is not None:
            port["device_id"] = device_id
        if host is not None:
            port["binding:host_id"] = host
        headers = {} if if_revision is None else {"If-Match": f"revision_number={if_revision}"}
        data = await self._call(
            "update_port", "PUT", f"/ports/{port_id}", body={"port": port}, headers=headers
        )
        return port_from_json(data["port"])

    async def set_tags(self, port: NeutronPort, tags: Iterable[str]) -> NeutronPort:
        """Replace all tags of the port; returns it with the tags Neutron stored (one call:
        the revision is the one a tag update produces, ``port.revision_number + 1``)."""
        data = await self._call(
            "set_tags", "PUT", f"/ports/{port.id}/tags", body={"tags": list(tags)}
        )
        return dataclasses.replace(
            port, tags=tuple(data["tags"]), revision_number=port.revision_number + 1
        )

    async def delete_port(self, port_id: str, *, if_revision: int | None = None) -> bool:
        """True if deleted now, False if it was already gone. With ``if_revision`` only if
        the port is still at that revision (else :class:`RevisionConflict`)."""
        headers = {} if if_revision is None else {"If-Match": f"revision_number={if_revision}"}
        data = await self._call(
            "delete_port", "DELETE", f"/ports/{port_id}", headers=headers, missing_ok=True
        )
        if data is GONE:
            return False
        self.stats.ports_deleted += 1
        return True

    async def ports_with_ip(self, subnet_id: str, ip_address: str) -> list[NeutronPort]:
        """The ports holding ``ip_address`` on ``subnet_id`` (``fixed_ips`` filter)."""
        params: dict[str, Any] = {
            "fixed_ips": [f"ip_address={ip_address}", f"subnet_id={subnet_id}"]
        }
        data = await self._call("ports_with_ip", "GET", "/ports", params=params)
        return [port_from_json(p) for p in data["ports"]]

    # ---- trunks (nested pods) ---------------------------------------------------------

    async def get_trunk(self, trunk_id: str) -> NeutronTrunk | None:
        data = await self._call("get_trunk", "GET", f"/trunks/{trunk_id}", missing_ok=True)
        return None if data is GONE else trunk_from_json(data["trunk"])

    async def list_trunks(self, ids: Sequence[str] | None = None) -> list[NeutronTrunk]:
        """Trunks with their sub_ports, one call; ``ids``: only these (None: all visible)."""
        if ids is not None and not ids:
            return []
        params: dict[str, Any] = {} if ids is None else {"id": list(ids)}
        data = await self._call("list_trunks", "GET", "/trunks", params=params)
        return [trunk_from_json(t) for t in data["trunks"]]

    async def get_subports(self, trunk_id: str) -> tuple[SubPort, ...]:
        """The trunk's real ``(port, VLAN id)`` list; :class:`TrunkNotFound` if it is gone."""
        data = await self._call("get_subports", "GET", f"/trunks/{trunk_id}/get_subports")
        return _subports_from_json(data["sub_ports"])

    async def add_subports(self, trunk_id: str, subports: Sequence[SubPort]) -> tuple[SubPort, ...]:
        """Attach ports with their VLAN ids (one call, all or nothing); returns the trunk's
        sub-port list after it. :class:`VlanConflict` when an id is taken,
        :class:`PortIsSubport` when a port is attached already, Neutron's ``PortInUse``
        (:class:`NeutronRejected`) when a port has a ``device_id``."""
        body = {
            "sub_ports": [
                {
                    "port_id": sp.port_id,
                    "segmentation_type": "vlan",
                    "segmentation_id": sp.segmentation_id,
                }
                for sp in subports
            ]
        }
        data = await self._call(
            "add_subports", "PUT", f"/trunks/{trunk_id}/add_subports", body=body
        )
        return _subports_from_json(data["sub_ports"])

    async def remove_subports(self, trunk_id: str, port_ids: Sequence[str]) -> None:
        """Detach ports (one call, all or nothing); :class:`NotASubport` if one is not a
        subport of this trunk, :class:`TrunkNotFound` if the trunk is gone."""
        body = {"sub_ports": [{"port_id": pid} for pid in port_ids]}
        await self._call("remove_subports", "PUT", f"/trunks/{trunk_id}/remove_subports", body=body)

    async def detach(self, trunk_id: str, port_id: str) -> bool:
        """Detach one port if it is attached; False if it was not (or the trunk is gone)."""
        try:
            await self.remove_subports(trunk_id, [port_id])
        except NeutronNotFound:  # not a subport, or trunk gone (which detached it)
            return False
        return True

    async def has_extension(self, alias: str) -> bool:
        data = await self._call("list_extensions", "GET", "/extensions")
        return any(ext.get("alias") == alias for ext in data.get("extensions") or ())

    # ---- what validation and the VIF need ---------------------------------------------

    async def get_subnet(self, subnet_id: str) -> NeutronSubnet | None:
        data = await self._call("get_subnet", "GET", f"/subnets/{subnet_id}", missing_ok=True)
        return None if data is GONE else _subnet_from_json(data["subnet"])

    async def get_network(self, network_id: str) -> NeutronNetwork | None:
        data = await self._call("get_network", "GET", f"/networks/{network_id}", missing_ok=True)
        if data is GONE:
            return None
        net = data["network"]
        return NeutronNetwork(
            id=net["id"],
            project_id=net.get("project_id") or net.get("tenant_id") or "",
            mtu=int(net.get("mtu") or 0),
            shared=bool(net.get("shared", False)),
        )

    async def get_security_group(self, sg_id: str) -> NeutronSecurityGroup | None:
        data = await self._call(
            "get_security_group", "GET", f"/security-groups/{sg_id}", missing_ok=True
        )
        if data is GONE:
            return None
        sg = data["security_group"]
        return NeutronSecurityGroup(
            id=sg["id"], project_id=sg.get("project_id") or "", name=sg.get("name") or ""
        )

    async def free_ips(self, network_id: str, subnet_id: str) -> int | None:
        """Addresses still free on the subnet (``network-ip-availability``, admin-only by
        default policy), or None when this cloud will not tell us."""
        try:
            data = await self._call(
                "ip_availability",
                "GET",
                f"/network-ip-availabilities/{network_id}",
                missing_ok=True,
            )
        except NeutronRejected:
            return None  # 403: not admin
        if data is GONE:
            return None
        for sub in data["network_ip_availability"]["subnet_ip_availability"]:
            if sub["subnet_id"] == subnet_id:
                return max(0, int(sub["total_ips"]) - int(sub["used_ips"]))
        return None

    async def project_has_resources(self, project_id: str) -> bool:
        """Whether Neutron knows the project (it owns a network or a port).

        Neutron has no project list of its own (that is Keystone's, and unavailable with
        noauth); a project that owns nothing in Neutron is almost surely a typo. Security
        groups are not listed on purpose: listing them filtered by project makes Neutron
        create that project's default group."""
        for kind in ("networks", "ports"):
            data = await self._call(
                f"list_{kind}",
                "GET",
                f"/{kind}",
                params={"project_id": project_id, "fields": "id", "limit": "1"},
            )
            if data[kind]:
                return True
        return False

    # ---- floating IPs (Services of type LoadBalancer) ---------------------------------

    async def list_floating_ips(self, **filters: str) -> list[FloatingIp]:
        """Floating IPs matching the field filters (``port_id=…``, ``floating_ip_address=…``,
        ``tags=…``)."""
        data = await self._call("list_floating_ips", "GET", "/floatingips", params=filters)
        return [_fip_from_json(f) for f in data["floatingips"]]

    async def create_floating_ip(
        self,
        network_id: str,
        *,
        project_id: str,
        port_id: str,
        tags: Sequence[str],
        address: str = "",
        description: str = "",
    ) -> FloatingIp:
        body: dict[str, Any] = {
            "floating_network_id": network_id,
            "project_id": project_id,
            "port_id": port_id,
            "description": description,
        }
        if address:
            body["floating_ip_address"] = address
        data = await self._call(
            "create_floating_ip", "POST", "/floatingips", body={"floatingip": body}
        )
        fip = _fip_from_json(data["floatingip"])
        if tags:
            await self._call(
                "set_tags", "PUT", f"/floatingips/{fip.id}/tags", body={"tags": list(tags)}
            )
            fip = dataclasses.replace(fip, tags=tuple(tags))
        return fip

    async def associate_floating_ip(self, fip_id: str, port_id: str | None) -> FloatingIp:
        """Point the floating IP at ``port_id`` (None: disassociate)."""
        data = await self._call(
            "update_floating_ip",
            "PUT",
            f"/floatingips/{fip_id}",
            body={"floatingip": {"port_id": port_id}},
        )
        return _fip_from_json(data["floatingip"])

    async def delete_floating_ip(self, fip_id: str) -> bool:
        data = await self._call(
            "delete_floating_ip", "DELETE", f"/floatingips/{fip_id}", missing_ok=True
        )
        return data is not GONE


@dataclass(frozen=True)
class FloatingIp:
    id: str
    address: str
    network_id: str
    port_id: str
    tags: tuple[str, ...] = ()


def _fip_from_json(data: Mapping[str, Any]) -> FloatingIp:
    return FloatingIp(
        id=data["id"],
        address=data.get("floating_ip_address") or "",
        network_id=data.get("floating_network_id") or "",
        port_id=data.get("port_id") or "",
        tags=tuple(data.get("tags") or ()),
    )
