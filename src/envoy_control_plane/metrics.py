"""Prometheus metrics, on a registry per control plane instance (tests run several in one process).

Every metric of ours carries the prefix `envoy_cp_`; the registry also has the standard process, platform and GC
collectors (`process_*`, `python_*`). Counters have no `_created` series.
"""

from __future__ import annotations

import platform
from functools import partial

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from . import __version__

PREFIX = "envoy_cp"

disable_created_metrics()  # process-wide in prometheus_client: `_created` doubles every counter series for nothing


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        counter = partial(Counter, namespace=PREFIX, registry=r)
        gauge = partial(Gauge, namespace=PREFIX, registry=r)
        histogram = partial(Histogram, namespace=PREFIX, registry=r)

        self.build_info = gauge("build_info", "Always 1; the labels say what runs", ["version", "python"])
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.connected_streams = gauge("xds_connected_streams", "Open xDS streams", ["mode"])
        self.streams_total = counter("xds_streams", "xDS streams opened", ["mode"])
        self.streams_denied = counter(
            "xds_streams_denied", "xDS streams ended: the client certificate does not name the node asked"
        )
        self.requests = counter("xds_requests", "xDS requests received", ["type"])
        self.responses = counter("xds_responses", "xDS responses (pushes) sent", ["type"])
        self.response_bytes = counter("xds_response_bytes", "Bytes of xDS responses sent", ["type"])
        self.acks = counter("xds_acks", "ACKs received", ["type"])
        self.nacks = counter("xds_nacks", "NACKs received (Envoy rejected a config)", ["type"])
        self.snapshot_build = histogram(
            "snapshot_build_seconds",
            "Time to rebuild the snapshots a batch of source events touched",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.snapshot_nodes = counter("snapshot_nodes_rebuilt", "Node snapshots rebuilt")
        self.source_events = counter("source_events", "Object events from sources", ["source", "kind"])
        self.source_problems = gauge("source_problems", "Invalid objects a source reports now", ["source"])
        self.source_up = gauge("source_up", "1 when the source answers", ["source"])
        self.source_stale = gauge(
            "source_stale", "1 while the source is down and its last known objects are kept", ["source"]
        )
        self.source_synced = gauge(
            "source_synced", "1 once the source has loaded completely (listed every kind) at least once", ["source"]
        )
        self.listener_conflicts = gauge("listener_conflicts", "Listeners rejected for a port or name clash")
        self.status_leader = gauge("status_leader", "1 while this replica holds the lease and writes status")
        self.status_patches = counter("status_patches", "Listener status patches written", ["cluster"])
        self.status_events = counter("status_events", "Kubernetes Events created on listeners", ["cluster"])
        self.status_events_dropped = counter(
            "status_events_dropped", "Events not sent: the object's rate limit was reached"
        )
        self.status_errors = counter("status_errors", "Rounds of status writes to a cluster that failed", ["cluster"])


class WatchCounters(Collector):
    """`kubernetes_relists_total` and `kubernetes_watches_total` per cluster and kind, read from the sources when
    scraped (the reflectors count them anyway; a counter per event on the hot path would count them twice)."""

    def __init__(self, counts: Callable[[], Iterable[tuple[str, Mapping[str, tuple[int, int]]]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        relists = CounterMetricFamily(
            f"{PREFIX}_kubernetes_relists", "Complete lists of a kind (start, 410, 504)", labels=["cluster", "kind"]
        )
        watches = CounterMetricFamily(
            f"{PREFIX}_kubernetes_watches", "Watch requests the API server answered", labels=["cluster", "kind"]
        )
        for cluster, by_kind in self._counts():
            for kind, (relisted, watched) in sorted(by_kind.items()):
                relists.add_metric([cluster, kind], relisted)
                watches.add_metric([cluster, kind], watched)
        yield relists
        yield watches
