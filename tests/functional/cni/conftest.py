"""Fixtures of the CNI functional and e2e tests: netns made as a runtime makes them, real
Neutron ports bound to this chassis, the sandbox's OVSDB, and a guard that removes and then
insists on no residue.

The guard is scoped to what the test owns (other test runs may share the host): network
namespaces named ``kc-<test id>-*``, OVS rows and host links tagged with the test's node
name (``kuryr-node`` / the ifalias), and the Neutron ports' host ifnames.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from kuryr_k8s.cni.host import links
from kuryr_k8s.cni.host.ovs import Ovsdb
from kuryr_k8s.model.vif import Vif

NETNS_DIR = Path("/var/run/netns")


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


@dataclass
class HostScope:
    """What one test may create on the host, and the clean-up of all of it."""

    node: str
    ovsdb: Ovsdb
    namespaces: list[str] = field(default_factory=list)
    host_ifnames: set[str] = field(default_factory=set)

    def netns(self, label: str = "pod") -> str:
        """A network namespace as a runtime makes one (``ip netns add``); returns its path."""
        name = f"kc-{self.node[-8:]}-{label}-{uuid.uuid4().hex[:4]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)
        return str(NETNS_DIR / name)

    def residue(self, *, netns: bool = True) -> dict[str, Any]:
        """What of this test is still on the host (empty when clean). The netns are the
        test's own "pods"; the rest is what plugging made."""
        ours = (
            {n for n in netns_list() if n.startswith(f"kc-{self.node[-8:]}-")} if netns else set()
        )
        rows = {i.name for i in self.ovsdb.owned_interfaces(self.node)}
        rows |= {n for n in self.host_ifnames if self.ovsdb.interface(n) is not None}
        aliased = {
            name
            for name, alias in links.host_aliases().items()
            if (parsed := links.parse_alias(alias)) is not None and parsed.node == self.node
        }
        leftover_links = (self.host_ifnames & host_links()) | aliased
        return {k: v for k, v in (("netns", ours), ("ovs", rows), ("links", leftover_links)) if v}

    def cleanup(self) -> None:
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
        for iface in self.ovsdb.owned_interfaces(self.node):
            self.ovsdb.delete_port(iface.name)
        for name in self.host_ifnames:
            self.ovsdb.delete_port(name)
            links.delete_link(name)
        for name, alias in links.host_aliases().items():
            parsed = links.parse_alias(alias)
            if parsed is not None and parsed.node == self.node:
                links.delete_link(name)


@pytest.fixture
def ovsdb(sandbox: Sandbox) -> Iterator[Ovsdb]:
    db = Ovsdb(f"unix:{sandbox.ctx.paths.ovs_db_sock}")
    yield db
    db.close()


@pytest.fixture
def host(ovsdb: Ovsdb) -> Iterator[HostScope]:
    """The test's host scope. At teardown: nothing plugged may remain (OVS rows, links);
    then everything, the test's netns included, is removed and checked gone."""
    scope = HostScope(f"cni-test-{uuid.uuid4().hex[:8]}", ovsdb)
    try:
        yield scope
    finally:
        left = scope.residue(netns=False)
        scope.cleanup()
        after = scope.residue()
    assert after == {}, f"could not clean up: {after}"
    assert left == {}, f"the test left residue: {left}"


VifFactory = Callable[..., Vif]


@pytest.fixture
def neutron_vif(sandbox: Sandbox, neutron: NeutronTracker, host: HostScope) -> VifFactory:
    """``neutron_vif()``: a real port on net1 bound to this chassis, as the controller
    would allocate it, and its VIF document (``active=False``, as first written)."""

    def make(network_id: str | None = None, subnet_id: str | None = None, **kw: Any) -> Vif:
        conn = sandbox.conn
        subnet = conn.network.get_subnet(subnet_id or sandbox.topo.subnet1_id)
        port = neutron.port(
            network_id or sandbox.topo.net1_id,
            binding_host_id=sandbox.settings.hostname,
            device_owner="compute:kuryr",
            security_group_ids=[sandbox.topo.default_sg_id],
        )
        vif = vif_of(port, subnet, sandbox.topo.mtu, **kw)
        host.host_ifnames.add(vif.host_ifname)
        return vif

    return make


def vif_of(port: Any, subnet: Any, mtu: int, **kw: Any) -> Vif:
    fixed = port.fixed_ips[0]
    doc = {
        "vifType": "ovs",
        "portId": port.id,
        "macAddress": port.mac_address,
        "networkId": port.network_id,
        "mtu": mtu,
        "active": False,
        "bridge": "br-int",
        "ips": [
            {
                "address": fixed["ip_address"],
                "cidr": subnet.cidr,
                "subnetId": subnet.id,
                "gateway": subnet.gateway_ip,
            }
        ],
        "routes": [],
    }
    doc.update(kw)
    return Vif.from_dict(doc)
