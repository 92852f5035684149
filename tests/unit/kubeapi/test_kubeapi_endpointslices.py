"""The emulator's EndpointSlice controller, driven synchronously through the in-process API."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kuryr_k8s.sandbox.kubeapi.api import Api
from kuryr_k8s.sandbox.kubeapi.controllers import Controllers
from kuryr_k8s.sandbox.kubeapi.options import DeleteOptions, WriteOptions
from unit.kubeapi.conftest import rt_of

pytestmark = pytest.mark.unit
Obj = dict[str, Any]
SLICES = "discovery.k8s.io/endpointslices"


@pytest.fixture
def ctl(ctl: Controllers, api: Api) -> Controllers:
    """With node ``n1``."""
    api.create(_rt(api, "/nodes"), "v1", "", {"metadata": {"name": "n1"}})
    ctl.run_pending()
    return ctl


_rt = rt_of


def _service(name: str = "web", **spec: Any) -> Obj:
    body: Obj = {
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            **spec,
        },
    }
    return body


def _pod(api: Api, name: str, ip: str, port: int = 8080, ready: bool = True, **kw: Any) -> Obj:
    pods = _rt(api, "/pods")
    body: Obj = {
        "metadata": {"name": name, "labels": kw.pop("labels", {"app": "web"})},
        "spec": {
            "nodeName": kw.pop("node", "n1"),
            "containers": [
                {"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": port}]}
            ],
        },
    }
    pod = api.create(pods, "v1", "ns", body)
    return _set_status(api, pod, ip, ready)


def _set_status(api: Api, pod: Obj, ip: str, ready: bool) -> Obj:
    new = copy.deepcopy(pod)
    new["status"] = {
        "phase": "Running",
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return api.update(_rt(api, "/pods"), pod, new, "status", WriteOptions())


def _slices(api: Api, ctl: Controllers, service: str = "web") -> list[Obj]:
    ctl.run_pending()
    return sorted(
        (
            s
            for s in api.store.iter(SLICES, "ns")
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
        ),
        key=lambda s: str(s.get("ports")),
    )


def _ips(slice_: Obj) -> dict[str, bool]:
    return {e["addresses"][0]: e["conditions"]["ready"] for e in slice_.get("endpoints") or []}


def test_slice_shape(api: Api, ctl: Controllers) -> None:
    svc = api.create(_rt(api, "/services"), "v1", "ns", _service())
    pod = _pod(api, "web-1", "10.0.0.5")
    [es] = _slices(api, ctl)
    meta = es["metadata"]
    assert meta["name"].startswith("web-") and len(meta["name"]) == len("web-") + 5
    assert meta["generateName"] == "web-"
    # labels and ownerReferences in full: tests/kubeapi_conformance (same code, over HTTP)
    assert meta["labels"]["team"] == "a"
    assert [o["uid"] for o in meta["ownerReferences"]] == [svc["metadata"]["uid"]]
    assert es["addressType"] == "IPv4"
    assert es["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert es["endpoints"] == [
        {
            "addresses": ["10.0.0.5"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {
                "kind": "Pod",
                "namespace": "ns",
                "name": "web-1",
                "uid": pod["metadata"]["uid"],
            },
            "nodeName": "n1",
        }
    ]


def test_placeholder_then_pods_then_readiness(api: Api, ctl: Controllers) -> None:
    api.create(_rt(api, "/services"), "v1", "ns", _service())
    [es] = _slices(api, ctl)
    assert es.get("endpoints") is None and es.get("ports") is None
    pod = _pod(api, "web-1", "10.0.0.5")
    _pod(api, "web-2", "10.0.0.6")
    api.create(
        _rt(api, "/pods"),
        "v1",
        "ns",
        {
            "metadata": {"name": "no-ip", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        },
    )
    [again] = _slices(api, ctl)
    assert again["metadata"]["name"] == es["metadata"]["name"]  # updated in place
    assert again["metadata"]["generation"] > es["metadata"]["generation"]
    assert _ips(again) == {"10.0.0.5": True, "10.0.0.6": True}
    _set_status(api, api.require(_rt(api, "/pods"), "ns", "web-1"), "10.0.0.5", False)
    [es] = _slices(api, ctl)
    assert _ips(es) == {"10.0.0.5": False, "10.0.0.6": True}
    assert es["endpoints"][0]["conditions"] == {
        "ready": False,
        "serving": False,
        "terminating": False,
    }
    pods = _rt(api, "/pods")
    labelled = copy.deepcopy(api.require(pods, "ns", "web-2"))
    labelled["metadata"]["labels"] = {"app": "other"}
    api.update(pods, api.require(pods, "ns", "web-2"), labelled, "", WriteOptions())
    assert _ips(_slices(api, ctl)[0]) == {"10.0.0.5": False}
    api.delete(pods, "ns", pod["metadata"]["name"], DeleteOptions(grace=0))
    [es] = _slices(api, ctl)
    assert es.get("endpoints") is None and es.get("ports") is None


def test_publish_not_ready_and_terminating(api: Api, ctl: Controllers) -> None:
    api.create(_rt(api, "/services"), "v1", "ns", _service(publishNotReadyAddresses=True))
    _pod(api, "web-1", "10.0.0.5", ready=False)
    _pod(api, "ghost", "10.0.0.9", node="no-such-node")
    assert _ips(_slices(api, ctl)[0]) == {"10.0.0.5": True, "10.0.0.9": True}
    api.create(_rt(api, "/services"), "v1", "ns", _service("strict"))
    assert _ips(_slices(api, ctl, "strict")[0]) == {"10.0.0.5": False}  # ghost's node missing
    pods = _rt(api, "/pods")
    api.delete(pods, "ns", "web-1", DeleteOptions(grace=30))
    [es] = _slices(api, ctl, "strict")
    assert es["endpoints"][0]["conditions"] == {
        "ready": False,
        "serving": False,
        "terminating": True,
    }


def test_named_ports_split_slices_and_service_changes(api: Api, ctl: Controllers) -> None:
    services = _rt(api, "/services")
    svc = api.create(services, "v1", "ns", _service())
    _pod(api, "web-1", "10.0.0.5", port=8080)
    _pod(api, "web-2", "10.0.0.6", port=9090)
    slices = _slices(api, ctl)
    assert [(s["ports"][0]["port"], _ips(s)) for s in slices] == [
        (8080, {"10.0.0.5": True}),
        (9090, {"10.0.0.6": True}),
    ]
    new = copy.deepcopy(svc)
    new["spec"]["ports"] = [{"port": 80, "targetPort": 7000, "protocol": "UDP"}]
    new["metadata"]["labels"] = {"team": "b"}
    api.update(services, svc, new, "", WriteOptions())
    [es] = _slices(api, ctl)
    assert es["ports"] == [{"name": "", "protocol": "UDP", "port": 7000}]
    assert es["metadata"]["labels"]["team"] == "b"
    assert _ips(es) == {"10.0.0.5": True, "10.0.0.6": True}


def test_tampered_slice_restored_and_gc_with_service(api: Api, ctl: Controllers) -> None:
    services, slices_rt = _rt(api, "/services"), _rt(api, SLICES)
    api.create(services, "v1", "ns", _service())
    _pod(api, "web-1", "10.0.0.5")
    [es] = _slices(api, ctl)
    api.delete(slices_rt, "ns", es["metadata"]["name"], DeleteOptions())
    [again] = _slices(api, ctl)
    assert _ips(again) == {"10.0.0.5": True}
    api.delete(services, "ns", "web", DeleteOptions())
    assert _slices(api, ctl) == []


def test_selectorless_and_headless(api: Api, ctl: Controllers) -> None:
    services = _rt(api, "/services")
    api.create(services, "v1", "ns", _service("manual", selector=None))
    api.create(services, "v1", "ns", _service("hl", clusterIP="None"))
    _pod(api, "web-1", "10.0.0.5")
    assert _slices(api, ctl, "manual") == []
    [es] = _slices(api, ctl, "hl")
    assert es["metadata"]["labels"]["service.kubernetes.io/headless"] == ""


def test_resync_makes_slices_for_objects_loaded_without_events(api: Api) -> None:
    """Objects that predate the controllers (a store loaded from a snapshot)."""
    api.create(_rt(api, "/namespaces"), "v1", "", {"metadata": {"name": "ns"}})
    api.create(_rt(api, "/nodes"), "v1", "", {"metadata": {"name": "n1"}})
    api.create(_rt(api, "/services"), "v1", "ns", _service())
    _pod(api, "web-1", "10.0.0.5")
    ctl = Controllers(api)
    assert _slices(api, ctl) == []
    ctl.resync_endpoint_slices()
    assert _ips(_slices(api, ctl)[0]) == {"10.0.0.5": True}
