"""Make-before-break between resource types: the rules both protocols (sotw.py, delta.py) follow, in one place.

- Responses go out in PUSH_ORDER (secrets, clusters, endpoints, listeners, routes), then any other type by name.
- One response per type is in flight, and a type waits while an earlier type's response is unanswered, with one
  exception: endpoints may follow an unanswered clusters response. Envoy ACKs CDS only once updated EDS clusters have
  warmed, and they warm only on an EDS response; Envoy still processes a stream's responses in order, so the EDS
  response lands after the clusters. Listeners wait for both answers, so they reach clusters that are warm.
- Removals go last: a resource of a key type of HOLDERS stays while a resource the client holds of one of the value
  types names it in its refs (a listener its clusters and secrets, a cluster its load assignment and secrets).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, SECRET

HOLDERS: dict[str, tuple[str, ...]] = {SECRET: (LISTENER, CLUSTER), CLUSTER: (LISTENER,), ENDPOINT: (CLUSTER,)}


def push_order(types: Iterable[str]) -> list[str]:
    """The types of a stream in the order their responses may go out."""
    return list(PUSH_ORDER) + sorted(set(types) - set(PUSH_ORDER))


def may_send(type_url: str, unanswered: Collection[str]) -> bool:
    """Whether a response of `type_url` may go out while responses of these earlier types are unanswered."""
    return not unanswered or (type_url == ENDPOINT and all(t == CLUSTER for t in unanswered))
