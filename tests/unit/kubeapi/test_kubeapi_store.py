"""Store: resourceVersion, indexes, watch history window and event translation."""

from __future__ import annotations

from typing import Any

import pytest

from kuryr_k8s.sandbox.kubeapi.selectors import parse_field_selector, parse_label_selector
from kuryr_k8s.sandbox.kubeapi.store import Store, TooOld, Watcher, field_value

pytestmark = pytest.mark.unit
Obj = dict[str, Any]
KEY = "/configmaps"


def _obj(
    store: Store,
    name: str,
    ns: str = "default",
    labels: dict[str, str] | None = None,
    owners: list[str] | None = None,
) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": ns,
        "uid": f"uid-{ns}-{name}",
        "resourceVersion": str(store.next_rv()),
        "labels": labels or {},
    }
    if owners:
        meta["ownerReferences"] = [{"uid": u} for u in owners]
    return {"metadata": meta}


def _watcher(selector: str = "", fields: str = "", ns: str | None = None) -> Watcher:
    return Watcher(KEY, ns, parse_label_selector(selector), parse_field_selector(fields))


def _drain(w: Watcher) -> list[tuple[str, str]]:
    out = []
    while not w.queue.empty():
        item = w.queue.get_nowait()
        assert item is not None
        out.append((item[0], item[1]["metadata"]["name"]))
    return out


def test_put_get_iter_sorted_and_indexes() -> None:
    store = Store()
    for ns, name in [("b", "x"), ("a", "z"), ("a", "y")]:
        store.put(KEY, _obj(store, name, ns), "ADDED")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.iter(KEY)] == [
        ("a", "y"),
        ("a", "z"),
        ("b", "x"),
    ]
    assert [o["metadata"]["name"] for o in store.iter(KEY, "a")] == ["y", "z"]
    assert store.count(KEY) == 3 and store.count(KEY, "b") == 1
    assert store.by_uid("uid-a-z") is store.get(KEY, "a", "z")
    assert store.rv == 3


def test_dependents_index_follows_updates_and_removal() -> None:
    store = Store()
    dep = _obj(store, "dep", owners=["o1"])
    store.put(KEY, dep, "ADDED")
    assert store.dependents("o1") == [(KEY, "default", "dep")]
    moved = _obj(store, "dep", owners=["o2"])
    store.put(KEY, moved, "MODIFIED", dep)
    assert store.dependents("o1") == []
    assert store.dependents("o2") == [(KEY, "default", "dep")]
    store.remove(KEY, moved)
    assert store.dependents("o2") == [] and store.by_uid("uid-default-dep") is None


def test_watch_from_now_and_replay() -> None:
    store = Store()
    a = _obj(store, "a")
    store.put(KEY, a, "ADDED")
    mark = store.rv
    b = _obj(store, "b")
    store.put(KEY, b, "ADDED")
    initial = store.subscribe(_watcher(), None)
    assert [(t, o["metadata"]["name"]) for t, o in initial] == [("ADDED", "a"), ("ADDED", "b")]
    replay = store.subscribe(_watcher(), mark)
    assert [(t, o["metadata"]["name"]) for t, o in replay] == [("ADDED", "b")]
    assert store.subscribe(_watcher(), store.rv) == []


def test_live_events_and_selector_transitions() -> None:
    store = Store()
    w = _watcher("app=web")
    store.subscribe(w, None)
    a = _obj(store, "a", labels={"app": "web"})
    store.put(KEY, a, "ADDED")
    a2 = _obj(store, "a", labels={"app": "db"})
    store.put(KEY, a2, "MODIFIED", a)
    a3 = _obj(store, "a", labels={"app": "db", "x": "y"})
    store.put(KEY, a3, "MODIFIED", a2)
    a4 = _obj(store, "a", labels={"app": "web"})
    store.put(KEY, a4, "MODIFIED", a3)
    store.remove(KEY, a4)
    assert _drain(w) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "a"), ("DELETED", "a")]


def test_namespace_and_field_filters() -> None:
    store = Store()
    w_ns = _watcher(ns="a")
    w_field = _watcher(fields="metadata.name=two")
    for w in (w_ns, w_field):
        store.subscribe(w, None)
    store.put(KEY, _obj(store, "one", "a"), "ADDED")
    store.put(KEY, _obj(store, "two", "b"), "ADDED")
    assert _drain(w_ns) == [("ADDED", "one")]
    assert _drain(w_field) == [("ADDED", "two")]


def test_history_window_gives_too_old() -> None:
    store = Store(history=3)
    store.window_start = store.rv
    for i in range(5):
        store.put(KEY, _obj(store, f"o{i}"), "ADDED")
    assert store.window_start == 2
    with pytest.raises(TooOld):
        store.subscribe(_watcher(), 1)
    replay = store.subscribe(_watcher(), 2)
    assert [o["metadata"]["name"] for _, o in replay] == ["o2", "o3", "o4"]


def test_other_kinds_do_not_reach_watcher() -> None:
    store = Store()
    w = _watcher()
    store.subscribe(w, None)
    other = _obj(store, "svc")
    store.put("/services", other, "ADDED")
    assert _drain(w) == []
    store.unsubscribe(w)
    store.put(KEY, _obj(store, "late"), "ADDED")
    assert _drain(w) == []
    assert store.watcher_count() == 0


def test_close_watchers_ends_streams() -> None:
    store = Store()
    w = _watcher()
    store.subscribe(w, None)
    store.close_watchers()
    assert w.queue.get_nowait() is None


def test_field_value() -> None:
    obj = {
        "metadata": {"name": "n"},
        "spec": {"hostNetwork": True, "nodeName": "x"},
        "source": {"component": "kubelet"},
    }
    assert field_value(obj, "spec.hostNetwork") == "true"
    assert field_value(obj, "spec.nodeName") == "x"
    assert field_value(obj, "status.phase") == ""
    assert field_value(obj, "source") == "kubelet"


def test_snapshot_restore_roundtrip() -> None:
    store = Store()
    store.put(KEY, _obj(store, "a", owners=["o"]), "ADDED")
    copy = Store()
    loaded = copy.restore(store.snapshot())
    assert [k for k, _ in loaded] == [KEY]
    assert copy.rv == store.rv == copy.window_start
    assert copy.dependents("o") == [(KEY, "default", "a")]
