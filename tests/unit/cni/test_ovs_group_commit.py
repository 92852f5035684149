"""Group commit of OVS port changes (``cni/host/ovs.py``): many threads' changes go into
few transactions, each caller still gets its own change's outcome, and changes of one
port keep their order. The commit function is a small recorder standing in for OVSDB;
the real database is exercised by ``tests/functional/cni/test_ovs_group_commit.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from kuryr_k8s.cni.errors import HostError
from kuryr_k8s.cni.host.ovs import _GroupCommit, _PortChange
from kuryr_k8s.model.errors import TemporaryError

pytestmark = pytest.mark.unit


class Db:
    """Applies changes to a dict, taking ``delay`` per transaction like ovs-vswitchd."""

    def __init__(self, delay: float = 0.02, refuse: str | None = None) -> None:
        self.delay = delay
        self.refuse = refuse
        self.ports: dict[str, dict[str, str]] = {}
        self.transactions: list[list[str]] = []
        self.timeout = False
        self._lock = threading.Lock()

    def commit(self, changes: Sequence[_PortChange]) -> None:
        with self._lock:
            names = [c.name for c in changes]
            assert len(names) == len(set(names)), f"one port twice in a transaction: {names}"
            self.transactions.append(names)
        time.sleep(self.delay)
        if self.timeout:
            from ovsdbapp.exceptions import TimeoutException

            raise TimeoutException(commands=names, timeout=10, cause="ovs-vswitchd busy")
        if self.refuse in names:
            raise RuntimeError(f"constraint violation on {self.refuse}")
        for c in changes:
            if c.bridge is None:
                self.ports.pop(c.name, None)
            else:
                self.ports[c.name] = dict(c.external_ids or {})


def run_all(group: _GroupCommit, changes: list[_PortChange]) -> dict[str, Exception | None]:
    outcome: dict[str, Exception | None] = {}
    gate = threading.Barrier(len(changes))

    def one(change: _PortChange) -> None:
        gate.wait()
        try:
            group.run(change)
            outcome[change.name] = None
        except Exception as exc:
            outcome[change.name] = exc

    threads = [threading.Thread(target=one, args=(c,)) for c in changes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return outcome


def test_forty_threads_land_every_port_in_few_transactions() -> None:
    db = Db()
    changes = [_PortChange(f"tap{i}", "br-int", {"iface-id": str(i)}) for i in range(40)]
    outcome = run_all(_GroupCommit(db.commit), changes)
    assert outcome == {c.name: None for c in changes}
    assert db.ports == {f"tap{i}": {"iface-id": str(i)} for i in range(40)}
    assert sorted(n for t in db.transactions for n in t) == sorted(c.name for c in changes)
    assert len(db.transactions) < 20, db.transactions  # one per port before


def test_a_refused_change_fails_only_its_caller() -> None:
    db = Db(refuse="tap3")
    changes = [_PortChange(f"tap{i}", "br-int", {}) for i in range(8)]
    outcome = run_all(_GroupCommit(db.commit), changes)
    error = outcome.pop("tap3")
    assert isinstance(error, HostError) and "add tap3 to br-int" in str(error)
    assert outcome == {f"tap{i}": None for i in range(8) if i != 3}
    assert set(db.ports) == {f"tap{i}" for i in range(8) if i != 3}


def test_a_timeout_fails_the_whole_transaction_as_temporary_without_retrying_each() -> None:
    db = Db()
    db.timeout = True
    changes = [_PortChange(f"tap{i}", "br-int", {}) for i in range(6)]
    outcome = run_all(_GroupCommit(db.commit), changes)
    assert all(isinstance(e, TemporaryError) for e in outcome.values()), outcome
    assert len(db.transactions) <= 6  # no second, one-by-one round after a timeout
    assert sum(len(t) for t in db.transactions) == 6


def test_changes_of_one_port_keep_their_order_and_never_share_a_transaction() -> None:
    db = Db(delay=0.01)
    group = _GroupCommit(db.commit)
    order: list[str] = []

    def add_then_delete() -> None:
        group.run(_PortChange("tapx", "br-int", {"n": "1"}))
        order.append("added")
        group.run(_PortChange("tapx", None, None))
        order.append("deleted")

    others = [_PortChange(f"tap{i}", "br-int", {}) for i in range(10)]
    t = threading.Thread(target=add_then_delete)
    t.start()
    run_all(group, others)
    t.join(timeout=30)
    assert order == ["added", "deleted"]
    assert "tapx" not in db.ports
    assert set(db.ports) == {c.name for c in others}
