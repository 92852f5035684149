"""The plugin's side of the CNI spec, in-process: environment, config, versions, errors.

The daemon is replaced by a function (``call=``) that records the request it would have
sent; tests assert on stdout (the spec's JSON), the exit status and that request.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuryr_k8s.cni import spec
from kuryr_k8s.cni.plugin import Dispatcher

pytestmark = pytest.mark.unit

CONF = {"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni"}


class FakeDaemon:
    def __init__(self, answer: dict[str, Any] | None = None, error: spec.CniError | None = None):
        self.answer = answer
        self.error = error
        self.requests: list[tuple[str, dict[str, Any], float]] = []

    def __call__(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        self.requests.append((path, body, timeout))
        if self.error:
            raise self.error
        return self.answer


def run(
    env: dict[str, str], stdin: str | dict[str, Any], daemon: FakeDaemon | None = None
) -> tuple[int, Any, FakeDaemon]:
    daemon = daemon or FakeDaemon({"cniVersion": "1.0.0", "interfaces": [], "ips": []})
    text = stdin if isinstance(stdin, str) else json.dumps(stdin)
    out, err = io.StringIO(), io.StringIO()
    rc = Dispatcher(env, io.StringIO(text), out, err, call=daemon).run()
    doc = json.loads(out.getvalue()) if out.getvalue() else None
    return rc, doc, daemon


def add_env(netns: str, **extra: str) -> dict[str, str]:
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-a;K8S_POD_UID=u1",
        "CNI_PATH": "/opt/cni/bin",
    }
    env.update(extra)
    return env


@pytest.fixture
def netns(tmp_path: Any) -> str:
    path = tmp_path / "netns"
    path.write_text("")
    return str(path)


def test_version_answers_without_the_daemon() -> None:
    rc, doc, daemon = run({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert rc == 0
    assert doc == {"cniVersion": "0.4.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)}
    assert daemon.requests == []


def test_version_with_empty_stdin_reports_latest() -> None:
    rc, doc, _ = run({"CNI_COMMAND": "VERSION"}, "")
    assert rc == 0 and doc["cniVersion"] == spec.LATEST_VERSION


def test_add_sends_a_v1_request_and_prints_the_daemon_result(netns: str) -> None:
    conf = {**CONF, "daemonSocket": "/tmp/x.sock", "timeout": 12}
    rc, doc, daemon = run(add_env(netns), conf)
    assert rc == 0
    assert doc == {"cniVersion": "1.0.0", "interfaces": [], "ips": []}
    ((path, body, timeout),) = daemon.requests
    assert (path, timeout) == ("/tmp/x.sock", 12.0)
    assert body["command"] == "ADD" and body["containerId"] == "c0ffee"
    assert body["args"]["K8S_POD_NAME"] == "pod-a" and body["config"] == conf


@pytest.mark.parametrize(
    ("env_change", "code", "words"),
    [
        ({"CNI_COMMAND": "FROB"}, spec.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_COMMAND": ""}, spec.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_CONTAINERID": ""}, spec.INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "bad id!"}, spec.INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": ""}, spec.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_IFNAME": "eth0/x"}, spec.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a-very-long-ifname"}, spec.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_NETNS": ""}, spec.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({"CNI_NETNS": "relative/ns"}, spec.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({"CNI_NETNS": "/nonexistent/netns"}, spec.UNKNOWN_CONTAINER, "does not exist"),
        ({"CNI_ARGS": "K8S_POD_NAMESPACE=ns"}, spec.INVALID_ENVIRONMENT, "K8S_POD_NAME"),
        ({"CNI_ARGS": "garbage"}, spec.INVALID_ENVIRONMENT, "CNI_ARGS"),
    ],
)
def test_bad_environment_is_a_precise_error_and_never_reaches_the_daemon(
    netns: str, env_change: dict[str, str], code: int, words: str
) -> None:
    rc, doc, daemon = run(add_env(netns, **env_change), CONF)
    assert rc != 0
    assert doc["code"] == code
    assert words in doc["msg"] + doc.get("details", "")
    assert daemon.requests == []


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        ("{not json", spec.DECODE_FAILURE),
        ("[1, 2]", spec.DECODE_FAILURE),
        ("", spec.DECODE_FAILURE),
        (json.dumps({"name": "kuryr"}), spec.INCOMPATIBLE_VERSION),
        (json.dumps({**CONF, "cniVersion": "0.2.0"}), spec.INCOMPATIBLE_VERSION),
        (json.dumps({**CONF, "cniVersion": "banana"}), spec.INCOMPATIBLE_VERSION),
        (json.dumps({**CONF, "cniVersion": 1}), spec.DECODE_FAILURE),
        (json.dumps({**CONF, "name": ""}), spec.INVALID_NETWORK_CONFIG),
        (json.dumps({**CONF, "timeout": -1}), spec.INVALID_NETWORK_CONFIG),
        (json.dumps({**CONF, "daemonSocket": 5}), spec.INVALID_NETWORK_CONFIG),
    ],
)
def test_bad_config_is_a_precise_error(netns: str, stdin: str, code: int) -> None:
    rc, doc, daemon = run(add_env(netns), stdin)
    assert rc != 0 and doc["code"] == code and doc["msg"]
    assert daemon.requests == []


def test_del_needs_no_netns_and_no_pod_identity() -> None:
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0"}
    rc, doc, daemon = run(env, CONF, FakeDaemon(None))
    assert rc == 0 and doc is None
    assert daemon.requests[0][1]["netns"] == ""


def test_check_needs_040_and_prev_result(netns: str) -> None:
    env = add_env(netns, CNI_COMMAND="CHECK")
    rc, doc, _ = run(env, {**CONF, "cniVersion": "0.3.1", "prevResult": {}})
    assert rc != 0 and doc["code"] == spec.INCOMPATIBLE_VERSION
    rc, doc, _ = run(env, CONF)
    assert rc != 0 and doc["code"] == spec.INVALID_NETWORK_CONFIG
    rc, doc, _ = run(env, {**CONF, "prevResult": {"ips": []}}, FakeDaemon(None))
    assert rc == 0 and doc is None


def test_status_and_gc_need_110() -> None:
    rc, doc, _ = run({"CNI_COMMAND": "STATUS"}, CONF)
    assert rc != 0 and doc["code"] == spec.INCOMPATIBLE_VERSION
    conf = {**CONF, "cniVersion": "1.1.0"}
    rc, doc, _ = run({"CNI_COMMAND": "STATUS"}, conf, FakeDaemon(None))
    assert rc == 0 and doc is None
    rc, doc, _ = run({"CNI_COMMAND": "GC"}, conf)
    assert rc != 0 and doc["code"] == spec.INVALID_NETWORK_CONFIG
    gc_conf = {**conf, "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    rc, doc, daemon = run({"CNI_COMMAND": "GC"}, gc_conf, FakeDaemon(None))
    assert rc == 0 and daemon.requests[0][1]["command"] == "GC"


def test_daemon_errors_are_printed_with_the_callers_version(netns: str) -> None:
    daemon = FakeDaemon(error=spec.CniError(spec.TRY_AGAIN_LATER, "not yet", "VIF missing"))
    rc, doc, _ = run(add_env(netns), {**CONF, "cniVersion": "0.4.0"}, daemon)
    assert rc != 0
    assert doc == {"cniVersion": "0.4.0", "code": 11, "msg": "not yet", "details": "VIF missing"}


def test_a_bug_in_the_caller_still_answers_spec_json(netns: str) -> None:
    class Broken(FakeDaemon):
        def __call__(self, path: str, body: dict[str, Any], timeout: float) -> None:
            raise RuntimeError("boom")

    rc, doc, _ = run(add_env(netns), CONF, Broken())
    assert rc != 0 and doc["code"] == spec.INTERNAL and "boom" in doc["details"]


ENV_KEYS = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
configs = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "cniVersion": st.sampled_from([*spec.SUPPORTED_VERSIONS, "0.2.0", "x", ""]),
            "name": st.text(max_size=10),
            "timeout": json_values,
            "daemonSocket": json_values,
            "prevResult": json_values,
            "cni.dev/valid-attachments": json_values,
        },
    ).map(json.dumps),
)
envs = st.dictionaries(
    st.sampled_from(ENV_KEYS),
    st.one_of(
        st.sampled_from([*spec.COMMANDS, "ADD", "DEL", "/proc/self/ns/net", "eth0", "c1"]),
        st.text(max_size=30),
    ),
)


@settings(max_examples=400, deadline=None)
@given(env=envs, stdin=configs)
def test_fuzzed_input_never_crashes_and_always_answers_spec_json(
    env: dict[str, str], stdin: str
) -> None:
    daemon = FakeDaemon(None)
    rc, doc, _ = run(env, stdin, daemon)
    assert rc in (0, 1)
    if rc:
        assert isinstance(doc["code"], int) and doc["code"] != spec.INTERNAL
        assert isinstance(doc["msg"], str) and doc["msg"]
        assert doc["cniVersion"] in spec.SUPPORTED_VERSIONS
    for _, body, _ in daemon.requests:
        assert body["command"] in spec.COMMANDS and body["command"] != "VERSION"
