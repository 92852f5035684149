"""The Octavia adapter: async methods over openstacksdk's ``load_balancer`` proxy.

Same shape as :mod:`kuryr_k8s.openstack.neutron` (see its docstring for why): the SDK is
only an authenticated HTTP adapter (clouds.yaml/Keystone or a noauth endpoint), we speak
Octavia's v2 JSON ourselves, run the synchronous calls in a bounded thread pool, and
translate failures into the project's error tree at this boundary:

=================================================  ====================================
404                                                :class:`OctaviaNotFound` (permanent)
409 "immutable" (the LB is ``PENDING_*``)          :class:`LbImmutable` (temporary, 1 s)
501 (the provider cannot do an option asked for)  :class:`OctaviaUnsupported` (permanent)
other 409, 5xx, 429, timeouts, refused             :class:`OctaviaUnavailable` (temporary)
other 4xx (bad VIP, unsupported protocol...)       :class:`OctaviaRejected` (permanent)
=================================================  ====================================

Octavia is stateful: every change puts the load balancer into ``PENDING_UPDATE`` and
refuses the next change until it is ``ACTIVE`` again. :meth:`Octavia.wait_active` polls
with a growing delay up to a deadline, then raises :class:`LbPending` (temporary) so the
reconciler requeues instead of blocking a worker; ``ERROR`` raises :class:`LbInError`.

Everything we create carries tags (cluster id + owner uid) and is found by them before
anything is created (:meth:`Octavia.find_loadbalancers`), so a crash between the create
and the status write never makes a second load balancer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.model.errors import KuryrError, PermanentError, TemporaryError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import (
    GONE,
    ApiCaller,
    CallStats,
    SdkTransport,
    Transport,
    _transport_failure,
)

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class OctaviaUnavailable(TemporaryError):
    """Octavia could not answer now (5xx, timeout, connection refused, other 409)."""


class LbImmutable(TemporaryError):
    """The load balancer is ``PENDING_*``: Octavia refuses changes until it settles."""


class LbPending(TemporaryError):
    """The load balancer did not leave ``PENDING_*`` within the wait: look again later."""


class LbInError(TemporaryError):
    """The load balancer is in ``ERROR``: the reconciler deletes it and makes a new one."""


class MembersLost(TemporaryError):
    """A batch update's member vanished from Octavia's list once it settled: send the
    update again."""


class OctaviaRejected(PermanentError):
    """Octavia refused the request; its ``faultstring`` is the message."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class OctaviaNotFound(OctaviaRejected):
    """The object (or the one named in the request) does not exist."""


class OctaviaUnsupported(OctaviaRejected):
    """HTTP 501: the LB's provider refuses an option of the request (e.g. the ovn
    provider and listener ``allowed_cidrs``: "Provider 'ovn' does not support a requested
    option: OVN provider does not support allowed_cidrs option"). Nothing was changed."""


def translate(what: str, status: int, body: Any) -> KuryrError:
    """The error-tree exception for a failed Octavia response (``what``: the operation)."""
    message = ""
    if isinstance(body, Mapping):
        message = str(body.get("faultstring") or body.get("message") or "")
    elif isinstance(body, str):
        message = body.strip()[:300]
    text = f"Octavia {what}: {message or f'HTTP {status}'}"
    if status == 409 and "immutable" in message.lower():
        return LbImmutable(text, delay=1.0)
    if status == 404:
        return OctaviaNotFound(text, status=status)
    if status == 501:
        return OctaviaUnsupported(text, status=status)
    if status in (408, 409, 429) or status >= 500:
        return OctaviaUnavailable(text)
    return OctaviaRejected(text, status=status)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadBalancer:
    id: str
    name: str
    vip_address: str
    vip_port_id: str
    vip_subnet_id: str
    provider: str
    provisioning_status: str
    operating_status: str
    project_id: str
    tags: tuple[str, ...]
    created_at: str = ""


@dataclass(frozen=True)
class Listener:
    id: str
    name: str
    protocol: str
    protocol_port: int
    default_pool_id: str
    tags: tuple[str, ...] = ()
    allowed_cidrs: tuple[str, ...] = ()
    """Octavia's listener ACL; empty: every source."""


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    protocol: str
    listener_ids: tuple[str, ...]
    healthmonitor_id: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    id: str
    address: str
    protocol_port: int
    subnet_id: str
    name: str = ""
    provisioning_status: str = ""


@dataclass(frozen=True)
class MemberSpec:
    address: str
    protocol_port: int
    subnet_id: str = ""
    name: str = ""

    def body(self, tags: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "address": self.address,
            "protocol_port": self.protocol_port,
            "name": self.name,
            "tags": list(tags),
        }
        if self.subnet_id:
            body["subnet_id"] = self.subnet_id
        return body


def _tags(data: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(data.get("tags") or ())


def lb_from_json(d: Mapping[str, Any]) -> LoadBalancer:
    return LoadBalancer(
        id=d["id"],
        name=d.get("name") or "",
        vip_address=d.get("vip_address") or "",
        vip_port_id=d.get("vip_port_id") or "",
        vip_subnet_id=d.get("vip_subnet_id") or "",
        provider=d.get("provider") or "",
        provisioning_status=d.get("provisioning_status") or "",
        operating_status=d.get("operating_status") or "",
        project_id=d.get("project_id") or "",
        tags=_tags(d),
        created_at=d.get("created_at") or "",
    )


def _listener(d: Mapping[str, Any]) -> Listener:
    return Listener(
        id=d["id"],
        name=d.get("name") or "",
        protocol=d.get("protocol") or "",
        protocol_port=int(d.get("protocol_port") or 0),
        default_pool_id=d.get("default_pool_id") or "",
        tags=_tags(d),
        allowed_cidrs=tuple(d.get("allowed_cidrs") or ()),
    )


def _pool(d: Mapping[str, Any]) -> Pool:
    return Pool(
        id=d["id"],
        name=d.get("name") or "",
        protocol=d.get("protocol") or "",
        listener_ids=tuple(x["id"] for x in d.get("listeners") or ()),
        healthmonitor_id=d.get("healthmonitor_id") or "",
        tags=_tags(d),
    )


def _pending(members: Sequence[Member]) -> bool:
    return any(m.provisioning_status.startswith("PENDING_") for m in members)


def _member(d: Mapping[str, Any]) -> Member:
    return Member(
        id=d["id"],
        address=d.get("address") or "",
        protocol_port=int(d.get("protocol_port") or 0),
        subnet_id=d.get("subnet_id") or "",
        name=d.get("name") or "",
        provisioning_status=d.get("provisioning_status") or "",
    )


@dataclass
class OctaviaStats(CallStats):
    """Calls, errors and seconds by operation (plain counters, like NeutronStats)."""


# --------------------------------------------------------------------------------------
# Transport and the adapter
# --------------------------------------------------------------------------------------


PENDING = ("PENDING_CREATE", "PENDING_UPDATE", "PENDING_DELETE")
REDELETE_AFTER = 3.0
"""Seconds a load balancer being deleted may show ``ACTIVE``/``ERROR`` before the delete is
sent again (see :meth:`Octavia.wait_gone`)."""


def _octavia_failure(op: str, exc: Exception) -> KuryrError:
    """The keystoneauth/requests mapping of Neutron's, as Octavia's errors."""
    failure = _transport_failure(op, exc)
    if isinstance(failure, PermanentError):
        return OctaviaRejected(f"Octavia {op}: {exc}")
    return OctaviaUnavailable(f"Octavia {op}: {type(exc).__name__}: {exc}")


class Octavia:
    """Async Octavia v2 operations used by the KuryrLoadBalancer reconciler.

    ``inline=True`` runs the transport on the event loop (in-memory fakes in tests)."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_concurrency: int = 4,
        inline: bool = False,
        stats: OctaviaStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.stats = stats or OctaviaStats()
        self._call = ApiCaller(
            transport,
            self.stats,
            translate=translate,
            transport_error=_octavia_failure,
            max_concurrency=max_concurrency,
            inline=inline,
            clock=clock,
            thread_name="octavia",
        )
        self._clock = clock
        self._sleep = sleep

    def close(self) -> None:
        self._call.shutdown()

    # ---- providers --------------------------------------------------------------------

    async def providers(self) -> list[str]:
        data = await self._call("list_providers", "GET", "/lbaas/providers")
        return [str(p["name"]) for p in data.get("providers") or ()]

    # ---- load balancers ---------------------------------------------------------------

    async def find_loadbalancers(self, tags: Iterable[str]) -> list[LoadBalancer]:
        """Load balancers carrying *all* ``tags``, oldest first."""
        data = await self._call(
            "list_loadbalancers", "GET", "/lbaas/loadbalancers", params={"tags": ",".join(tags)}
        )
        lbs = [lb_from_json(d) for d in data["loadbalancers"]]
        return sorted(lbs, key=lambda lb: (lb.created_at, lb.id))

    async def get_loadbalancer(self, lb_id: str) -> LoadBalancer | None:
        data = await self._call(
            "get_loadbalancer", "GET", f"/lbaas/loadbalancers/{lb_id}", missing_ok=True
        )
        return None if data is GONE else lb_from_json(data["loadbalancer"])

    async def create_loadbalancer(
        self,
        *,
        name: str,
        vip_subnet_id: str,
        vip_address: str,
        provider: str,
        project_id: str,
        tags: Sequence[str],
        description: str = "",
    ) -> LoadBalancer:
        body = {
            "loadbalancer": {
                "name": name,
                "description": description,
                "vip_subnet_id": vip_subnet_id,
                "vip_address": vip_address,
                "provider": provider,
                "project_id": project_id,
                "tags": list(tags),
            }
        }
        data = await self._call("create_loadbalancer", "POST", "/lbaas/loadbalancers", body=body)
        return lb_from_json(data["loadbalancer"])

    async def delete_loadbalancer(self, lb_id: str) -> bool:
        """Cascade delete (listeners, pools, members go with it); False if already gone."""
        data = await self._call(
            "delete_loadbalancer",
            "DELETE",
            f"/lbaas/loadbalancers/{lb_id}",
            params={"cascade": "true"},
            missing_ok=True,
        )
        return data is not GONE

    async def wait_active(
        self, lb_id: str, *, within: float = 30.0, first: float = 0.1, cap: float = 2.0
    ) -> LoadBalancer:
        """Poll until the LB is ``ACTIVE`` (delay doubling from ``first`` to ``cap``).

        Raises :class:`LbPending` after ``within`` seconds (requeue), :class:`LbInError`
        on ``ERROR``, :class:`OctaviaNotFound` if the LB is gone."""

        async def settled(lb: LoadBalancer | None) -> bool:
            if lb is None:
                raise OctaviaNotFound(f"Octavia: load balancer {lb_id} is gone")
            if lb.provisioning_status == "ERROR":
                raise LbInError(f"Octavia: load balancer {lb_id} is in ERROR")
            return lb.provisioning_status == "ACTIVE"

        lb = await self._poll(lb_id, settled, "", within, first, cap)
        assert lb is not None
        return lb

    async def wait_gone(self, lb_id: str, *, within: float = 30.0, cap: float = 2.0) -> None:
        """Poll until the LB no longer exists; :class:`LbPending` after ``within`` s.

        A cascade delete that did not take (the LB ``ACTIVE`` or ``ERROR`` for
        :data:`REDELETE_AFTER` seconds of polling) is sent again. Not at the first sight
        of ``ACTIVE``: the OVN provider may report an earlier change's ``ACTIVE`` while it
        is still deleting, and a second delete accepted then fails in the provider after
        the first one succeeded, bringing the LB back as ``ERROR``."""
        settled_since: float | None = None

        async def settled(lb: LoadBalancer | None) -> bool:
            nonlocal settled_since
            if lb is None:
                return True
            if lb.provisioning_status not in ("ACTIVE", "ERROR"):
                settled_since = None
                return False
            now = self._clock()
            if settled_since is None:
                settled_since = now
            elif now - settled_since >= REDELETE_AFTER:
                await self.delete_loadbalancer(lb_id)
                settled_since = None
            return False

        await self._poll(lb_id, settled, " of deleting", within, 0.1, cap)

    async def _poll(
        self,
        lb_id: str,
        settled: Callable[[LoadBalancer | None], Awaitable[bool]],
        doing: str,
        within: float,
        first: float,
        cap: float,
    ) -> LoadBalancer | None:
        deadline = self._clock() + within
        delay = first
        while True:
            lb = await self.get_loadbalancer(lb_id)
            if await settled(lb):
                return lb
            if self._clock() + delay > deadline:
                state = lb.provisioning_status if lb is not None else "gone"
                raise LbPending(
                    f"Octavia: load balancer {lb_id} still {state} after {within:.0f} s{doing}",
                    delay=cap,
                )
            await self._sleep(delay)
            delay = min(cap, delay * 2)

    # ---- listeners, pools, members, health monitors -----------------------------------

    async def _of_lb(self, plural: str, lb_id: str) -> list[dict[str, Any]]:
        data = await self._call(
            f"list_{plural}", "GET", f"/lbaas/{plural}", params={"loadbalancer_id": lb_id}
        )
        items: list[dict[str, Any]] = data[plural]
        return items

    async def _create(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        data = await self._call(f"create_{kind}", "POST", f"/lbaas/{kind}s", body={kind: fields})
        created: dict[str, Any] = data[kind]
        return created

    async def _delete(self, kind: str, object_id: str) -> bool:
        data = await self._call(
            f"delete_{kind}", "DELETE", f"/lbaas/{kind}s/{object_id}", missing_ok=True
        )
        return data is not GONE

    async def listeners(self, lb_id: str) -> list[Listener]:
        return [_listener(d) for d in await self._of_lb("listeners", lb_id)]

    async def create_listener(
        self, lb_id: str, *, name: str, protocol: str, port: int, tags: Sequence[str]
    ) -> Listener:
        fields: dict[str, Any] = {"loadbalancer_id": lb_id, "protocol_port": port}
        fields.update(name=name, protocol=protocol, tags=list(tags))
        return _listener(await self._create("listener", fields))

    async def set_allowed_cidrs(self, listener_id: str, cidrs: Sequence[str]) -> None:
        """The listener's ACL becomes ``cidrs`` (empty: every source). A provider that
        cannot filter raises :class:`OctaviaUnsupported` and the listener is unchanged."""
        body = {"listener": {"allowed_cidrs": list(cidrs) or None}}
        await self._call("update_listener", "PUT", f"/lbaas/listeners/{listener_id}", body=body)

    async def delete_listener(self, listener_id: str) -> bool:
        return await self._delete("listener", listener_id)

    async def pools(self, lb_id: str) -> list[Pool]:
        return [_pool(d) for d in await self._of_lb("pools", lb_id)]

    async def create_pool(
        self, listener_id: str, *, name: str, protocol: str, algorithm: str, tags: Sequence[str]
    ) -> Pool:
        fields: dict[str, Any] = {"listener_id": listener_id, "lb_algorithm": algorithm}
        fields.update(name=name, protocol=protocol, tags=list(tags))
        return _pool(await self._create("pool", fields))

    async def delete_pool(self, pool_id: str) -> bool:
        return await self._delete("pool", pool_id)

    async def members(self, pool_id: str) -> list[Member]:
        """The pool's members, without those being deleted (a batch update's removed
        members can stay listed as ``PENDING_DELETE`` a moment after the LB is ACTIVE)."""
        data = await self._call("list_members", "GET", f"/lbaas/pools/{pool_id}/members")
        members = [_member(d) for d in data["members"]]
        return [m for m in members if m.provisioning_status not in ("PENDING_DELETE", "DELETED")]

    async def settled_members(
        self, pool_id: str, *, within: float = 30.0, first: float = 0.1, cap: float = 1.0
    ) -> list[Member]:
        """The pool's members once none is ``PENDING_*`` (someone's change in flight);
        :class:`LbPending` after ``within`` seconds."""

        def settled(members: list[Member]) -> bool:
            return not _pending(members)

        return await self._poll_members(pool_id, settled, "", within, first, cap)

    async def wait_members(
        self,
        pool_id: str,
        want: set[tuple[str, int]],
        *,
        within: float = 30.0,
        first: float = 0.1,
        cap: float = 1.0,
    ) -> list[Member]:
        """After a batch update to ``want`` ((address, port) pairs): the members once
        Octavia lists exactly those, none ``PENDING_*``.

        The LB being ``ACTIVE`` again does not say the list is right. With the OVN provider
        the removed members are listed ``ACTIVE`` for a second or two after the LB is, and
        Octavia's next batch matches members by (address, port) among *all* the pool's
        rows: a member that went and came back reuses its old row, which the provider's
        late report of the removal then deletes (measured on the sandbox, see
        docs/design/services.md). Raises :class:`MembersLost` as soon as the list has
        settled without a wanted member (send the update again), :class:`LbPending` when
        it is still not ``want`` after ``within`` seconds."""

        def exact(members: list[Member]) -> bool:
            listed = {(m.address, m.protocol_port) for m in members}
            if listed == want and not _pending(members):
                return True
            if not _pending(members) and want - listed:
                missing = ", ".join(f"{a}:{p}" for a, p in sorted(want - listed))
                raise MembersLost(
                    f"Octavia: pool {pool_id} lost members {missing} after the batch "
                    "update (a late report of an earlier removal); sending it again",
                    delay=0.5,
                )
            return False

        return await self._poll_members(pool_id, exact, " to list the update", within, first, cap)

    async def _poll_members(
        self,
        pool_id: str,
        done: Callable[[list[Member]], bool],
        doing: str,
        within: float,
        first: float,
        cap: float,
    ) -> list[Member]:
        deadline = self._clock() + within
        delay = first
        while True:
            data = await self._call("list_members", "GET", f"/lbaas/pools/{pool_id}/members")
            members = [_member(d) for d in data["members"]]
            members = [m for m in members if m.provisioning_status != "DELETED"]
            if done(members):
                return members
            if self._clock() + delay > deadline:
                rows = ", ".join(
                    sorted(
                        f"{m.address}:{m.protocol_port} {m.provisioning_status}" for m in members
                    )
                )
                raise LbPending(
                    f"Octavia: pool {pool_id} members still [{rows}] after {within:.0f} s{doing}",
                    delay=cap,
                )
            await self._sleep(delay)
            delay = min(cap, delay * 2)

    async def replace_members(
        self, pool_id: str, members: Sequence[MemberSpec], tags: Sequence[str]
    ) -> None:
        """Octavia's batch member update: the pool's members become exactly ``members``
        (one call, one LB update, whatever the number of changes)."""
        body = {"members": [m.body(tags) for m in members]}
        await self._call("replace_members", "PUT", f"/lbaas/pools/{pool_id}/members", body=body)

    async def create_healthmonitor(
        self,
        pool_id: str,
        *,
        type_: str,
        delay: int,
        answer_within: int,
        max_retries: int,
        tags: Sequence[str],
    ) -> str:
        fields: dict[str, Any] = {"pool_id": pool_id, "type": type_, "delay": delay}
        fields.update(timeout=answer_within, max_retries=max_retries, tags=list(tags))
        return str((await self._create("healthmonitor", fields))["id"])


def connect(settings: NeutronSettings, endpoint: str, max_concurrency: int = 4) -> Octavia:
    """An :class:`Octavia` from the ``[neutron]`` credentials: a clouds.yaml cloud (the
    catalog's load-balancer endpoint unless ``endpoint`` overrides it), or noauth with
    ``endpoint`` (``[octavia_defaults] endpoint_override``)."""
    import openstack

    kwargs: dict[str, Any] = {"api_timeout": settings.timeout}
    if endpoint:
        kwargs["load_balancer_endpoint_override"] = endpoint
    if settings.cloud:
        kwargs["cloud"] = settings.cloud
        if settings.region_name:
            kwargs["region_name"] = settings.region_name
    else:
        kwargs.update(
            auth_type="none",
            auth={"endpoint": settings.endpoint},
            network_endpoint_override=settings.endpoint,
        )
    return Octavia(
        SdkTransport(openstack.connect(**kwargs), service="load_balancer"),
        max_concurrency=max_concurrency,
    )
