"""Prometheus view of :class:`~kuryr_k8s.openstack.neutron.NeutronStats`.

Register on the controller's registry: ``registry.register(NeutronCollector(neutron.stats))``.
Counters are read at scrape time; nothing is global.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from kuryr_k8s.openstack.neutron import NeutronStats


class NeutronCollector(Collector):
    def __init__(self, stats: NeutronStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "kuryr_neutron_calls", "Neutron API calls by operation", labels=["op"]
        )
        for op, n in sorted(self.stats.calls.items()):
            calls.add_metric([op], n)
        yield calls
        errors = CounterMetricFamily(
            "kuryr_neutron_errors",
            "Failed Neutron API calls by operation and error class",
            labels=["op", "error"],
        )
        for (op, kind), n in sorted(self.stats.errors.items()):
            errors.add_metric([op, kind], n)
        yield errors
        seconds = CounterMetricFamily(
            "kuryr_neutron_call_seconds",
            "Seconds spent waiting for Neutron, by operation",
            labels=["op"],
        )
        for op, s in sorted(self.stats.seconds.items()):
            seconds.add_metric([op], s)
        yield seconds
        ports = CounterMetricFamily(
            "kuryr_neutron_ports", "Ports created and deleted by this process", labels=["event"]
        )
        ports.add_metric(["created"], self.stats.ports_created)
        ports.add_metric(["deleted"], self.stats.ports_deleted)
        yield ports
