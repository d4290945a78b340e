"""The shared end-to-end harness: everything a test needs to run a real Envoy against the control plane.

- wait:      `wait_until(predicate, timeout)`, the only way tests wait for something to happen
- net:       free ports, TCP backends that answer with their name, a line client that returns None when refused
- manifests: Kubernetes-style pods and listeners written (atomically) into a watched directory
- envoy:     an Envoy process with its admin API (`/stats`, `/clusters`, `/config_dump`, `/ready`)
- plane:     the control plane in this process or as a subprocess, and its admin API (`/metrics`, `/debug/...`)

Every process is started by a pytest fixture (see ../conftest.py) that stops it on teardown, pass or fail.
"""

from .envoy import Envoy
from .manifests import ManifestDir, egress, ingress, pod
from .net import Backend, BackendGroup, free_port, start_backend, start_backends, talk, talk_many
from .plane import InProcessPlane, PlaneAdmin, PlaneProcess, loopback_config, metric_value
from .wait import settle, wait_until

__all__ = [
    "Backend",
    "BackendGroup",
    "Envoy",
    "ManifestDir",
    "InProcessPlane",
    "PlaneAdmin",
    "PlaneProcess",
    "egress",
    "free_port",
    "ingress",
    "loopback_config",
    "metric_value",
    "pod",
    "settle",
    "start_backend",
    "start_backends",
    "talk",
    "talk_many",
    "wait_until",
]
