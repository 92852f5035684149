"""Two state directories on one host: every host-global name belongs to exactly one.

A second sandbox (its own state directory, e.g. the PyPI Neutron 29 one) runs the
side-by-side demo twice (green, then reused), while the default sandbox is down (both use
the same fixed TCP ports). Then:

* every network namespace, link and br-int port that appeared belongs to the second
  sandbox (its sandbox id in the name; a product pod veth: a br-int row of the second
  sandbox whose iface-id is one of its Neutron ports; the running OVS's bridge devices),
  and none carries the default sandbox's id;
* ``kuryr sandbox down`` of the second leaves none of them, and leaves alone the objects
  named for the default sandbox (a netns and a link planted under its id) and the default
  state directory's files.

Runs only where the default sandbox may be down: scripts/test's Neutron 29 stage sets
``KURYR_TEST_SECOND_SANDBOX`` to the second state directory (and
``KURYR_TEST_SECOND_SANDBOX_NEUTRON``, default ``pypi``). Anywhere else it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kuryr_k8s.sandbox import hostobjects, manager, naming
from kuryr_k8s.sandbox.components import Context
from kuryr_k8s.sandbox.settings import DEFAULT_STATE_DIR, settings_from_env

pytestmark = pytest.mark.e2e

DemoRun = tuple[subprocess.CompletedProcess[str], float]
BRIDGE_DEVICES = {"br-int", "br-ex", "ovs-netdev"}
"""Datapath devices of the running ovs-vswitchd's bridges (netdev datapath)."""


@dataclass(frozen=True)
class Snapshot:
    netns: set[str]
    links: set[str]


def snapshot() -> Snapshot:
    return Snapshot(set(hostobjects.host_netns()), set(hostobjects.host_links()))


def _second_dir() -> Path:
    value = os.environ.get("KURYR_TEST_SECOND_SANDBOX")
    if not value:
        pytest.skip(
            "needs the default sandbox down (fixed ports): runs in scripts/test's Neutron 29 "
            "stage, which sets KURYR_TEST_SECOND_SANDBOX=<second state dir>"
        )
    second = Path(value).resolve()
    if second == DEFAULT_STATE_DIR.resolve():
        pytest.fail("KURYR_TEST_SECOND_SANDBOX must not be the default state directory")
    default = manager.status(settings_from_env(state_dir=str(DEFAULT_STATE_DIR)))
    running = [r.name for r in default if r.enabled and r.pid is not None]
    if running:
        pytest.skip(
            f"the default sandbox is up ({', '.join(running)}); this test never takes it "
            "down: run it in scripts/test's Neutron 29 stage"
        )
    return second


def _kuryr(*args: str, state_dir: Path) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kuryr_k8s.cli.main",
            "sandbox",
            *args,
            "--state-dir",
            str(state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _br_int_rows(ctx: Context) -> dict[str, dict[str, str]]:
    """Every br-int port of this sandbox's OVS and its Interface external_ids."""
    rows: dict[str, dict[str, str]] = {}
    for name in ctx.vsctl("list-ports", "br-int").split():
        out = ctx.vsctl("--format=json", "--columns=external_ids,type", "list", "Interface", name)
        data = json.loads(out)["data"]
        ids = {str(k): str(v) for k, v in data[0][0][1]} if data else {}
        ids["_type"] = str(data[0][1]) if data else ""
        rows[name] = ids
    return rows


def _neutron_port_ids(ctx: Context) -> set[str]:
    from kuryr_k8s.sandbox.openstack import topology

    conn = topology.connect(ctx.settings)
    try:
        return {p.id for p in conn.network.ports()}
    finally:
        conn.close()


def _plant(default_sid: str) -> tuple[str, str]:
    """A netns and a link (a veth whose peer is in that netns) named for the default
    sandbox: the second must leave them."""
    netns = naming.stand_in_netns(default_sid, "probe")
    link = naming.veth_name(default_sid, netns)
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
    subprocess.run(
        ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns],
        check=True,
        capture_output=True,
    )
    return netns, link


def test_two_state_dirs_share_no_name_and_down_removes_only_its_own(
    demo_cli: Callable[..., DemoRun],
) -> None:
    second = _second_dir()
    flavour = os.environ.get("KURYR_TEST_SECOND_SANDBOX_NEUTRON", "pypi")
    sid, default_sid = naming.sandbox_id(second), naming.sandbox_id(DEFAULT_STATE_DIR)
    assert sid != default_sid
    default_files = sorted(str(p) for p in DEFAULT_STATE_DIR.glob("nodeagent/sandboxes/*"))
    try:
        planted = _plant(default_sid)
        before = snapshot()

        first, _ = demo_cli("--side-by-side", "--neutron", flavour, state_dir=second)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
        assert "all checks passed" in first.stdout
        again, _ = demo_cli("--side-by-side", state_dir=second)
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-3000:]
        assert "pod/busybox-sleep unchanged" in again.stdout
        assert (second / naming.SID_FILE).read_text().strip() == sid

        ctx = manager.context(settings_from_env(state_dir=str(second)))
        during = snapshot()
        rows = _br_int_rows(ctx)
        ports = _neutron_port_ids(ctx)
        new_netns, new_links = during.netns - before.netns, during.links - before.links
        wrong = [n for n in new_netns if naming.netns_owner(n) != sid]
        for link in sorted(new_links):
            owner = naming.link_owner(link)
            row = rows.get(link)
            if owner == sid or link in BRIDGE_DEVICES:
                continue
            if owner is None and row is not None and row.get("iface-id") in ports:
                continue  # a pod veth the product's daemon made, on this sandbox's br-int
            wrong.append(f"link {link} (owner {owner}, br-int row {row})")
        for name, row in sorted(rows.items()):
            if name not in during.links:
                continue  # a row of this sandbox's own OVS database without a host link
            if naming.link_owner(name) == sid or row["_type"] in ("internal", "patch"):
                continue
            if naming.link_owner(name) is None and row.get("iface-id") in ports:
                continue
            wrong.append(f"br-int port {name} ({row})")
        assert not wrong, f"names that are not the second sandbox's ({sid}): {wrong}"
        mine_netns = naming.owned_netns(sid, sorted(during.netns))
        assert naming.stand_in_netns(sid) in mine_netns, mine_netns
        assert len(mine_netns) >= 3, mine_netns  # the stand-in and the two seed pods

        _kuryr("down", state_dir=second)
        after = snapshot()
        left = [n for n in after.netns if naming.netns_owner(n) == sid]
        left += [n for n in after.links if naming.link_owner(n) == sid]
        left += sorted((new_netns | new_links) & (after.netns | after.links))
        assert not left, f"the second sandbox's down left: {left}"
        assert planted[0] in after.netns and planted[1] in after.links, "down touched the default's"
        # Everything else that was there before stays. The second sandbox's own objects may
        # have been there already (a state dir that ran before: its `up` plugs its pods
        # again), and those go with its `down`.
        seconds = {n for n in before.netns if naming.netns_owner(n) == sid}
        seconds |= {n for n in before.links if naming.link_owner(n) == sid}
        seconds |= {
            name
            for name, row in rows.items()
            if naming.link_owner(name) is None and row.get("iface-id") in ports
        }
        kept = (before.netns | before.links) - BRIDGE_DEVICES - seconds
        assert kept <= after.netns | after.links, sorted(kept - (after.netns | after.links))
        assert sorted(str(p) for p in DEFAULT_STATE_DIR.glob("nodeagent/sandboxes/*")) == (
            default_files
        )
    finally:
        netns = naming.stand_in_netns(default_sid, "probe")
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        subprocess.run(
            ["ip", "link", "del", naming.veth_name(default_sid, netns)],
            check=False,
            capture_output=True,
        )
