"""The local OVS database through ovsdbapp (one IDL connection, no ``ovs-vsctl`` per pod).

Our rows are ``Port``/``Interface`` pairs of the same name on the integration bridge. The
``Interface.external_ids`` carry what OVN needs (``iface-id``, ``attached-mac``,
``iface-status``, ``vm-uuid``) and what we need to find the attachment again after a
restart (``kuryr-*``, see :data:`OWNER_KEYS`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kuryr_k8s.cni.errors import HostError
from kuryr_k8s.model.errors import TemporaryError

OWNER = "kuryr-cni"
OWNER_KEYS = (
    "kuryr-owner",
    "kuryr-node",
    "kuryr-container-id",
    "kuryr-ifname",
    "kuryr-netns",
    "kuryr-pod",
    "kuryr-cluster",
    "kuryr-network",
)
"""``kuryr-owner=kuryr-cni`` marks our rows, ``kuryr-node`` the daemon (node) that owns
them, ``kuryr-cluster`` the cluster id of that daemon and ``kuryr-network`` the CNI
network name of the ADD (both absent on rows written before ownership stamps); the rest
identify the attachment."""


@dataclass(frozen=True)
class OvsInterface:
    name: str
    bridge: str | None
    external_ids: dict[str, str]


COLUMNS: dict[str, tuple[str, ...]] = {
    "Open_vSwitch": ("bridges", "cur_cfg", "next_cfg", "external_ids"),
    "Bridge": ("name", "ports", "datapath_type"),
    "Port": ("name", "interfaces"),
    "Interface": ("name", "type", "ofport", "external_ids"),
}
"""What the daemon's IDL replicates: the columns its reads and ovsdbapp's add/delete port
(with the ``cur_cfg`` wait for ovs-vswitchd and the ``ofport`` check) use. Not the whole
database: with every column registered, each of the node's interfaces sent its
``statistics``, ``status``, link and ``ofport`` changes to the daemon, parsed in its
process while it wires pods."""


class Ovsdb:
    """A connection to the local ``Open_vSwitch`` database, opened lazily."""

    def __init__(self, connection: str, timeout: float = 10.0) -> None:
        self.connection = connection
        self.timeout = timeout
        self._api: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._group = _GroupCommit(self._commit)

    def api(self) -> Any:
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            return self._api

    def _connect(self) -> Any:
        from ovsdbapp.backend.ovs_idl import connection, idlutils
        from ovsdbapp.schema.open_vswitch import impl_idl

        try:
            helper = idlutils.get_schema_helper(self.connection, "Open_vSwitch")
            for table, columns in COLUMNS.items():
                helper.register_columns(table, list(columns))
            idl = connection.OvsdbIdl(self.connection, helper)
            conn = connection.Connection(idl=idl, timeout=self.timeout)
            api = impl_idl.OvsdbIdl(conn)
        except Exception as exc:
            raise TemporaryError(f"cannot connect to OVSDB at {self.connection}: {exc}") from exc
        self._conn = conn
        return api

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.stop()
            self._api = self._conn = None

    def _execute(self, what: str, command: Any) -> Any:
        try:
            return command.execute(check_error=True)
        except Exception as exc:
            raise _error(what, exc) from exc

    def datapath_type(self, bridge: str) -> str | None:
        """The bridge's ``datapath_type`` ("" means system), ``None`` if it does not exist."""
        api = self.api()
        if not self._execute(f"look up bridge {bridge}", api.br_exists(bridge)):
            return None
        value = self._execute(
            f"read {bridge} datapath_type", api.db_get("Bridge", bridge, "datapath_type")
        )
        return str(value or "")

    def is_ovn_chassis(self) -> bool:
        """Whether ovn-controller manages this switch (it sets ``ovn-installed``)."""
        api = self.api()
        rows = self._execute(
            "read Open_vSwitch", api.db_list("Open_vSwitch", columns=["external_ids"])
        )
        return any("ovn-remote" in (r.get("external_ids") or {}) for r in rows)

    def ensure_port(self, bridge: str, name: str, external_ids: dict[str, str]) -> None:
        """Port+Interface ``name`` on ``bridge`` with exactly these ``external_ids``.

        Committed together with the other threads' port changes waiting at that moment
        (:class:`_GroupCommit`): ovsdbapp waits in each transaction until ovs-vswitchd has
        applied it (``cur_cfg``), one transaction at a time on its connection, and the
        userspace datapath takes ~0.1 s per reconfiguration: one port per transaction
        capped a node at ~10 new ports a second (100 ports: 11.8 s one by one, 0.25 s in
        one transaction, measured on the sandbox 2026-11-29)."""
        self._group.run(_PortChange(name, bridge, external_ids))

    def delete_port(self, name: str) -> None:
        """Remove the Port ``name`` (and its Interface); fine if it is already gone.
        Grouped with other threads' port changes like :meth:`ensure_port`."""
        self._group.run(_PortChange(name, None, None))

    def _commit(self, changes: Sequence[_PortChange]) -> None:
        api = self.api()
        with api.transaction(check_error=True) as txn:
            for change in changes:
                if change.bridge is None:
                    txn.add(api.del_port(change.name, if_exists=True))
                else:
                    txn.add(api.add_port(change.bridge, change.name, may_exist=True))
                    txn.add(
                        api.db_set("Interface", change.name, ("external_ids", change.external_ids))
                    )

    def external_ids_of(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """The ``external_ids`` of the interfaces ``names`` (those that exist), in one read
        of one table: what a readiness poll of many interfaces needs (:meth:`interface`
        reads three tables; the node's other hundreds of interfaces are not read)."""
        if not names:
            return {}
        rows = self._execute(
            "list interfaces",
            self.api().db_list(
                "Interface", list(names), columns=["name", "external_ids"], if_exists=True
            ),
        )
        return {r["name"]: dict(r.get("external_ids") or {}) for r in rows if r}

    def has_interface(self, name: str) -> bool:
        """Whether OVS has the interface ``name``: one look-up (the re-plug pass asks it
        for every attachment of the node every few seconds)."""
        rows = self._execute(
            f"look up interface {name}",
            self.api().db_list("Interface", [name], columns=["name"], if_exists=True),
        )
        return any(rows)

    def interface(self, name: str) -> OvsInterface | None:
        for iface in self._interfaces(name):
            return iface
        return None

    def owned_interfaces(self, node: str) -> list[OvsInterface]:
        """Every interface the daemon of ``node`` plugged, on any bridge."""
        return [
            i
            for i in self._interfaces(None)
            if i.external_ids.get("kuryr-owner") == OWNER
            and i.external_ids.get("kuryr-node") == node
        ]

    def _interfaces(self, name: str | None) -> list[OvsInterface]:
        api = self.api()
        records = [name] if name else None
        ifaces = self._execute(
            "list interfaces",
            api.db_list("Interface", records, columns=["name", "external_ids"], if_exists=True),
        )
        if not any(ifaces):
            return []
        bridges = self._execute("list bridges", api.db_list("Bridge", columns=["name", "ports"]))
        ports = self._execute(  # one port when one is asked for, not the node's hundreds
            "list ports", api.db_list("Port", records, columns=["_uuid", "name"], if_exists=True)
        )
        ports = [p for p in ports if p]
        port_names = {p["_uuid"]: p["name"] for p in ports}
        bridge_of = {port_names.get(u): b["name"] for b in bridges for u in b["ports"]}
        return [
            OvsInterface(i["name"], bridge_of.get(i["name"]), dict(i.get("external_ids") or {}))
            for i in ifaces
            if i
        ]


@dataclass(frozen=True)
class _PortChange:
    """Add (``bridge`` set) or delete (``bridge`` None) the port ``name``."""

    name: str
    bridge: str | None
    external_ids: dict[str, str] | None

    def what(self) -> str:
        if self.bridge is None:
            return f"delete port {self.name}"
        return f"add {self.name} to {self.bridge}"


class _Waiter:
    def __init__(self, change: _PortChange) -> None:
        self.change = change
        self.error: Exception | None = None
        self.done = threading.Event()

    def finish(self, error: Exception | None) -> None:
        self.error = error
        self.done.set()


class _GroupCommit:
    """Group commit of port changes made by many threads at once.

    The first thread to arrive while no commit runs becomes the committer: it commits
    everything waiting in one transaction, then whatever arrived meanwhile, until nothing
    waits; the others wait for their change's outcome. A name appears once per
    transaction (a later change of the same port waits for the next one, so changes of
    one port keep their order). A transaction refused is retried one change at a time,
    so each caller gets its own change's error and the others still happen; one that
    timed out fails all its changes as temporary."""

    def __init__(self, commit: Callable[[Sequence[_PortChange]], None]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._committing = False

    def run(self, change: _PortChange) -> None:
        waiter = _Waiter(change)
        with self._lock:
            self._waiting.append(waiter)
            lead = not self._committing
            self._committing = True
        if lead:
            self._drain()
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch: list[_Waiter] = []
                later: list[_Waiter] = []
                names: set[str] = set()
                for w in self._waiting:
                    (later if w.change.name in names else batch).append(w)
                    names.add(w.change.name)
                self._waiting = later
                if not batch:
                    self._committing = False
                    return
            self._apply(batch)

    def _apply(self, batch: list[_Waiter]) -> None:
        try:
            self._commit([w.change for w in batch])
        except Exception as exc:
            error = [_error(w.change.what(), exc) for w in batch]
            if len(batch) == 1 or isinstance(error[0], TemporaryError):
                # OVSDB or ovs-vswitchd not answering in time: one by one would only
                # wait that long again for each; the runtime retries the ADD (CNI 11).
                for w, e in zip(batch, error, strict=True):
                    w.finish(e)
                return
            for w in batch:
                self._apply([w])
            return
        for w in batch:
            w.finish(None)


def _error(what: str, exc: Exception) -> Exception:
    """OVSDB not answering in time is temporary (CNI 11); anything else is refused (102)."""
    from ovsdbapp.exceptions import TimeoutException

    if isinstance(exc, TimeoutException):
        return TemporaryError(f"OVSDB: {what}: {exc}")
    return HostError(f"OVSDB: {what}: {exc}")
