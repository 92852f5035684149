"""A real QEMU guest on the sandbox's br-int: its eth0 is a Neutron trunk parent port.

Timeouts are generous (software emulation; at least 10x the medians measured in
docs/sandbox-vm.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.traffic import TAG_SERVER, ns_run, tcp_request, tcp_server, wait_listening
from functional.vm.conftest import TEST_PORT, new_name, progress, residue
from kuryr_k8s.sandbox import vm as vms
from kuryr_k8s.sandbox.openstack import hostplug, topology
from kuryr_k8s.sandbox.process import SandboxError
from kuryr_k8s.sandbox.vm import hostnet, layout

pytestmark = pytest.mark.functional

GUEST_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(sys.argv[3].encode()); print(c.recv(65536).decode())
"""

BULK_SINK = """
import hashlib, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
conn, _ = srv.accept(); conn.settimeout(60); h = hashlib.sha256(); n = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    h.update(data); n += len(data)
conn.sendall(f"{n} {h.hexdigest()}".encode()); conn.close()
"""

BULK_SOURCE = """
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
c.sendall(data); c.shutdown(socket.SHUT_WR)
print(c.recv(200).decode(), len(data), hashlib.sha256(data).hexdigest())
"""


def _stand_in(neutron: NeutronTracker, sandbox: Sandbox, netns_factory: Any, sg: Any) -> Any:
    """A host network namespace on net0 (a plain Neutron port on br-int) as a peer."""
    port = neutron.port(
        sandbox.topo.net0_id,
        name="kt-vm-peer",
        device_owner="compute:kuryr",
        binding_host_id=sandbox.settings.hostname,
        security_group_ids=[sg.id],
    )
    subnet = sandbox.conn.network.get_subnet(port.fixed_ips[0]["subnet_id"])
    plugged: hostplug.Plugged = netns_factory(port, subnet)
    neutron.wait_port_status(port.id, "ACTIVE")
    return plugged


def test_eth0_is_the_port(worker: vms.Vm, vm_sandbox: Sandbox) -> None:
    net = vm_sandbox.conn.network
    port = net.get_port(worker.record.port_id)
    link = json.loads(worker.exec(["ip", "-j", "addr", "show", "dev", "eth0"], check=True).out)[0]
    addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"]}
    assert link["address"] == port.mac_address
    assert (port.fixed_ips[0]["ip_address"], 24) in addrs
    assert link["mtu"] == net.get_network(port.network_id).mtu == worker.record.mtu
    assert port.status == "ACTIVE"
    assert port.binding_host_id == vm_sandbox.settings.hostname
    assert port.device_owner == "compute:sandbox-vm"
    assert topology.TAG in port.tags
    trunk = net.get_trunk(worker.record.trunk_id)
    assert trunk.port_id == port.id
    ids = hostnet.ovs_external_ids(vm_sandbox.ctx, worker.record.tap)
    assert ids is not None
    assert ids["iface-id"] == port.id
    assert ids["attached-mac"] == port.mac_address
    assert ids["kuryr-vm"] == worker.name
    assert ids["kuryr-sandbox-id"] == layout.sandbox_id(vm_sandbox.ctx.paths.root)
    assert not [a for a in link["addr_info"] if a["family"] == "inet6"]  # IPv6 is off
    assert worker.exec(["hostname"], check=True).out.strip() == worker.name
    routes = worker.exec(["ip", "route"], check=True).out
    assert f"default via {worker.record.gateway} dev eth0" in routes
    assert "default" not in next(line for line in routes.splitlines() if "eth1" in line)


def test_guest_pings_router(worker: vms.Vm) -> None:
    res = worker.exec(["ping", "-c", "3", "-i", "0.3", "-w", "30", worker.record.gateway or ""])
    assert res.rc == 0, res.out + res.err


def test_guest_reaches_kubernetes_api_on_the_host(worker: vms.Vm) -> None:
    code = (
        "import json, urllib.request as u; "
        "print(json.load(u.urlopen('http://10.0.2.2:6443/version', timeout=30))['gitVersion'])"
    )
    res = worker.exec(["python3", "-c", code], timeout=120)
    assert res.rc == 0, res.err
    assert res.out.strip().startswith("v1.")


def test_tcp_both_ways_across_br_int(
    worker: vms.Vm, vm_sandbox: Sandbox, neutron: NeutronTracker, netns_factory: Any, vm_sg: Any
) -> None:
    """TCP leaving the VM needs finished checksums (vnet_hdr=off): small and bulk."""
    peer = _stand_in(neutron, vm_sandbox, netns_factory, vm_sg)
    ping = ns_run(peer.netns, "ping", "-c", "3", "-i", "0.3", "-w", "30", worker.record.ip)
    assert ping.returncode == 0, ping.stdout
    back = worker.exec(["ping", "-c", "3", "-i", "0.3", "-w", "30", peer.ip], timeout=120)
    assert back.rc == 0, back.out
    # guest -> host netns
    with tcp_server(peer.netns, peer.ip, TEST_PORT, tag="peer"):
        res = worker.exec(
            ["python3", "-c", GUEST_CLIENT, peer.ip, str(TEST_PORT), "from-vm"], timeout=120
        )
    assert res.rc == 0, res.err
    assert res.out.strip() == "peer:from-vm"
    # host netns -> guest
    worker.spawn("kt-server", f"python3 -c '{TAG_SERVER}' {worker.record.ip} {TEST_PORT} vm")
    try:
        _wait_guest_listening(worker, TEST_PORT)
        assert tcp_request(peer.netns, worker.record.ip, TEST_PORT, "to-vm") == "vm:to-vm"
    finally:
        worker.kill_process("kt-server")
    # 4 MB guest -> host netns, checked end to end
    with subprocess.Popen(
        ["ip", "netns", "exec", peer.netns, sys.executable, "-c", BULK_SINK, peer.ip, "8080"],
        stdout=subprocess.DEVNULL,
    ) as sink:
        try:
            wait_listening(peer.netns, TEST_PORT)
            t0 = time.monotonic()
            res = worker.exec(
                ["python3", "-c", BULK_SOURCE, peer.ip, str(TEST_PORT), str(4 << 20)], timeout=300
            )
            took = time.monotonic() - t0
        finally:
            sink.kill()
    assert res.rc == 0, res.err
    got_n, got_sha, sent_n, sent_sha = res.out.split()
    assert (got_n, got_sha) == (sent_n, sent_sha)
    progress(f"4 MiB guest -> netns over TCP in {took:.2f} s")


def _wait_guest_listening(vm: vms.Vm, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in vm.exec(["ss", "-ltnH"]).out:
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} in the VM: {vm.log_of('kt-server')}")


def test_vlan_subport_in_a_guest_netns(
    worker: vms.Vm, vm_sandbox: Sandbox, neutron: NeutronTracker
) -> None:
    """A real subport (VLAN 100) on the VM's trunk, terminated by the guest's 8021q in a
    netns, reaches router1 on net1; the host tap carries 802.1Q frames."""
    sb = vm_sandbox
    net = sb.conn.network
    sub = neutron.port(sb.topo.net1_id, name="kt-vm-subport")
    trunk = net.get_trunk(worker.record.trunk_id)
    net.add_trunk_subports(
        trunk, [{"port_id": sub.id, "segmentation_type": "vlan", "segmentation_id": 100}]
    )
    try:
        subnet1 = net.get_subnet(sb.topo.subnet1_id)
        prefix = subnet1.cidr.split("/")[1]
        worker.exec_sh(
            "set -e; ip netns add pod100; ip link add link eth0 name eth0.100 type vlan id 100; "
            f"ip link set eth0.100 netns pod100; ip -n pod100 link set eth0.100 address "
            f"{sub.mac_address} mtu {worker.record.mtu} up; ip -n pod100 link set lo up; "
            f"ip -n pod100 addr add {sub.fixed_ips[0]['ip_address']}/{prefix} dev eth0.100; "
            f"ip -n pod100 route add default via {subnet1.gateway_ip}",
            check=True,
        )
        neutron.wait_port_status(sub.id, "ACTIVE")
        with subprocess.Popen(
            ["tcpdump", "-e", "-n", "-l", "-i", worker.record.tap, "-c", "4", "vlan", "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as dump:
            time.sleep(1)  # tcpdump attaches
            res = worker.exec(
                ["ip", "netns", "exec", "pod100", "ping", "-c", "5", "-i", "0.3", "-w", "30",
                 subnet1.gateway_ip],
                timeout=120,
            )  # fmt: skip
            try:
                dump.wait(timeout=30)
            except subprocess.TimeoutExpired:
                dump.kill()
            assert dump.stdout is not None
            frames = dump.stdout.read()
        assert res.rc == 0, res.out + res.err
        assert "802.1Q" in frames and "vlan 100" in frames, frames
        # nested pod -> the VM's own address through router1 (net1 -> net0)
        back = worker.exec(
            ["ip", "netns", "exec", "pod100", "ping", "-c", "3", "-w", "30", worker.record.ip],
            timeout=120,
        )
        assert back.rc == 0, back.out
    finally:
        worker.exec_sh("ip netns del pod100 || true")
        net.delete_trunk_subports(trunk, [{"port_id": sub.id}])


def test_exec_push_spawn(worker: vms.Vm) -> None:
    res = worker.exec_sh("echo out; echo err >&2; exit 3")
    assert (res.rc, res.out, res.err) == (3, "out\n", "err\n")
    assert worker.exec(["cat"], stdin=b"\x00bytes\xff").stdout == b"\x00bytes\xff"
    assert worker.exec(["sleep", "30"], timeout=1).rc == 124
    # a background process in its own session holding the output pipe: bounded, and the
    # channel still answers afterwards
    stuck = worker.exec_sh("setsid sleep 120 & echo started", timeout=2)
    assert stuck.rc == 124 and stuck.out == "started\n"
    assert stuck.seconds < 60
    assert worker.exec(["true"]).rc == 0
    assert worker.exec(["no-such-binary"]).rc == 127
    worker.push_file("/etc/kuryr/test.conf", b"[DEFAULT]\nx = 1\n", mode=0o600)
    assert worker.read_file("/etc/kuryr/test.conf") == b"[DEFAULT]\nx = 1\n"
    assert worker.exec(["stat", "-c", "%a", "/etc/kuryr/test.conf"]).out.strip() == "600"
    pid = worker.spawn("kt-sleeper", "echo started; exec sleep 300")
    assert worker.spawn("kt-sleeper", "echo again; exec sleep 300") == pid  # idempotent
    assert worker.process_pid("kt-sleeper") == pid
    assert worker.kill_process("kt-sleeper")
    assert worker.process_pid("kt-sleeper") is None
    assert "started" in worker.log_of("kt-sleeper")
    assert "again" not in worker.log_of("kt-sleeper")


def test_project_code_and_dependencies_in_the_guest(worker: vms.Vm) -> None:
    res = worker.exec(["kuryr", "--version"], timeout=300)
    assert res.rc == 0, res.err
    assert res.out.startswith("kuryr ")
    code = "import openstack, aiohttp, pyroute2, kuryr_k8s.cni.plugin; print('ok')"
    assert worker.exec(["python3", "-c", code], timeout=300).out.strip() == "ok"
    assert worker.exec_sh("touch /opt/kuryr/app/x").rc != 0  # read-only app disk


def test_reuse_verifies_and_repairs(worker: vms.Vm, vm_sandbox: Sandbox) -> None:
    sb = vm_sandbox
    spec = vms.VmSpec(worker.name, trunk=True)
    pid = worker.info.pid
    said: list[str] = []
    vms.ensure_vm(sb.ctx, sb.conn, sb.topo, spec, said.append)
    assert worker.info.pid == pid
    assert any("running and verified" in m for m in said), said
    # the br-int row lost: fixed without a restart
    sb.ctx.vsctl("del-port", "br-int", worker.record.tap)
    said.clear()
    vms.ensure_vm(sb.ctx, sb.conn, sb.topo, spec, said.append)
    assert worker.info.pid == pid
    assert any("repaired its br-int port row" in m for m in said), said
    ids = hostnet.ovs_external_ids(sb.ctx, worker.record.tap)
    assert ids is not None and ids["iface-id"] == worker.record.port_id
    # the guest lost its address: restarted
    worker.exec(["ip", "addr", "flush", "dev", "eth0"], check=True)
    said.clear()
    vms.ensure_vm(sb.ctx, sb.conn, sb.topo, spec, said.append)
    assert worker.info.pid not in (None, pid)
    assert any("repairing" in m and "10." in m for m in said), said
    assert worker.record.cidr in worker.exec(["ip", "-br", "addr", "show", "eth0"]).out


def test_stop_and_start(worker: vms.Vm, vm_sandbox: Sandbox) -> None:
    sb = vm_sandbox
    net = sb.conn.network
    t0 = time.monotonic()
    assert vms.stop(sb.ctx, worker.name, progress)
    stop_s = time.monotonic() - t0
    assert worker.info.state == "stopped"
    assert not hostnet.tap_exists(worker.record.tap)
    assert hostnet.ovs_external_ids(sb.ctx, worker.record.tap) is None
    deadline = time.monotonic() + 60
    while net.get_port(worker.record.port_id).status != "DOWN":
        assert time.monotonic() < deadline, "port not DOWN 60 s after stop"
        time.sleep(0.2)
    assert not vms.stop(sb.ctx, worker.name)  # idempotent
    with pytest.raises(SandboxError, match="not running"):
        worker.exec(["true"])
    t0 = time.monotonic()
    again = vms.start(sb.ctx, sb.conn, sb.topo, worker.name, progress)
    start_s = time.monotonic() - t0
    assert again.record.mac == worker.record.mac and again.record.ip == worker.record.ip
    assert again.info.state == "running"
    assert net.get_port(worker.record.port_id).status == "ACTIVE"
    assert again.exec(["ping", "-c", "2", "-w", "30", worker.record.gateway or ""]).rc == 0
    progress(f"stop {stop_s:.2f} s, warm start {start_s:.1f} s")


def test_delete_leaves_nothing(vm_sandbox: Sandbox, neutron: NeutronTracker) -> None:
    """Delete removes QEMU, tap, br-int row, trunk, port; of the trunk's subports it deletes
    the ``kuryr-sandbox``-tagged one and only detaches the other (the controller's)."""
    sb = vm_sandbox
    net = sb.conn.network
    name = new_name()
    vm = vms.ensure_vm(sb.ctx, sb.conn, sb.topo, vms.VmSpec(name, trunk=True), progress)
    rec = vm.record
    ours = net.create_port(
        network_id=sb.topo.net1_id, project_id=sb.topo.project_id, name="kt-vm-sub-ours"
    )
    net.set_tags(ours, [topology.TAG, neutron.tag])
    theirs = neutron.port(sb.topo.net1_id, name="kt-vm-sub-theirs")
    net.add_trunk_subports(
        rec.trunk_id,
        [
            {"port_id": ours.id, "segmentation_type": "vlan", "segmentation_id": 201},
            {"port_id": theirs.id, "segmentation_type": "vlan", "segmentation_id": 202},
        ],
    )
    removed = vms.delete(sb.ctx, sb.conn, name, progress)
    assert "QEMU" in removed and f"port {rec.port_id}" in removed, removed
    assert residue(sb, name, rec) == {}
    assert net.find_port(ours.id, ignore_missing=True) is None
    assert net.get_port(theirs.id).device_owner != "trunk:subport"
    assert vms.delete(sb.ctx, sb.conn, name, progress) == []  # idempotent
    with pytest.raises(vms.NoSuchVm, match=f"no such VM '{name}'"):
        vms.get_vm(sb.ctx, name)


def test_host_names_differ_per_state_dir() -> None:
    a, b = layout.sandbox_id(Path("/var/lib/kuryr-sandbox")), layout.sandbox_id(Path("/tmp/x"))
    assert a != b
    taps = {layout.tap_name(s, n) for s in (a, b) for n in ("worker0", "worker1")}
    assert len(taps) == 4
    assert all(len(t) <= 15 for t in taps)


def test_cli_errors_name_the_vm(vm_sandbox: Sandbox) -> None:
    kuryr = str(Path(sys.executable).parent / "kuryr")
    env_dir = ["--state-dir", str(vm_sandbox.ctx.paths.root)]
    res = subprocess.run(
        [kuryr, "sandbox", "vm", "exec", *env_dir, "kt-no-such", "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 1
    assert "no such VM 'kt-no-such' (known:" in res.stderr
    res = subprocess.run(
        [kuryr, "sandbox", "vm", "create", *env_dir, "Bad_Name"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 1 and "bad VM name 'Bad_Name'" in res.stderr


def test_failed_create_leaves_nothing(vm_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first ``ensure_vm`` that fails (here: a boot timeout too short to boot) removes
    the port, trunk, tap, row, QEMU and folder it made."""
    sb = vm_sandbox
    name = new_name()
    monkeypatch.setattr(vms.machine, "BOOT_TIMEOUT", 0.5)
    with pytest.raises(SandboxError, match="did not answer within"):
        vms.ensure_vm(sb.ctx, sb.conn, sb.topo, vms.VmSpec(name, trunk=True), progress)
    assert name not in vms.machine.known_names(sb.ctx)
    assert vms.machine.ports.find_port(sb.conn, name) is None
    assert vms.machine.ports.find_trunk(sb.conn, name) is None
    tap = layout.tap_name(layout.sandbox_id(sb.ctx.paths.root), name)
    assert not hostnet.tap_exists(tap)
    assert hostnet.ovs_external_ids(sb.ctx, tap) is None
    assert not layout.vm_paths(sb.ctx.paths.root, name).dir.exists()


def test_ensure_vms_boots_several_at_once(vm_sandbox: Sandbox) -> None:
    sb = vm_sandbox
    names = [new_name(), new_name()]
    try:
        got = vms.ensure_vms(sb.ctx, sb.topo, [vms.VmSpec(n) for n in names], progress)
        assert sorted(got) == sorted(names)
        infos = [got[n].info for n in names]
        assert [i.state for i in infos] == ["running", "running"]
        assert infos[0].tap != infos[1].tap and infos[0].ip != infos[1].ip
        assert all(got[n].runs_current_code() for n in names)
        assert got[names[0]].exec(["ping", "-c", "2", "-w", "30", infos[1].ip]).rc == 0
    finally:
        for n in names:
            vms.delete(sb.ctx, sb.conn, n, progress)
