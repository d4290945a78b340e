"""Kubernetes clusters as sources: one KubernetesSource per configured cluster."""

from .reflector import WatchSettings
from .source import KubernetesSource

__all__ = ["KubernetesSource", "WatchSettings"]
