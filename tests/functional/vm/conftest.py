"""Fixtures of the sandbox VM tests: real QEMU guests (TCG) on the sandbox's br-int.

* ``vm_sandbox`` (session): the ``sandbox`` fixture, after skipping with a reason when
  this is not root or QEMU/mmdebstrap are missing. The image is built on first use
  (30-90 s) and cached in /var/cache/kuryr-sandbox/vm.
* ``vm_sg`` (module): a security group allowing ICMP and TCP 8080 in, for traffic tests.
* ``worker`` (module): one VM on net0 with a trunk, shared by the module's tests; deleted
  at the end, with a check that nothing of it is left.

VM names start with ``kt`` and a random part, so parallel runs never share a VM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.sandbox import Sandbox
from kuryr_k8s.sandbox import vm as vms
from kuryr_k8s.sandbox.vm import hostnet

TEST_PORT = 8080


def progress(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="session")
def vm_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (tap devices, OVS, QEMU)")
    missing = [t for t in ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4") if not shutil.which(t)]
    if missing:
        pytest.skip(f"VM tests need {', '.join(missing)}: run 'kuryr sandbox install'")
    sandbox: Sandbox = request.getfixturevalue("sandbox")
    return sandbox


@pytest.fixture(scope="module")
def vm_sg(vm_sandbox: Sandbox) -> Iterator[Any]:
    net = vm_sandbox.conn.network
    sg = net.create_security_group(
        name=f"kt-vm-{uuid.uuid4().hex[:6]}", project_id=vm_sandbox.topo.project_id
    )
    for rule in (
        {"protocol": "icmp"},
        {"protocol": "tcp", "port_range_min": TEST_PORT, "port_range_max": TEST_PORT},
    ):
        net.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            ethertype="IPv4",
            project_id=vm_sandbox.topo.project_id,
            **rule,
        )
    yield sg
    net.delete_security_group(sg, ignore_missing=True)


def new_name(prefix: str = "kt") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def residue(sandbox: Sandbox, name: str, rec: vms.machine.VmRecord) -> dict[str, Any]:
    """What of VM ``name`` is still anywhere (empty when it is fully gone)."""
    net = sandbox.conn.network
    left: dict[str, Any] = {}
    if hostnet.tap_exists(rec.tap):
        left["tap"] = rec.tap
    if hostnet.ovs_external_ids(sandbox.ctx, rec.tap) is not None:
        left["ovs"] = rec.tap
    owned = hostnet.owned_ovs_ports(sandbox.ctx, rec.sandbox_id)
    if name in owned.values():
        left["ovs rows"] = owned
    qemu = subprocess.run(["pgrep", "-f", f"/vms/{name}/"], capture_output=True, text=True)
    if qemu.stdout.strip():
        left["qemu"] = qemu.stdout.split()
    if net.find_port(rec.port_id, ignore_missing=True) is not None:
        left["port"] = rec.port_id
    if rec.trunk_id and net.find_trunk(rec.trunk_id, ignore_missing=True) is not None:
        left["trunk"] = rec.trunk_id
    if vms.machine.vm_paths(sandbox.ctx.paths.root, name).dir.exists():
        left["dir"] = name
    return left


@pytest.fixture(scope="module")
def worker(vm_sandbox: Sandbox, vm_sg: Any) -> Iterator[vms.Vm]:
    sb = vm_sandbox
    name = new_name()
    spec = vms.VmSpec(name, network="net0", trunk=True, security_groups=(vm_sg.id,))
    try:
        vm = vms.ensure_vm(sb.ctx, sb.conn, sb.topo, spec, progress)
    except BaseException:
        vms.delete(sb.ctx, sb.conn, name, progress)
        raise
    rec = vm.record
    yield vm
    vms.delete(sb.ctx, sb.conn, name, progress)
    assert residue(sb, name, rec) == {}
