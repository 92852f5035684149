"""The Neutron adapter against the sandbox's real Neutron (ML2/OVN)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.openstack.cluster import Cluster, cluster_fixture  # noqa: F401
from kuryr_k8s.controller.settings import NeutronDefaults, validate_against_neutron
from kuryr_k8s.model.errors import ConfigError, PermanentError
from kuryr_k8s.openstack.connection import NeutronSettings
from kuryr_k8s.openstack.neutron import (
    IpExhausted,
    Neutron,
    NeutronNotFound,
    PortSpec,
    QuotaExceeded,
    RevisionConflict,
)
from kuryr_k8s.openstack.provider import spec_for

pytestmark = pytest.mark.functional


async def test_bulk_create_gives_distinct_tagged_bound_ports(cluster: Cluster) -> None:
    request = cluster.request()
    tags = cluster.tagging.free(request.pool_key)
    ports = await cluster.neutron.create_ports([spec_for(request, tags)] * 3)
    try:
        assert cluster.neutron.stats.calls["create_ports"] == 1
        assert len({p.id for p in ports}) == 3
        assert len({p.fixed_ips[0].ip_address for p in ports}) == 3
        for port in ports:
            seen = cluster.neutron_port(port.id)  # as the SDK sees it, not our adapter
            assert set(seen.tags) == set(tags)
            assert seen.binding_host_id == cluster.node
            assert seen.binding_vif_type == "ovs"
            assert seen.security_group_ids == [cluster.sandbox.topo.default_sg_id]
            assert seen.device_owner == "compute:kuryr"
            assert seen.project_id == cluster.sandbox.topo.project_id
    finally:
        for port in ports:
            await cluster.neutron.delete_port(port.id)


async def test_stale_revision_is_a_conflict(cluster: Cluster) -> None:
    request = cluster.request()
    (port,) = await cluster.neutron.create_ports(
        [spec_for(request, (cluster.tagging.cluster_tag,))]
    )
    try:
        fresh = await cluster.neutron.update_port(port.id, name="one")
        with pytest.raises(RevisionConflict, match="RevisionNumberConstraint|revision"):
            await cluster.neutron.update_port(
                port.id, if_revision=fresh.revision_number - 1, name="two"
            )
        now = await cluster.neutron.get_port(port.id)
        assert now is not None and now.name == "one"
    finally:
        await cluster.neutron.delete_port(port.id)
    assert await cluster.neutron.delete_port(port.id) is False


async def test_ip_exhaustion_is_permanent_with_neutrons_reason(
    cluster: Cluster, neutron: NeutronTracker
) -> None:
    net = neutron.network(name="kt-tiny")
    sub = neutron.subnet(net.id, "192.0.2.0/29", name="kt-tiny-sub")  # 5 usable addresses
    request = cluster.request(network_id=net.id, subnet_id=sub.id)
    spec = spec_for(request, (cluster.tagging.cluster_tag,))
    with pytest.raises(IpExhausted, match="No more IP addresses available") as info:
        await cluster.neutron.create_ports([spec] * 6)  # bulk: all or nothing
    assert isinstance(info.value, PermanentError)
    assert cluster.ports() == []


async def test_quota_exceeded_is_permanent_with_neutrons_reason(
    cluster: Cluster, neutron: NeutronTracker, sandbox: Sandbox
) -> None:
    project = uuid.uuid4().hex
    net = neutron.network(name="kt-quota", shared=True)
    sub = neutron.subnet(net.id, "192.0.2.0/28", name="kt-quota-sub")
    sandbox.conn.network.put(f"/quotas/{project}", json={"quota": {"port": 1}})
    try:
        spec = PortSpec(net.id, sub.id, project, (), cluster.node, (cluster.tagging.cluster_tag,))
        with pytest.raises(QuotaExceeded, match="Quota exceeded for resources") as info:
            await cluster.neutron.create_ports([spec] * 2)
        assert isinstance(info.value, PermanentError)
    finally:
        sandbox.conn.network.delete(f"/quotas/{project}")
    assert cluster.ports() == []


async def test_missing_subnet_is_permanent(cluster: Cluster) -> None:
    request = cluster.request(subnet_id=str(uuid.uuid4()))
    with pytest.raises(NeutronNotFound, match="could not be found"):
        await cluster.neutron.create_ports([spec_for(request, (cluster.tagging.cluster_tag,))])


async def test_startup_validation_against_live_neutron(cluster: Cluster) -> None:
    topo = cluster.sandbox.topo
    good = NeutronDefaults(topo.project_id, topo.subnet1_id, (topo.default_sg_id,), "c")
    checked = await validate_against_neutron(cluster.neutron, good)
    assert (checked.network.id, checked.subnet.cidr, checked.mtu) == (
        topo.net1_id,
        topo.subnet1_cidr,
        topo.mtu,
    )
    missing = str(uuid.uuid4())
    bad = NeutronDefaults(topo.project_id, topo.subnet1_id, (missing,), "c")
    with pytest.raises(ConfigError, match=rf"pod_security_groups = {missing}: no such"):
        await validate_against_neutron(cluster.neutron, bad)
    bad = NeutronDefaults(topo.project_id, missing, (topo.default_sg_id,), "c")
    with pytest.raises(ConfigError, match=rf"pod_subnet = {missing}: no such subnet"):
        await validate_against_neutron(cluster.neutron, bad)
    stranger = uuid.uuid4().hex
    bad = NeutronDefaults(stranger, topo.subnet1_id, (topo.default_sg_id,), "c")
    with pytest.raises(ConfigError, match=rf"project = {stranger}"):
        await validate_against_neutron(cluster.neutron, bad)


async def test_connect_through_a_clouds_yaml_cloud(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = cluster.sandbox.settings.neutron_url
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  kt:\n    auth_type: none\n"
        f"    auth:\n      endpoint: {url}\n    network_endpoint_override: {url}\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    neutron = Neutron.connect(NeutronSettings(cloud="kt", timeout=60.0))
    try:
        subnet = await neutron.get_subnet(cluster.sandbox.topo.subnet1_id)
        assert subnet is not None and subnet.network_id == cluster.sandbox.topo.net1_id
        assert neutron.stats.calls["get_subnet"] == 1
    finally:
        neutron.close()
