"""xDS type URLs, in one place, and the order in which updates are pushed.

Make-before-break: secrets before the clusters and listeners that use them, clusters before their endpoints, and
clusters and endpoints before the listeners that route to them.
"""

from ..text import clip

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

PUSH_ORDER: tuple[str, ...] = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)
# Types whose state-of-the-world response carries every resource (absence means delete).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})

SHORT_NAMES = {SECRET: "SDS", CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}


def short(type_url: str) -> str:
    """CDS, EDS, ... for logs and /debug/nodes; anything else (a client's choice) clipped and escaped."""
    return SHORT_NAMES.get(type_url) or clip(type_url, 100)


def label(type_url: str) -> str:
    """The metric label of a type: CDS, EDS, ... or `other`, so a client cannot create label series at will."""
    return SHORT_NAMES.get(type_url, "other")
