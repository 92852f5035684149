"""The main job's namespaces table: which subnet each namespace's pods get."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuryr_k8s.sandbox.demo_namespaces import SubnetsConfig, rows, subnets_config

pytestmark = pytest.mark.unit

NAMESPACES = [{"metadata": {"name": n}} for n in ("team-b", "default", "team-a")]
PODS = [{"metadata": {"namespace": "default"}}] * 2 + [{"metadata": {"namespace": "team-a"}}]
INFO = {"s1": ("net1", "subnet1", "10.20.0.0/20"), "sa": ("ns-team-a", "ns-team-a", "10.40.3.0/24")}
KNET_A = {
    "metadata": {"name": "team-a", "namespace": "team-a"},
    "status": {"netId": "na", "subnetId": "sa", "subnetCIDR": "10.40.3.0/24", "populated": True},
}


def test_default_driver_every_namespace_shares_the_pod_subnet() -> None:
    got = rows(NAMESPACES, PODS, [], SubnetsConfig("default", "s1"), INFO)
    assert got == [
        ("default", "2", "net1", "subnet1", "10.20.0.0/20", "pod_subnet (shared)"),
        ("team-a", "1", "net1", "subnet1", "10.20.0.0/20", "pod_subnet (shared)"),
        ("team-b", "0", "net1", "subnet1", "10.20.0.0/20", "pod_subnet (shared)"),
    ]


def test_namespace_driver_shows_kuryrnetworks_and_pending_namespaces() -> None:
    got = rows(NAMESPACES, PODS, [KNET_A], SubnetsConfig("namespace", ""), INFO)
    assert got == [
        ("default", "2", "-", "-", "-", "pending: no KuryrNetwork yet"),
        (
            "team-a",
            "1",
            "ns-team-a",
            "ns-team-a",
            "10.40.3.0/24",
            "KuryrNetwork team-a (populated)",
        ),
        ("team-b", "0", "-", "-", "-", "pending: no KuryrNetwork yet"),
    ]


def test_driver_read_from_kuryr_conf(tmp_path: Path) -> None:
    conf = tmp_path / "kuryr.conf"
    assert subnets_config(conf) == SubnetsConfig("default", "")
    conf.write_text(
        "[kubernetes]\npod_subnets_driver = namespace\n[neutron_defaults]\npod_subnet = s1\n"
    )
    assert subnets_config(conf) == SubnetsConfig("namespace", "s1")
