"""Prometheus view of :class:`~kuryr_k8s.openstack.neutron.NeutronStats`.

Register on the controller's registry: ``registry.register(NeutronCollector(neutron.stats))``
(and ``OctaviaCollector(octavia.stats)`` when Services are on).
Counters are read at scrape time; nothing is global.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from kuryr_k8s.openstack.neutron import NeutronStats
from kuryr_k8s.openstack.octavia import OctaviaStats


def call_families(service: str, stats: NeutronStats | OctaviaStats) -> Iterator[Metric]:
    """``kuryr_<service>_calls``, ``..._errors`` and ``..._call_seconds`` of an adapter."""
    name = service.capitalize()
    calls = CounterMetricFamily(
        f"kuryr_{service}_calls", f"{name} API calls by operation", labels=["op"]
    )
    for op, n in sorted(stats.calls.items()):
        calls.add_metric([op], n)
    yield calls
    errors = CounterMetricFamily(
        f"kuryr_{service}_errors",
        f"Failed {name} API calls by operation and error class",
        labels=["op", "error"],
    )
    for (op, kind), n in sorted(stats.errors.items()):
        errors.add_metric([op, kind], n)
    yield errors
    seconds = CounterMetricFamily(
        f"kuryr_{service}_call_seconds",
        f"Seconds spent waiting for {name}, by operation",
        labels=["op"],
    )
    for op, s in sorted(stats.seconds.items()):
        seconds.add_metric([op], s)
    yield seconds


class NeutronCollector(Collector):
    def __init__(self, stats: NeutronStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from call_families("neutron", self.stats)
        ports = CounterMetricFamily(
            "kuryr_neutron_ports", "Ports created and deleted by this process", labels=["event"]
        )
        ports.add_metric(["created"], self.stats.ports_created)
        ports.add_metric(["deleted"], self.stats.ports_deleted)
        yield ports


class OctaviaCollector(Collector):
    """``kuryr_octavia_calls`` / ``_errors`` / ``_call_seconds`` (Services on)."""

    def __init__(self, stats: OctaviaStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from call_families("octavia", self.stats)
