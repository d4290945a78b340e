"""k8s-envoy-control-plane: an Envoy xDS control plane fed by Kubernetes clusters and manifest files."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("k8s-envoy-control-plane")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
