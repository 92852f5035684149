"""Prometheus metrics of the controller, on a registry of our own (no global state).

Upstream Kuryr's pod-creation histogram started at 10 s; ours starts at 50 ms, because a
pooled port should be wired well under a second and that is the range worth resolving.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WIRING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
"""Seconds from pod creationTimestamp to KuryrPort active."""


class Metrics:
    """Every metric the controller itself exports; pools and the Neutron adapter register
    theirs on the same :attr:`registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pod_wiring = Histogram(
            "kuryr_pod_wiring_seconds",
            "Seconds from pod creation (creationTimestamp) to its KuryrPort being active",
            buckets=WIRING_BUCKETS,
            registry=r,
        )
        self.port_allocation = Histogram(
            "kuryr_port_allocation_seconds",
            "Seconds from pod creation to its Neutron port written into the KuryrPort",
            buckets=WIRING_BUCKETS,
            registry=r,
        )
        self.reconciles = Counter(
            "kuryr_reconcile",
            "Reconciles by kind and outcome (success, requeue, permanent_error, error)",
            ["kind", "outcome"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "kuryr_reconcile_duration_seconds",
            "Time spent in one reconcile",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.queue = Gauge(
            "kuryr_workqueue_depth", "Keys waiting in the work queue", ["kind"], registry=r
        )
        self.leader = Gauge(
            "kuryr_leader", "1 while this process holds the leader lease", registry=r
        )
        self.ports_failed = Counter(
            "kuryr_port_failures",
            "KuryrPorts that could not get a port, by reason",
            ["reason"],
            registry=r,
        )

    # EngineMetrics
    def reconciled(self, kind: str, outcome: str, seconds: float) -> None:
        self.reconciles.labels(kind, outcome).inc()
        self.reconcile_seconds.labels(kind).observe(seconds)

    def queue_depth(self, kind: str, depth: int) -> None:
        self.queue.labels(kind).set(depth)
