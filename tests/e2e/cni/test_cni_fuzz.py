"""Fuzzed runtime input to the installed plugin with a live daemon: never a crash (always
the spec's JSON and exit status), never an internal error, never residue on the host.

Inputs mix valid and broken parts: real pod identities and netns, nonexistent ones,
garbage strings, and malformed or unusual network configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functional.cni.conftest import HostScope
from functional.cni.harness import Cluster, Daemon, Runtime
from kuryr_k8s.cni import spec

pytestmark = pytest.mark.e2e

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)


def test_fuzzed_runtime_input(
    cni_dirs: Runtime,
    daemon_factory: Callable[..., Daemon],
    cluster: Cluster,
    host: HostScope,
) -> None:
    daemon_factory(vif_timeout=0.5, ready_timeout=5)
    pod = cluster.pod("pod-fuzz", with_vif=False)
    ready = cluster.pod("pod-ready")  # ADDs for it may succeed: each is DELeted again
    netns_values = st.sampled_from([pod.netns, ready.netns, "/var/run/netns/none", ""]) | text
    container_ids = st.sampled_from(["c1", pod.container_id, "", "bad id"]) | text
    pods = st.sampled_from(
        [pod.ident, ready.ident, (cluster.namespace, "ghost", ""), ("", "", "")]
    ) | st.tuples(text, text, text)
    configs = st.fixed_dictionaries(
        {
            "cniVersion": st.sampled_from([*spec.SUPPORTED_VERSIONS, "1.1.0", "0.1.0", "9"]),
            "name": st.sampled_from(["kuryr", "kuryr", ""]) | text,
        },
        optional={
            "timeout": st.sampled_from([1, 0, -1, "x", None, 2.5]),
            "prevResult": st.sampled_from([{}, {"ips": [{"address": "10.0.0.1/24"}]}, [], None]),
            "cni.dev/valid-attachments": st.sampled_from(
                [[], [{"containerID": "c1", "ifname": "eth0"}], "x", [{"x": 1}]]
            ),
        },
    )

    valid = {
        "command": "ADD",
        "container_id": ready.container_id,
        "netns": ready.netns,
        "ifname": "eth0",
        "who": ready.ident,
        "config": {},
        "raw": None,
    }
    fuzzed = {
        "command": st.sampled_from([*spec.COMMANDS, "", "add"]),
        "container_id": container_ids,
        "netns": netns_values,
        "ifname": st.sampled_from(["eth0", "", "x" * 16, "a/b"]) | text,
        "who": pods,
        "config": configs,
        "raw": text,
    }

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        broken=st.lists(st.sampled_from(sorted(fuzzed)), max_size=3, unique=True),
        data=st.data(),
    )
    def one(broken: list[str], data: st.DataObject) -> None:
        """A valid ADD of a ready pod with some parts (``broken``) replaced by fuzz."""
        req: dict[str, Any] = dict(valid)
        for part in broken:
            req[part] = data.draw(fuzzed[part], label=part)
        command = str(req["command"])
        try:
            rc, out = cni_dirs.exec(
                "VERSION" if command == "" else command,
                container_id=req["container_id"],
                netns=req["netns"],
                ifname=req["ifname"],
                pod=req["who"],
                config=req["config"],
                stdin=req["raw"],
                env={"CNI_COMMAND": command},
            )
        except ValueError as exc:  # an env value the OS refuses (NUL byte): not our input
            assert "null byte" in str(exc)
            return
        if rc != 0:
            assert out["code"] != spec.INTERNAL, out
            assert out["msg"], out
        elif command == "ADD":
            plugged.append(command)
            rc, out = cni_dirs.exec(
                "DEL",
                container_id=req["container_id"],
                netns=req["netns"],
                ifname=req["ifname"],
                pod=req["who"],
            )
            assert (rc, out) == (0, None)
        assert host.residue(netns=False) == {}, req

    plugged: list[str] = []
    one()
    assert plugged, "no fuzzed ADD succeeded: the generator lost the valid request"
    assert host.residue(netns=False) == {}
