"""Host-global names carry the sandbox id: two state directories never share a name, and
clean-up selects only its own sandbox's names (never by the generic ``kuryr-`` prefix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuryr_k8s.sandbox import naming
from kuryr_k8s.sandbox.hostobjects import select_owned
from kuryr_k8s.sandbox.nodeagent.netns import netns_name

pytestmark = pytest.mark.unit

DEFAULT = Path("/var/lib/kuryr-sandbox")
OTHER = Path("/var/lib/kuryr-sandbox-n29")


def _names(sid: str) -> dict[str, set[str]]:
    """Every kind of host-global name one sandbox makes, for a few objects."""
    pods = [("default", "busybox-sleep", "u1"), ("default", "busybox-sleep-2", "u2")]
    stand_in = naming.stand_in_netns(sid)
    return {
        "netns": {stand_in, *(netns_name(ns, n, uid, sid) for ns, n, uid in pods)},
        "links": {
            naming.veth_name(sid, stand_in),
            naming.veth_name(sid, "kt-0123456789"),
            *(naming.tap_name(sid, vm) for vm in ("vm0", "worker0", "worker1")),
        },
        "qemu": {naming.qemu_name(sid, vm) for vm in ("vm0", "worker0")},
    }


def test_sandbox_id_is_stable_short_hex_and_per_state_dir(tmp_path: Path) -> None:
    a, b = naming.sandbox_id(DEFAULT), naming.sandbox_id(OTHER)
    assert a == naming.sandbox_id(DEFAULT)
    assert a != b
    assert len(a) == naming.SID_LEN and int(a, 16) >= 0
    # The resolved path decides: a symlink to a state dir is that state dir.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert naming.sandbox_id(tmp_path / "link") == naming.sandbox_id(tmp_path / "real")
    assert naming.sandbox_id(tmp_path / "real" / ".." / "real") == naming.sandbox_id(
        tmp_path / "real"
    )


def test_the_id_is_recorded_in_the_state_dir(tmp_path: Path) -> None:
    sid = naming.record_sandbox_id(tmp_path / "state")
    assert (tmp_path / "state" / naming.SID_FILE).read_text().strip() == sid
    assert naming.record_sandbox_id(tmp_path / "state") == sid


def test_two_state_dirs_give_disjoint_names_that_fit_linux() -> None:
    a, b = _names(naming.sandbox_id(DEFAULT)), _names(naming.sandbox_id(OTHER))
    for kind in a:
        assert a[kind].isdisjoint(b[kind]), kind
    for link in a["links"] | b["links"]:
        assert len(link) <= naming.IFNAMSIZ, link
    # Each name says whose it is.
    for sid, names in ((naming.sandbox_id(DEFAULT), a), (naming.sandbox_id(OTHER), b)):
        assert {naming.netns_owner(n) for n in names["netns"]} == {sid}
        assert {naming.link_owner(n) for n in names["links"]} == {sid}


def test_names_without_an_id_have_no_owner() -> None:
    # What the node agent named pods before ids existed, also for a namespace that looks
    # like an id; the old stand-in; the product's pod veths; OVS's bridges.
    for name in (
        netns_name("default", "busybox-sleep", "u1"),
        netns_name("abcdef", "pod", "u1"),
        "kuryr-vm0",
        "kuryr-abcdef-pod-12345678",
    ):
        assert naming.netns_owner(name) is None, name
    for link in ("tap3f0c5d1e8a1", "br-int", "br-ex", "ovs-netdev", "vm0123456789a", "eth0"):
        assert naming.link_owner(link) is None, link


def test_a_bad_sandbox_id_is_refused() -> None:
    with pytest.raises(ValueError, match="bad sandbox id"):
        naming.netns_prefix("kuryr")


def test_cleanup_selects_only_its_own_sandbox() -> None:
    mine, other = naming.sandbox_id(DEFAULT), naming.sandbox_id(OTHER)
    a, b = _names(mine), _names(other)
    legacy_recorded = netns_name("default", "old-pod", "u0")  # made before ids existed
    someone_elses = [netns_name("default", "old-pod", "u9"), "kuryr-vm0", "cni-1234", "kt-x"]
    netns = sorted(a["netns"] | b["netns"] | {legacy_recorded, *someone_elses})
    links = sorted(a["links"] | b["links"] | {"br-int", "br-ex", "tap3f0c5d1e8a1", "lo"})

    found = select_owned(mine, netns, links, recorded=[legacy_recorded, "kuryr-gone-1"])

    assert set(found.netns) == a["netns"] | {legacy_recorded}
    assert set(found.links) == a["links"]
    theirs = select_owned(other, netns, links, recorded=[])
    assert set(theirs.netns) == b["netns"]
    assert set(theirs.links) == b["links"]
    assert set(found.netns).isdisjoint(theirs.netns)
    # A recorded name that is not on the host is not "found" (nothing to remove).
    assert "kuryr-gone-1" not in found.netns
