"""Assemble one node's resources from the world. Every piece is memoised by its inputs, so a rebuild is cheap."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import EgressListener, Listener
from ..state import World, listener_name, secret_key
from ..xds.resource import Resource
from ..xds.types import CLUSTER, ENDPOINT, LISTENER, SECRET
from .clusters import egress_cluster, ingress_cluster
from .endpoints import load_assignment
from .listeners import egress_listener, ingress_listener
from .secrets import Resolved, ServedSecrets, Use
from .tls import TlsNames

# Why a listener is held back (the reasons status conditions use).
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_INVALID = "SecretInvalid"
SECRETS_NOT_SERVED = "SecretsNotServed"


@dataclass(frozen=True)
class Addresses:
    ingress: str = "0.0.0.0"
    egress: str = "127.0.0.1"


@dataclass(frozen=True)
class ListenerProblem:
    """Something wrong with one listener's Secrets. `held_back`: the listener is not sent (else it is served with
    the last good version of a Secret); `reason` is one of the constants above, "" when not held back."""

    source: str
    listener: Listener
    message: str
    held_back: bool
    reason: str = ""


@dataclass
class NodeBuild:
    resources: dict[str, list[Resource]]
    problems: list[ListenerProblem] = field(default_factory=list)


def node_resources(world: World, node: str, addresses: Addresses) -> dict[str, list[Resource]]:
    """The node's clusters, endpoints and listeners (no secrets are served: see build_node)."""
    return build_node(world, node, addresses).resources


def build_node(
    world: World, node: str, addresses: Addresses, secrets: ServedSecrets | None = None, serve_secrets: bool = False
) -> NodeBuild:
    """The node's resources, and what is wrong with its listeners' Secrets.

    A listener with `tls` is sent only when both its Secrets can be served, and only when `serve_secrets` (the
    control plane's xds.insecure_secrets gate): a TLS listener without its certificate would only fail handshakes.
    The node gets exactly the Secrets its own listeners name.
    """
    build = NodeBuild({CLUSTER: [], ENDPOINT: [], LISTENER: [], SECRET: []})
    clusters, endpoints, listeners = build.resources[CLUSTER], build.resources[ENDPOINT], build.resources[LISTENER]
    served: dict[str, Resource] = {}
    node_listeners = world.listeners(node)
    for source, listener in zip(node_listeners.sources, node_listeners.accepted, strict=True):
        spec = listener.spec
        tls: TlsNames | None = None
        if spec.tls is not None:
            resolved = _resolve_tls(world, source, listener, secrets, serve_secrets, build)
            if resolved is None:
                continue
            tls = TlsNames(resolved[0].name, resolved[1].name)
            served.update((r.name, r) for r in resolved)
        if isinstance(listener, EgressListener):
            clusters.append(egress_cluster(listener, tls))
            endpoints.append(
                load_assignment(spec.targetcluster, spec.targetport, world.endpoints(spec.targetcluster))
            )
            listeners.append(egress_listener(listener, addresses.egress))
        else:
            clusters.append(ingress_cluster(listener))
            allowed = world.endpoints(spec.allow_cluster) if spec.allow_cluster else None
            listeners.append(ingress_listener(listener, addresses.ingress, allowed, tls))
    build.resources[ENDPOINT] = list({r.name: r for r in endpoints}.values())
    build.resources[SECRET] = [served[name] for name in sorted(served)]
    return build


def _resolve_tls(
    world: World,
    source: str,
    listener: Listener,
    secrets: ServedSecrets | None,
    serve_secrets: bool,
    build: NodeBuild,
) -> tuple[Resource, Resource] | None:
    """The certificate and CA resources of a listener's tls, or None (and a problem recorded) when it is held back."""
    assert listener.spec.tls is not None
    what = f"{listener.ref} (source {source}, Envoy listener {listener_name(listener)})"
    if not serve_secrets or secrets is None:
        message = (
            f"{what} held back: it uses tls, and this control plane does not serve Secrets (require client "
            "certificates with xds.tls.client_ca, or set xds.insecure_secrets: true; see the README's Security section)"
        )
        build.problems.append(ListenerProblem(source, listener, message, True, SECRETS_NOT_SERVED))
        return None
    tls = listener.spec.tls
    namespace = listener.ref.namespace
    results: list[Resolved] = [
        secrets.resolve(world, secret_key(source, namespace, tls.secret), Use.CERTIFICATE),
        secrets.resolve(world, secret_key(source, namespace, tls.ca_secret), Use.CA),
    ]
    held = False
    for field_name, result in zip(("tls.secret", "tls.validation"), results, strict=True):
        if result.problem is None:
            continue
        if result.resource is None:
            held = True
            message = f"{what} held back: spec.{field_name}: {result.problem}"
            build.problems.append(ListenerProblem(source, listener, message, True, result.reason))
        else:
            message = f"{what}: spec.{field_name}: {result.problem}"
            build.problems.append(ListenerProblem(source, listener, message, False))
    if held:
        return None
    certificate, ca = results[0].resource, results[1].resource
    assert certificate is not None and ca is not None
    return certificate, ca
