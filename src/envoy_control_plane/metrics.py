"""Prometheus metrics, on a registry per control plane instance (tests run several in one process)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import __version__


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("build_info", "Always 1; the labels say what runs", ["version", "python"], registry=r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.connected_streams = Gauge("xds_connected_streams", "Open xDS streams", ["mode"], registry=r)
        self.streams_total = Counter("xds_streams", "xDS streams opened", ["mode"], registry=r)
        self.streams_denied = Counter(
            "xds_streams_denied", "xDS streams ended: the client certificate does not name the node asked", registry=r
        )
        self.requests = Counter("xds_requests", "xDS requests received", ["type"], registry=r)
        self.responses = Counter("xds_responses", "xDS responses (pushes) sent", ["type"], registry=r)
        self.response_bytes = Counter("xds_response_bytes", "Bytes of xDS responses sent", ["type"], registry=r)
        self.acks = Counter("xds_acks", "ACKs received", ["type"], registry=r)
        self.nacks = Counter("xds_nacks", "NACKs received (Envoy rejected a config)", ["type"], registry=r)
        self.snapshot_build = Histogram(
            "snapshot_build_seconds",
            "Time to rebuild the snapshots a batch of source events touched",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.snapshot_nodes = Counter("snapshot_nodes_rebuilt", "Node snapshots rebuilt", registry=r)
        self.source_events = Counter("source_events", "Object events from sources", ["source", "kind"], registry=r)
        self.source_problems = Gauge("source_problems", "Invalid objects a source reports now", ["source"], registry=r)
        self.source_up = Gauge("source_up", "1 when the source answers", ["source"], registry=r)
        self.source_stale = Gauge(
            "source_stale", "1 while the source is down and its last known objects are kept", ["source"], registry=r
        )
        self.source_synced = Gauge(
            "source_synced", "1 once the source has loaded completely (listed every kind) at least once", ["source"],
            registry=r,
        )
        self.listener_conflicts = Gauge("listener_conflicts", "Listeners rejected for a port or name clash", registry=r)
