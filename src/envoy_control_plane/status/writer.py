"""The Kubernetes status writer: the only part of the control plane that writes to an API server.

While this replica holds the lease (lease.py), it sends each listener's conditions (conditions.py) back to the
cluster the object came from: `status.conditions` (with lastTransitionTime and observedGeneration) and
`status.endpoints`, with a JSON merge patch on the object's `/status` subresource, and only when they differ from
what the object's status already says. What an object's status says is read with one list per kind and cluster when
the lease is acquired and every `resync_s` after that (which also repairs a status edited by hand); between lists,
the answer of each patch is the record. Rejections and NACKs also become Warning Events on the object (events.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import ClusterConfig, StatusConfig
from ..metrics import Metrics
from ..model import ObjectRef
from ..sources.kubernetes.backoff import Backoff
from ..sources.kubernetes.client import KubeClient, KubeError, connect
from ..sources.kubernetes.reflector import RESOURCES
from ..state import SourceRef
from .conditions import FALSE, ListenerStatus
from .events import EVENTS, EventRateLimit, event_body
from .lease import LeaderElection, LeaseSettings

log = logging.getLogger(__name__)

LISTENER_RESOURCES = {r.kind: r for r in RESOURCES if r.kind != "Pod"}
REQUEST_TIMEOUT = 10.0


@dataclass
class _Observed:
    uid: str | None
    status: dict[str, Any]  # the object's status as the cluster has it


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_patch(wanted: ListenerStatus, current: dict[str, Any], now: str) -> dict[str, Any] | None:
    """The status to write, or None when the object's status already says it. A condition keeps its
    lastTransitionTime while its status stays the same."""
    previous = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    conditions = []
    for condition in wanted.conditions:
        before = previous.get(condition.type) or {}
        same = before.get("status") == condition.status and before.get("lastTransitionTime")
        entry: dict[str, Any] = {**condition.to_json(), "lastTransitionTime": before["lastTransitionTime"] if same
                                 else now}
        if wanted.generation:
            entry["observedGeneration"] = wanted.generation
        conditions.append(entry)
    status = {"conditions": conditions, "endpoints": wanted.endpoints}
    if current.get("conditions") == conditions and current.get("endpoints") == wanted.endpoints:
        return None
    return status


def new_problems(wanted: ListenerStatus, current: dict[str, Any]) -> list[tuple[str, str]]:
    """(reason, message) of each condition that turned False, or changed while False, since `current`: the Events to
    send. NotAccepted is left out: the Accepted condition's Event already says why."""
    previous = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    found = []
    for condition in wanted.conditions:
        if condition.status != FALSE or condition.reason == "NotAccepted":
            continue
        before = previous.get(condition.type) or {}
        if (before.get("status"), before.get("reason"), before.get("message")) != (
            condition.status, condition.reason, condition.message
        ):
            found.append((condition.reason, condition.message))
    return found


class StatusWriter:
    def __init__(
        self,
        clusters: Sequence[ClusterConfig],
        statuses: Callable[[], Iterable[ListenerStatus]],
        config: StatusConfig,
        identity: str,
        metrics: Metrics,
        namespace: str,
        inputs: Callable[[], object] | None = None,
    ) -> None:
        """`namespace` is where the lease lives (config.status.lease.namespace, resolved by the caller). `inputs`
        returns a value that stays equal while `statuses()` would say the same (conditions.inputs_version): a round
        with nothing new, no re-list due and no failure to retry then computes nothing. Without it every round
        computes every status."""
        self._clusters = {c.name: c for c in clusters}
        self._listener_sources = [c.name for c in clusters if c.listenersource]  # the others have no listeners to read
        self._statuses = statuses
        self._inputs = inputs
        self._done: object = None  # inputs() of the last round that wrote everything (None: none did)
        self.rounds = 0  # rounds that computed the statuses (tests and benches count them)
        self.config = config
        self.identity = identity
        self._metrics = metrics
        self._clients: dict[str, KubeClient] = {}
        self._observed: dict[SourceRef, _Observed] = {}
        self._listed: dict[str, float] = {}  # cluster -> when (monotonic) its listeners' statuses were last read
        self._failing: dict[str, str] = {}  # cluster -> the last error, logged once
        self._backoffs: dict[str, Backoff] = {}  # cluster -> its backoff while writes to it fail
        self._retry_at: dict[str, float] = {}
        self._refused: dict[SourceRef, dict[str, Any]] = {}  # object -> a status the API server refused (400, 422)
        self._limits = EventRateLimit(config.events.burst, config.events.every_s)
        lease = config.lease
        self.lease = LeaderElection(
            lambda: self._client(lease.cluster or clusters[0].name),
            LeaseSettings(namespace, lease.name, lease.duration_s, lease.renew_deadline_s, lease.retry_period_s),
            identity,
            self._leadership,
        )

    async def run(self) -> None:
        """Hold (or wait for) the lease and write what changed every `interval_s`, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.lease.run(), name="status-lease")
                group.create_task(self._write_loop(), name="status-writer")
        finally:
            await self.lease.release()
            for client in self._clients.values():
                await client.close()
            self._clients.clear()

    async def _write_loop(self) -> None:
        await asyncio.sleep(self.config.startup_grace_s)  # Envoys reconnecting to a new process are not "gone"
        while True:
            if self.lease.leading:
                await self.write_once()
            await asyncio.sleep(self.config.interval_s)

    def _leadership(self, leading: bool) -> None:
        self._metrics.status_leader.set(int(leading))
        self._observed.clear()  # a new term starts from what the clusters say, not from an older memory
        self._listed.clear()
        self._done = None

    async def write_once(self) -> None:
        """One round: every Kubernetes listener whose status differs from what its object says is patched. Skipped
        when the last round wrote everything, nothing the statuses depend on changed since, and no re-list is due."""
        inputs = self._inputs() if self._inputs is not None else None
        if inputs is not None and inputs == self._done and not self._resync_due():
            return
        self._done = None
        self.rounds += 1
        by_cluster: dict[str, list[ListenerStatus]] = {}
        for status in self._statuses():
            if status.source in self._clusters:
                by_cluster.setdefault(status.source, []).append(status)
        loop = asyncio.get_running_loop()
        for name in self._listener_sources:
            if loop.time() < self._retry_at.get(name, 0.0):
                continue  # failed lately: wait out the backoff
            try:
                client = await self._client(name)
                await self._write_cluster(name, client, by_cluster.get(name, []))
            except KubeError as e:
                self._metrics.status_errors.labels(name).inc()
                delay = e.retry_after or self._backoffs.setdefault(name, Backoff(1.0, 30.0)).next()
                self._retry_at[name] = loop.time() + delay
                if self._failing.get(name) != str(e):
                    log.warning("status of %s's listeners not written: %s; retrying", name, e)
                self._failing[name] = str(e)
            else:
                self._backoffs.pop(name, None)
                if self._failing.pop(name, None) is not None:
                    log.info("status of %s's listeners written again", name)
        known = {s.key for statuses in by_cluster.values() for s in statuses}
        for key in [k for k in self._observed if k not in known]:
            del self._observed[key]  # deleted: if it comes back, it is read again
        for key in [k for k in self._refused if k not in known]:
            del self._refused[key]
        self._limits.keep_only(known)
        if not self._failing:
            self._done = inputs

    def _resync_due(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(self._listed.get(name) is None or now - self._listed[name] >= self.config.resync_s
                   for name in self._listener_sources)

    async def _write_cluster(self, name: str, client: KubeClient, statuses: list[ListenerStatus]) -> None:
        loop = asyncio.get_running_loop()
        listed = self._listed.get(name)
        if listed is None or loop.time() - listed >= self.config.resync_s:
            await self._read_statuses(name, client)
            self._listed[name] = loop.time()
        for status in statuses:
            await self._write(client, status)

    async def _read_statuses(self, name: str, client: KubeClient) -> None:
        """What every listener object of the cluster says in its status now."""
        namespace = self._clusters[name].namespace
        found: dict[SourceRef, _Observed] = {}
        for kind, resource in LISTENER_RESOURCES.items():
            listed = await client.list(resource, namespace, page_size=500, timeout=REQUEST_TIMEOUT)
            for item in listed.items:
                meta = item.get("metadata") or {}
                ref = ObjectRef(kind, str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
                found[(name, ref)] = _observed(item)
        for key in [k for k in self._observed if k[0] == name]:
            del self._observed[key]
        self._observed.update(found)

    async def _write(self, client: KubeClient, wanted: ListenerStatus) -> None:
        ref = wanted.ref
        resource = LISTENER_RESOURCES[ref.kind]
        observed = self._observed.get(wanted.key)
        patch: dict[str, Any] | None = None
        try:
            if observed is None:  # created since the last list
                observed = self._observed[wanted.key] = _observed(
                    await client.get(resource.item_path(ref.namespace, ref.name), timeout=REQUEST_TIMEOUT)
                )
            patch = status_patch(wanted, observed.status, _now())
            if patch is None or _same_but_time(self._refused.get(wanted.key), patch):
                return
            answer = await client.patch(resource.item_path(ref.namespace, ref.name, "status"), {"status": patch},
                                        timeout=REQUEST_TIMEOUT)
        except KubeError as e:
            if e.code == 404:  # deleted meanwhile: the world hears of it through the watch
                self._observed.pop(wanted.key, None)
                return
            if e.code in (400, 422) and patch is not None:  # this object's status is refused: not the others'
                self._refused[wanted.key] = patch
                self._metrics.status_errors.labels(wanted.source).inc()
                log.warning("status of %s (cluster %s) refused, not retried until it changes: %s", ref,
                            wanted.source, e)
                return
            raise
        self._refused.pop(wanted.key, None)
        self._metrics.status_patches.labels(wanted.source).inc()
        log.info("status of %s (cluster %s) written: %s", ref, wanted.source,
                 ", ".join(f"{c.type}={c.status} ({c.reason})" for c in wanted.conditions))
        problems = new_problems(wanted, observed.status)
        self._observed[wanted.key] = _Observed(observed.uid, answer.get("status") or patch)
        for reason, message in problems:
            await self._event(client, wanted, observed.uid, reason, message)

    async def _event(self, client: KubeClient, wanted: ListenerStatus, uid: str | None, reason: str, message: str
                     ) -> None:
        if not self._limits.allow(wanted.key):
            self._metrics.status_events_dropped.inc()
            log.debug("event on %s dropped (rate limit): %s", wanted.ref, reason)
            return
        body = event_body(wanted.key, uid, reason, message, self.identity)
        try:
            await client.create(EVENTS.path(wanted.ref.namespace), body, timeout=REQUEST_TIMEOUT)
        except KubeError as e:
            if e.code not in (404, 409):  # a namespace being deleted; a name already taken
                raise
            return
        self._metrics.status_events.labels(wanted.source).inc()

    async def _client(self, name: str) -> KubeClient:
        client = self._clients.get(name)
        if client is None:
            cluster = self._clusters[name]
            client = self._clients[name] = await connect(cluster.kubeconfig, cluster.context)
        return client


def _same_but_time(refused: dict[str, Any] | None, patch: dict[str, Any]) -> bool:
    """Whether `patch` is a status already refused, but for the transition times it would set."""
    if refused is None:
        return False

    def timeless(status: dict[str, Any]) -> Any:
        conditions = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]]
        return conditions, status["endpoints"]

    return timeless(refused) == timeless(patch)


def _observed(obj: dict[str, Any]) -> _Observed:
    status = obj.get("status")
    return _Observed((obj.get("metadata") or {}).get("uid"), status if isinstance(status, dict) else {})
