"""The node agent with real network namespaces and a real CNI plugin (needs root)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from functional.nodeagent.helpers import (
    Agents,
    CniSetup,
    eventually,
    lo_is_up,
    netns_inode,
    netns_list,
    resolv_conf,
)
from kuryr_k8s.k8s import EVENTS, NODES, PODS, KubeClient, NotFound
from kuryr_k8s.k8s import objects as o
from kuryr_k8s.sandbox.nodeagent import exec_in_pod, find_sandbox

pytestmark = pytest.mark.functional


def pod_body(name: str, namespace: str) -> o.Obj:
    container = {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"containers": [container]}}


async def get_or_none(kube: KubeClient, name: str, namespace: str) -> o.Obj | None:
    try:
        return await kube.get(PODS, name, namespace)
    except NotFound:
        return None


async def running(kube: KubeClient, name: str, namespace: str) -> o.Obj | None:
    pod = await get_or_none(kube, name, namespace)
    if pod and (pod.get("status") or {}).get("phase") == "Running":
        return pod
    return None


def addresses_in(netns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    )
    [link] = json.loads(out.stdout)
    return [a["local"] for a in link["addr_info"] if a["family"] == "inet"]


def netns_of(state: Path, namespace: str, name: str) -> str:
    return find_sandbox(namespace, name, state_dir=state).netns


async def test_pod_lifecycle(
    kube: KubeClient, namespace: str, agents: Agents, cni: CniSetup
) -> None:
    agent = await agents.start()
    node = agent.config.nodes[0]
    state = agent.config.state_dir

    node_obj = await kube.get(NODES, node)
    ready = {c["type"]: c["status"] for c in node_obj["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert {"type": "InternalIP", "address": "192.0.2.10"} in node_obj["status"]["addresses"]

    await kube.create(PODS, pod_body("web", namespace))
    pod = await eventually(lambda: running(kube, "web", namespace), what="pod Running")

    # Scheduled by the agent, sandboxed in a netns with the plugin's address on eth0.
    assert pod["spec"]["nodeName"] == node
    netns = netns_of(state, namespace, "web")
    assert netns in netns_list()
    [ip] = addresses_in(netns)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(cni.subnet)
    assert lo_is_up(netns)
    assert resolv_conf(netns) == ""

    # The status a kubelet would write.
    status = pod["status"]
    assert status["podIP"] == ip and status["podIPs"] == [{"ip": ip}]
    assert status["hostIP"] == "192.0.2.10"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert conditions[kind] == "True"
    [cs] = status["containerStatuses"]
    assert cs["name"] == "main" and cs["ready"] is True and cs["started"] is True
    assert cs["state"]["running"]["startedAt"]

    # The CNI calls, as a runtime makes them. Under load an ADD may fail and be retried (a
    # runtime must DEL every plugin of the list before it retries): allow that, and nothing
    # else, before the pair that succeeded.
    # Only this pod's calls: on a shared API the agent also runs other pods left pending.
    calls = _calls_of(cni, namespace, "web")
    commands = [(c["command"], c["stdin"]["type"]) for c in calls]
    assert len(calls) >= 2, commands
    *earlier, add_veth, add_pass = calls
    assert not earlier or commands[len(earlier) - 1][0] == "DEL", commands
    uid = o.uid(pod)
    for call in (add_veth, add_pass):
        env = call["env"]
        assert call["command"] == "ADD"
        assert env["CNI_NETNS"] == f"/var/run/netns/{netns}"
        assert env["CNI_IFNAME"] == "eth0"
        assert env["CNI_PATH"] == str(cni.bin_dir)
        args = dict(kv.split("=", 1) for kv in env["CNI_ARGS"].split(";"))
        assert args["K8S_POD_NAMESPACE"] == namespace and args["K8S_POD_NAME"] == "web"
        assert args["K8S_POD_UID"] == uid
        assert args["K8S_POD_INFRA_CONTAINER_ID"] == env["CNI_CONTAINERID"]
        assert call["stdin"]["name"] == "kuryr-test" and call["stdin"]["cniVersion"] == "1.0.0"
    assert add_veth["stdin"]["type"] == "kuryr-test-veth" and "prevResult" not in add_veth["stdin"]
    veth_result = add_pass["stdin"]["prevResult"]
    assert veth_result["ips"] == [{"address": f"{ip}/24", "interface": 1}]

    # exec runs inside the pod's netns.
    done = exec_in_pod(
        namespace,
        "web",
        ["ip", "-o", "-4", "addr", "show", "eth0"],
        state_dir=state,
        capture_output=True,
    )
    assert done.returncode == 0 and f"{ip}/24" in done.stdout.decode()
    # The host reaches the pod through the plugin's veth.
    ping = exec_in_pod(
        namespace, "web", ["ping", "-c1", "-W2", ip], state_dir=state, capture_output=True
    )
    assert ping.returncode == 0, ping.stdout

    # Deletion: CNI DEL in reverse order with the cached result, netns removed, pod gone.
    await kube.delete(PODS, "web", namespace)
    await eventually(lambda: _gone(kube, "web", namespace), what="pod deleted")
    await eventually(lambda: _async(netns not in netns_list()), what="netns removed")
    del_pass, del_veth = _calls_of(cni, namespace, "web")[len(calls) :]
    assert (del_pass["command"], del_pass["stdin"]["type"]) == ("DEL", "kuryr-test-passthrough")
    assert (del_veth["command"], del_veth["stdin"]["type"]) == ("DEL", "kuryr-test-veth")
    assert del_veth["stdin"]["prevResult"] == veth_result
    assert resolv_conf(netns) is None
    # the test plugin's IPAM keeps no address of this pod (others' pods may hold some)
    held = json.loads((cni.data_dir / "ips.json").read_text())
    assert add_veth["env"]["CNI_CONTAINERID"] not in held.values(), held
    assert not [r for r in agent.records.all() if r.name == "web" and r.namespace == namespace]


async def test_cni_failure_is_an_event_and_retried(
    kube: KubeClient, namespace: str, agents: Agents, cni: CniSetup
) -> None:
    cni.fail_file.write_text("the network is not ready yet")
    await agents.start()
    await kube.create(PODS, pod_body("flaky", namespace))

    async def warning() -> o.Obj | None:
        for ev in (await kube.list_all(EVENTS, namespace)).items:
            if ev.get("reason") == "FailedCreatePodSandBox":
                return ev
        return None

    ev = await eventually(warning, what="FailedCreatePodSandBox event")
    assert ev["type"] == "Warning"
    assert ev["involvedObject"]["name"] == "flaky"
    assert "the network is not ready yet" in ev["message"]
    assert "kuryr-test-veth" in ev["message"]
    # The failed ADD was cleaned up with DEL of the whole list, in reverse.
    flaky = partial(_calls_of, cni, namespace, "flaky")
    await eventually(lambda: _async(len(flaky()) >= 3), what="the DEL after the failed ADD")
    commands = [(c["command"], c["stdin"]["type"]) for c in flaky()[:3]]
    assert commands == [
        ("ADD", "kuryr-test-veth"),
        ("DEL", "kuryr-test-passthrough"),
        ("DEL", "kuryr-test-veth"),
    ]

    # Meanwhile the pod shows what kubelet shows: Pending, ContainerCreating.
    async def pending() -> o.Obj | None:
        found = await kube.get(PODS, "flaky", namespace)
        return found if found.get("status", {}).get("containerStatuses") else None

    pod = await eventually(pending, what="ContainerCreating status")
    assert pod["status"]["phase"] == "Pending"
    [waiting] = pod["status"]["containerStatuses"]
    assert waiting["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert waiting["ready"] is False
    # Retried with backoff; the repeats aggregate into the event's count.
    await eventually(lambda: _count_events(kube, namespace, 2), what="repeated events counted")
    assert not await running(kube, "flaky", namespace)

    cni.fail_file.unlink()
    await eventually(lambda: running(kube, "flaky", namespace), what="pod Running after retry")
    await kube.delete(PODS, "flaky", namespace)
    await eventually(lambda: _gone(kube, "flaky", namespace), what="pod deleted")


async def test_restart_keeps_running_pods_and_collects_vanished_ones(
    kube: KubeClient, namespace: str, agents: Agents, cni: CniSetup
) -> None:
    agent = await agents.start()
    state = agent.config.state_dir
    for name in ("keep", "vanish"):
        await kube.create(PODS, pod_body(name, namespace))
    await eventually(lambda: running(kube, "keep", namespace), what="keep Running")
    await eventually(lambda: running(kube, "vanish", namespace), what="vanish Running")
    keep_ns, vanish_ns = netns_of(state, namespace, "keep"), netns_of(state, namespace, "vanish")
    keep_inode = netns_inode(keep_ns)
    [keep_ip] = addresses_in(keep_ns)
    await agents.stop_all()

    # While the agent is down, "vanish" is deleted for good (no one finishes it otherwise).
    await kube.delete(PODS, "vanish", namespace, grace_period_seconds=0)
    await eventually(lambda: _gone(kube, "vanish", namespace), what="vanish deleted")
    ours = [c for n in ("keep", "vanish") for c in _calls_of(cni, namespace, n)]
    adds_before = sum(1 for c in ours if c["command"] == "ADD")

    await agents.start()
    await eventually(lambda: _async(vanish_ns not in netns_list()), what="vanished netns removed")
    assert netns_inode(keep_ns) == keep_inode
    assert addresses_in(keep_ns) == [keep_ip]
    assert await running(kube, "keep", namespace)
    ours = [c for n in ("keep", "vanish") for c in _calls_of(cni, namespace, n)]
    assert sum(1 for c in ours if c["command"] == "ADD") == adds_before
    await kube.delete(PODS, "keep", namespace)
    await eventually(lambda: _async(keep_ns not in netns_list()), what="keep netns removed")


async def test_missing_network_config_waits_for_it(
    kube: KubeClient, namespace: str, agents: Agents, cni: CniSetup, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-net.d"
    empty.mkdir()
    await agents.start(cni_conf_dir=empty)
    await kube.create(PODS, pod_body("waits", namespace))

    async def warned() -> bool:
        evs = (await kube.list_all(EVENTS, namespace)).items
        return any("no network config found" in str(e.get("message")) for e in evs)

    await eventually(warned, what="event about the missing config")
    for conf in cni.conf_dir.glob("*.conflist"):
        (empty / conf.name).write_text(conf.read_text())
    await eventually(lambda: running(kube, "waits", namespace), what="pod Running")
    await kube.delete(PODS, "waits", namespace)
    await eventually(lambda: _gone(kube, "waits", namespace), what="pod deleted")


async def test_pods_of_other_nodes_and_schedulers_are_left_alone(
    kube: KubeClient, namespace: str, agents: Agents
) -> None:
    await agents.start()
    other = pod_body("elsewhere", namespace)
    other["spec"]["nodeName"] = "some-other-node"
    custom = pod_body("custom", namespace)
    custom["spec"]["schedulerName"] = "my-scheduler"
    mine = pod_body("mine", namespace)
    for body in (other, custom, mine):
        await kube.create(PODS, body)
    await eventually(lambda: running(kube, "mine", namespace), what="own pod Running")
    assert (await kube.get(PODS, "custom", namespace))["spec"].get("nodeName") in (None, "")
    assert (await kube.get(PODS, "elsewhere", namespace)).get("status", {}).get("phase") != (
        "Running"
    )
    for name in ("elsewhere", "custom", "mine"):
        await kube.delete(PODS, name, namespace, grace_period_seconds=0)
    await eventually(lambda: _gone(kube, "mine", namespace), what="pod deleted")


async def _gone(kube: KubeClient, name: str, namespace: str) -> bool:
    return await get_or_none(kube, name, namespace) is None


async def _async(value: Any) -> Any:
    return value


async def _count_events(kube: KubeClient, namespace: str, at_least: int) -> bool:
    evs = (await kube.list_all(EVENTS, namespace)).items
    return any(
        e.get("reason") == "FailedCreatePodSandBox" and int(e.get("count", 0)) >= at_least
        for e in evs
    )


async def test_nodes_are_kept_alive_and_pods_spread_round_robin(
    kube: KubeClient, namespace: str, agents: Agents
) -> None:
    base = agents.base.nodes[0]
    nodes = (f"{base}-a", f"{base}-b")
    await agents.start(nodes=nodes)

    async def heartbeat(node: str) -> str:
        ready = [c for c in (await kube.get(NODES, node))["status"]["conditions"]]
        return str(next(c["lastHeartbeatTime"] for c in ready if c["type"] == "Ready"))

    first = await heartbeat(nodes[0])
    await eventually(
        lambda: _async_call(heartbeat(nodes[0]), lambda t: t != first), what="a new heartbeat"
    )
    await kube.delete(NODES, nodes[1])
    await eventually(lambda: _exists(kube, nodes[1]), what="deleted node registered again")

    for name in ("p1", "p2"):
        await kube.create(PODS, pod_body(name, namespace))
    placed = set()
    for name in ("p1", "p2"):
        pod = await eventually(partial(running, kube, name, namespace), what=f"{name} Running")
        placed.add(pod["spec"]["nodeName"])
    assert placed == set(nodes)
    for name in ("p1", "p2"):
        await kube.delete(PODS, name, namespace)
    for name in ("p1", "p2"):
        await eventually(partial(_gone, kube, name, namespace), what=f"{name} deleted")


async def _async_call(value: Awaitable[Any], check: Callable[[Any], bool]) -> bool:
    return check(await value)


async def _exists(kube: KubeClient, node: str) -> bool:
    try:
        await kube.get(NODES, node)
    except NotFound:
        return False
    return True


def _calls_of(cni: CniSetup, namespace: str, name: str) -> list[dict[str, Any]]:
    def pod(call: dict[str, Any]) -> tuple[str, str]:
        args = dict(kv.split("=", 1) for kv in call["env"]["CNI_ARGS"].split(";"))
        return args["K8S_POD_NAMESPACE"], args["K8S_POD_NAME"]

    return [c for c in cni.calls() if pod(c) == (namespace, name)]
