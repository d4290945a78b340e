"""SDS: the Secrets a node's listeners name, as Envoy `Secret` resources, and the rule for which version is served.

One Kubernetes Secret can serve two uses, each its own SDS resource, named so that config_dump shows where it came
from: `<source>/<namespace>/<name>` is the certificate and key (tls.crt, tls.key) Envoy presents, and
`<source>/<namespace>/<name>/ca.crt` the CA that peers' certificates must chain to. A rotation (new data in the
Secret) changes these resources only; listeners and clusters name them and do not change.

A Secret that is missing or unusable for a use holds its listener back, unless a good version was served before:
that version stays in force (a Secret deleted or broken by mistake must not take down working listeners), and the
problem is still reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from .. import certs
from ..model import Secret
from ..state import SourceRef, World
from ..xds.resource import Resource
from ..xds.types import SECRET
from .common import memo_latest

log = logging.getLogger(__name__)

class Use(Enum):
    CERTIFICATE = "certificate"  # tls.crt and tls.key: what Envoy presents
    CA = "ca"  # ca.crt: what a peer's certificate must chain to


def sds_name(key: SourceRef, use: Use) -> str:
    source, ref = key
    name = f"{source}/{ref.namespace}/{ref.name}"
    return name if use is Use.CERTIFICATE else f"{name}/ca.crt"


def use_problem(secret: Secret, use: Use) -> str | None:
    """Why this Secret cannot serve this use, or None. Never quotes the data."""
    keys = ("tls.crt", "tls.key") if use is Use.CERTIFICATE else ("ca.crt",)
    present = {"tls.crt": secret.cert, "tls.key": secret.key, "ca.crt": secret.ca}
    for data_key in keys:
        problem = secret.problem(data_key)
        if problem:
            return problem
        if not present[data_key]:
            return f"has no data.{data_key}"
    return None


@memo_latest(key=lambda name, _use, _secret: name)
def secret_resource(name: str, use: Use, secret: Secret) -> Resource:
    """Encoded once per content and shared by every node whose listeners name it."""
    if use is Use.CERTIFICATE:
        message = secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=secret.cert),
                private_key=base_pb2.DataSource(inline_bytes=secret.key),
            ),
        )
    else:
        message = secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=secret.ca)
            ),
        )
    return Resource.of(SECRET, name, message)


@dataclass(frozen=True)
class Resolved:
    """What serves one use of one Secret: the resource (None: the listener is held back), and any problem."""

    resource: Resource | None
    problem: str | None = None
    reason: str = ""  # SecretNotFound, SecretInvalid or "" (served)


class ServedSecrets:
    """The last version of each Secret that was good for a use, kept while listeners name it.

    Owned by the controller, one per control plane: `resolve` is called while a node is translated, `forget_unused`
    after a rebuild drops what no listener names any more.
    """

    def __init__(self) -> None:
        self._good: dict[tuple[SourceRef, Use], Secret] = {}

    def resolve(self, world: World, key: SourceRef, use: Use) -> Resolved:
        name = sds_name(key, use)
        current = world.secret(key)
        if current is None:
            problem, reason = f"{key[1]} (source {key[0]}) not found", "SecretNotFound"
        else:
            problem = use_problem(current, use)
            if problem is None:
                if self._good.get((key, use)) != current:
                    pem = current.cert if use is Use.CERTIFICATE else current.ca
                    log.info("SDS secret %s in force: %s", name, certs.describe(pem))
                self._good[(key, use)] = current
                return Resolved(secret_resource(name, use, current))
            problem, reason = f"{key[1]} (source {key[0]}): {problem}", "SecretInvalid"
        kept = self._good.get((key, use))
        if kept is not None:
            return Resolved(secret_resource(name, use, kept), f"{problem}; its last good version stays in force", "")
        return Resolved(None, problem, reason)

    def forget_unused(self, world: World) -> None:
        for entry in [e for e in self._good if not world.secret_in_use(e[0])]:
            del self._good[entry]
