"""Octavia with the OVN provider balances real TCP traffic between two plugged ports."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from fixtures.sandbox import NeutronTracker, Sandbox
from functional.traffic import tcp_request, tcp_server

pytestmark = pytest.mark.functional

WAIT = {"interval": 0.2, "wait": 120}


def test_load_balancer_spreads_tcp_over_two_members(
    neutron: NeutronTracker, sandbox: Sandbox, octavia: Any, netns_factory: Any
) -> None:
    topo = sandbox.topo
    subnet1 = neutron.conn.network.get_subnet(topo.subnet1_id)
    # LB traffic keeps the client's source address, so the members must allow it in.
    sg = neutron.security_group("kt-lb-members", tcp_ports=[8080])
    members, clients = [], []
    for i in range(2):
        port = neutron.port(
            topo.net1_id,
            name=f"kt-member{i}",
            device_owner="compute:kuryr",
            binding_host_id=sandbox.settings.hostname,
            security_group_ids=[sg.id],
        )
        members.append(netns_factory(port, subnet1))
    client_port = neutron.port(
        topo.net1_id,
        name="kt-lb-client",
        device_owner="compute:kuryr",
        binding_host_id=sandbox.settings.hostname,
        security_group_ids=[topo.default_sg_id],
    )
    clients.append(netns_factory(client_port, subnet1))
    for p in neutron.created:
        if p[0] == "port":
            neutron.wait_port_status(p[1].id, "ACTIVE")

    lbs = octavia.load_balancer
    # The VIP sits on subnet0, routed to the clients' subnet (pitfall 7: not the same one).
    lb = lbs.create_load_balancer(
        name="kt-lb", vip_subnet_id=topo.subnet0_id, provider="ovn", project_id=topo.project_id
    )
    try:
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        listener = lbs.create_listener(
            name="kt-lb-80",
            loadbalancer_id=lb.id,
            protocol="TCP",
            protocol_port=80,
            project_id=topo.project_id,
        )
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        pool = lbs.create_pool(
            listener_id=listener.id,
            protocol="TCP",
            lb_algorithm="SOURCE_IP_PORT",
            project_id=topo.project_id,
        )
        lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        for m in members:
            lbs.create_member(
                pool,
                address=m.ip,
                protocol_port=8080,
                subnet_id=topo.subnet1_id,
                project_id=topo.project_id,
            )
            lbs.wait_for_load_balancer(lb.id, status="ACTIVE", failures=["ERROR"], **WAIT)
        vip = lbs.get_load_balancer(lb.id).vip_address

        with (
            tcp_server(members[0].netns, members[0].ip, 8080, tag="m0"),
            tcp_server(members[1].netns, members[1].ip, 8080, tag="m1"),
        ):
            answers = Counter(
                tcp_request(clients[0].netns, vip, 80, f"req{i}").split(":")[0] for i in range(20)
            )
        assert set(answers) == {"m0", "m1"}, answers
        assert sum(answers.values()) == 20
    finally:
        lbs.delete_load_balancer(lb.id, cascade=True, ignore_missing=True)
        lbs.wait_for_delete(lbs.get_load_balancer(lb.id), interval=0.2, wait=120)
