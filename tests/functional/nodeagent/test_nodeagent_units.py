"""Pure pieces of the node agent: netns names, CNI config loading, results, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuryr_k8s.sandbox.nodeagent import netns_name
from kuryr_k8s.sandbox.nodeagent.cni import (
    CniError,
    CniRuntime,
    NetworkList,
    NoNetworkConfig,
    RuntimeConf,
    load_network_list,
    pod_ips,
)

pytestmark = pytest.mark.unit


def test_netns_names_are_unambiguous_bounded_and_stable() -> None:
    assert netns_name("a-b", "c", "u1") != netns_name("a", "b-c", "u1")
    assert netns_name("ns", "p", "u1") != netns_name("ns", "p", "u2")
    assert netns_name("ns", "p", "u1") == netns_name("ns", "p", "u1")
    assert netns_name("ns", "p", "u1").startswith("kuryr-ns-p-")
    long = netns_name("n" * 63, "p" * 253, "u")
    assert len(long) <= 55 and long.startswith("kuryr-nnn")


def test_first_conflist_in_lexicographic_order(tmp_path: Path) -> None:
    with pytest.raises(NoNetworkConfig, match="no network config found"):
        load_network_list(tmp_path)
    conf = {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "x"}]}
    (tmp_path / "20-b.conflist").write_text(json.dumps(conf))
    (tmp_path / "10-a.conflist").write_text(json.dumps({**conf, "name": "a"}))
    (tmp_path / "00-ignored.conf").write_text(json.dumps(conf))
    net = load_network_list(tmp_path)
    assert (net.name, net.path.name) == ("a", "10-a.conflist")


@pytest.mark.parametrize(
    "content", ["not json", '{"name": "x", "cniVersion": "1.0.0", "plugins": [{}]}', "{}"]
)
def test_invalid_conflist_names_the_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "10-bad.conflist").write_text(content)
    with pytest.raises(NoNetworkConfig, match="10-bad.conflist"):
        load_network_list(tmp_path)


def test_pod_ips_first_of_each_family_on_sandbox_interfaces() -> None:
    result = {
        "interfaces": [{"name": "host"}, {"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [
            {"address": "192.168.0.1/24", "interface": 0},
            {"address": "10.0.0.5/24", "interface": 1},
            {"address": "fd00::5/64", "interface": 1},
            {"address": "10.0.0.6/24", "interface": 1},
            {"address": "10.9.9.9/24"},
        ],
    }
    assert pod_ips(result) == ["10.0.0.5", "fd00::5"]
    assert pod_ips({}) == []


def test_cni_args_carry_the_pod_identity() -> None:
    rt = RuntimeConf("cid", Path("/var/run/netns/n"), "eth0", "ns", "p", "uid")
    assert rt.cni_args() == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;"
        "K8S_POD_INFRA_CONTAINER_ID=cid;K8S_POD_UID=uid"
    )


def _plugin(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.mark.parametrize(
    ("script", "code", "text"),
    [
        (
            'echo \'{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"}\'; exit 1\n',
            7,
            'plugin type="p" failed (add): bad: why',
        ),
        ("echo oops >&2; exit 3\n", 999, "exit status 3: oops"),
        ("echo '[1]'\n", 999, "result is not a JSON object"),
    ],
)
async def test_plugin_failures_become_cni_errors(
    tmp_path: Path, script: str, code: int, text: str
) -> None:
    _plugin(tmp_path, "p", script)
    runtime = CniRuntime(tmp_path, (tmp_path,), timeout=10)
    net = NetworkList(tmp_path / "x.conflist", "n", "1.0.0", ({"type": "p"},))
    rt = RuntimeConf("cid", tmp_path / "ns", "eth0", "ns", "p", "uid")
    with pytest.raises(CniError) as err:
        await runtime.add(rt, net)
    assert err.value.code == code and text in str(err.value)


async def test_missing_plugin_and_timeout(tmp_path: Path) -> None:
    _plugin(tmp_path, "slow", "sleep 30\n")
    runtime = CniRuntime(tmp_path, (tmp_path / "nowhere", tmp_path), timeout=0.5)
    rt = RuntimeConf("cid", tmp_path / "ns", "eth0", "ns", "p", "uid")
    missing = NetworkList(tmp_path / "x.conflist", "n", "1.0.0", ({"type": "absent"},))
    with pytest.raises(CniError, match="failed to find plugin in path"):
        await runtime.add(rt, missing)
    slow = NetworkList(tmp_path / "x.conflist", "n", "1.0.0", ({"type": "slow"},))
    with pytest.raises(CniError, match="timed out") as err:
        await runtime.delete(rt, slow, None)
    assert err.value.code == 11
