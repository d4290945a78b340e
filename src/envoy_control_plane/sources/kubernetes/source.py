"""One Kubernetes cluster as a source: a client, a Reflector per kind, and one status for the whole cluster."""

from __future__ import annotations

import asyncio
import logging
import random

from ...config import ClusterConfig
from ...model import CLUSTER_NAME_ANNOTATION, LISTENER_KINDS, KubeObject, ObjectRef
from ...state import World
from ...text import clip, redact_url
from ..status import SourceStatus
from .backoff import Backoff
from .client import KubeClient, KubeError, connect
from .reflector import RESOURCES, Reflector, WatchSettings

log = logging.getLogger(__name__)

DEFAULT_SETTINGS = WatchSettings()


class KubernetesSource:
    """Feeds the World with the pods and listeners of one cluster, as the source named after the cluster.

    `status` says whether the cluster answers (`up`), whether every kind was listed once (`synced`) and whether
    objects are being served from before an outage (`stale`); /debug/sources shows it with per-kind detail.
    A cluster that is no `listenersource` gives only its pods: its listeners and Secrets are never requested.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        world: World,
        settings: WatchSettings = DEFAULT_SETTINGS,
        rng: random.Random | None = None,
        annotation: str = CLUSTER_NAME_ANNOTATION,
    ) -> None:
        """`annotation`: the pod annotation naming a pod's Envoy cluster."""
        self.cluster = cluster
        self.annotation = annotation
        self.resources = [r for r in RESOURCES if cluster.listenersource or r.kind == "Pod"]
        self.world = world
        self.settings = settings
        self.status = SourceStatus(name=cluster.name, kind="kubernetes", detail=self._detail(None, []))
        self._rng = rng or random.Random()
        self._reflectors: list[Reflector] = []
        self._seeded: dict[ObjectRef, KubeObject] = {}

    def seed(self, objects: list[KubeObject]) -> list[KubeObject]:
        """The objects this cluster gave before a restart (the state file): each reflector starts knowing them, so
        an object invalid now keeps its saved version, and the World serves them until the cluster is listed.
        Returns those of the kinds watched now (the others have no reflector to ever remove them)."""
        kinds = {r.kind for r in self.resources}
        kept = [obj for obj in objects if obj.ref.kind in kinds]
        self._seeded = {obj.ref: obj for obj in kept}
        self.status.stale = bool(kept)
        return kept

    def watch_counts(self) -> dict[str, tuple[int, int]]:
        """Per kind: (relists, watch requests answered) since start, for the Kubernetes metrics."""
        return {r.resource.kind: (r.relists, r.watches) for r in self._reflectors}

    async def run(self) -> None:
        """Connect (retrying with backoff), then list and watch every kind, until cancelled."""
        client = await self._connected()
        try:
            self._reflectors = [
                Reflector(client, resource, self.world, self.cluster.name, self.cluster.namespace, self.settings,
                          lambda: self._refresh(client), self._rng,
                          label_selector=(self.cluster.secret_selector or "") if resource.kind == "Secret" else "",
                          annotation=self.annotation)
                for resource in self.resources
            ]
            for reflector in self._reflectors:
                kind = reflector.resource.kind
                reflector.known = {ref: obj for ref, obj in self._seeded.items() if ref.kind == kind}
            self._seeded = {}
            async with asyncio.TaskGroup() as group:
                for reflector in self._reflectors:
                    group.create_task(reflector.run(), name=f"{self.cluster.name}-{reflector.resource.plural}")
        finally:
            await client.close()

    async def _connected(self) -> KubeClient:
        """A client, once the kubeconfig loads and the credentials come; each new failure is logged once, shown in
        /debug/sources, and retried with backoff (a kubeconfig Secret may be fixed, a plugin may recover)."""
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max, self._rng)
        while True:
            try:
                return await connect(self.cluster.kubeconfig, self.cluster.context)
            except KubeError as e:
                error = str(e)
                if self.status.last_error != error:
                    log.error("%s: %s; retrying", self.cluster.name, error)
            except Exception as e:  # a bug must not end the cluster's source silently
                error = f"unexpected error connecting: {type(e).__name__}: {clip(str(e))}"
                if self.status.last_error != error:
                    log.exception("%s: %s; retrying", self.cluster.name, error)
            self.status.up, self.status.last_error = False, error
            self.status.touch()
            await asyncio.sleep(backoff.next())

    def _refresh(self, client: KubeClient) -> None:
        """Fold the reflectors' states into the cluster's status."""
        reflectors, status = self._reflectors, self.status
        status.synced = all(r.listed for r in reflectors)
        status.up = all(r.up for r in reflectors)
        status.stale = any((r.listed or r.known) and not r.up for r in reflectors)  # known: restored at start
        status.last_error = next((r.last_error for r in reflectors if r.last_error), None)
        status.problems = sorted(problem.message for r in reflectors for problem in r.problems.values())
        status.invalid = {ref: problem for r in reflectors for ref, problem in r.problems.items()
                          if ref.kind in LISTENER_KINDS and ref.namespace}  # an unnamed one has no status to set
        status.detail = self._detail(client, reflectors)
        status.touch()

    def _detail(self, client: KubeClient | None, reflectors: list[Reflector]) -> dict[str, object]:
        return {
            "server": redact_url(client.server) if client else None,  # a kubeconfig may embed user:pass@
            "namespace": self.cluster.namespace,
            "kinds": {r.resource.kind: r.to_json() for r in reflectors},
        }
