"""Port changes from many threads at once on the sandbox's real OVSDB and ovs-vswitchd
(userspace datapath): every port lands with its external_ids, in fewer vswitchd
reconfigurations than ports (group commit), and a change OVSDB refuses fails only its
own caller. The ports sit on a bridge of the test's own, named after its node."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator

import pytest

from functional.cni.conftest import HostScope
from kuryr_k8s.cni.errors import HostError
from kuryr_k8s.cni.host.ovs import Ovsdb

pytestmark = pytest.mark.functional

N = 24


def vsctl(ovsdb: Ovsdb, *args: str) -> str:
    db = ovsdb.connection
    out = subprocess.run(["ovs-vsctl", f"--db={db}", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def bridge(host: HostScope) -> Iterator[str]:
    name = f"brk-{host.node[-8:]}"
    vsctl(host.ovsdb, "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev")
    links = [f"kg{host.node[-6:]}{i}" for i in range(N)]
    try:
        for link in links:
            subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"],
                           check=True)  # fmt: skip
        yield name
    finally:
        for link in links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        vsctl(host.ovsdb, "--if-exists", "del-br", name)


def test_ports_added_by_many_threads_land_in_fewer_reconfigurations(
    host: HostScope, bridge: str
) -> None:
    ovsdb = host.ovsdb
    names = [f"kg{host.node[-6:]}{i}" for i in range(N)]
    ovsdb.has_interface("warm-up")  # connect before the clock starts
    before = int(vsctl(ovsdb, "get", "Open_vSwitch", ".", "cur_cfg"))
    errors: list[Exception] = []
    gate = threading.Barrier(N)

    def add(i: int) -> None:
        gate.wait()
        try:
            ovsdb.ensure_port(bridge, names[i], {"kuryr-test": host.node, "n": str(i)})
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    after = int(vsctl(ovsdb, "get", "Open_vSwitch", ".", "cur_cfg"))
    assert errors == []
    for i, name in enumerate(names):
        iface = ovsdb.interface(name)
        assert iface is not None and iface.bridge == bridge
        assert iface.external_ids == {"kuryr-test": host.node, "n": str(i)}
    assert 0 < after - before < N / 2, f"{after - before} reconfigurations for {N} ports"

    gate = threading.Barrier(N)

    def delete(i: int) -> None:
        gate.wait()
        ovsdb.delete_port(names[i])

    threads = [threading.Thread(target=delete, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [n for n in names if ovsdb.interface(n) is not None] == []


def test_a_port_ovsdb_refuses_fails_only_its_caller(host: HostScope, bridge: str) -> None:
    ovsdb = host.ovsdb
    good = [f"kg{host.node[-6:]}{i}" for i in range(6)]
    outcome: dict[str, Exception | None] = {}
    jobs = [(name, bridge) for name in good] + [("kg-nobridge", f"{bridge}-missing")]
    gate = threading.Barrier(len(jobs))

    def add(name: str, br: str) -> None:
        gate.wait()
        try:
            ovsdb.ensure_port(br, name, {"kuryr-test": host.node})
            outcome[name] = None
        except Exception as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=add, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    error = outcome.pop("kg-nobridge")
    assert isinstance(error, HostError) and f"{bridge}-missing" in str(error)
    assert outcome == {name: None for name in good}
    assert ovsdb.interface("kg-nobridge") is None
    for name in good:
        ovsdb.delete_port(name)
