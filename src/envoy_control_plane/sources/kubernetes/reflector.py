"""List, then watch, one kind of object in one cluster, keeping the World in step.

The loop: list (every page) and make the World's objects of this kind exactly the listed ones, then watch from the
list's resourceVersion, with bookmarks and a server-side timeout, resuming from the last version seen (event or
bookmark) whenever the stream ends or breaks. Only a 410 Expired (or a 504 "Too large resource version", when the
server went back in time) forces a relist, which turns what vanished meanwhile into deletions; the first relist comes
at once, the ones after it without a healthy watch in between back off, as client-go's do (no relist storms). A 429
waits as long as its Retry-After says. A kind counts as `up` once a list answered or a watch delivered its first event
(or bookmark): a watch that is accepted and ends at once, with nothing, is a failure. While the cluster cannot be
reached nothing is removed: its last known objects stay, marked stale.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...model import API_VERSIONS, CLUSTER_NAME_ANNOTATION, KubeObject, ObjectError, ObjectRef, UnnamedError, identify, parse_object
from ...state import World
from ...text import clip, quote
from ..status import InvalidObject
from .backoff import Backoff
from .client import KubeClient, KubeError, Resource, WatchEvent

log = logging.getLogger(__name__)

RESOURCES = (
    Resource("Pod", API_VERSIONS["Pod"], "pods"),
    Resource("IngressListener", API_VERSIONS["IngressListener"], "ingresslisteners"),
    Resource("EgressListener", API_VERSIONS["EgressListener"], "egresslisteners"),
    Resource("Secret", API_VERSIONS["Secret"], "secrets"),
)
# Finished pods are never endpoints; leaving them out keeps lists small where many Jobs run. A pod that finishes
# leaves the selection, and the API server reports that as DELETED.
FIELD_SELECTORS = {
    "Pod": "status.phase!=Succeeded,status.phase!=Failed",
    # Only kubernetes.io/tls and Opaque Secrets can be referenced. A field selector cannot say "one of two types", so
    # it leaves out the common types that never can (service account tokens, registry credentials, Helm releases);
    # parse_object drops the rest, and Opaque Secrets without ca.crt, as they arrive.
    "Secret": ",".join(
        f"type!={t}"
        for t in (
            "kubernetes.io/service-account-token",
            "kubernetes.io/dockercfg",
            "kubernetes.io/dockerconfigjson",
            "kubernetes.io/basic-auth",
            "kubernetes.io/ssh-auth",
            "bootstrap.kubernetes.io/token",
            "helm.sh/release.v1",
        )
    ),
}
# Kinds that a ClusterRole may not grant yet (an upgrade that did not update it): a 403 counts as "not served".
OPTIONAL_READS = frozenset({"Secret"})


@dataclass(frozen=True)
class WatchSettings:
    watch_timeout: int = 300  # server-side timeoutSeconds of a watch, jittered up to twice that to spread reconnects
    read_grace: float = 60.0  # give up on a watch connection silent for its timeout plus this long
    connect_timeout: float = 10.0  # to open a watch connection
    list_timeout: float = 60.0  # for each page of a list, connecting included
    page_size: int = 500
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    absent_retry: float = 60.0  # how often to look again for a kind the cluster does not serve (CRD not installed)
    short_watch: float = 1.0  # a watch that ends sooner than this without any event failed (client-go's rule)


class Reflector:
    """One kind in one cluster; its attributes are its status, read by KubernetesSource."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        world: World,
        source: str,
        namespace: str | None,
        settings: WatchSettings,
        on_change: Callable[[], None],
        rng: random.Random | None = None,
        label_selector: str = "",
        annotation: str = CLUSTER_NAME_ANNOTATION,
    ) -> None:
        """`annotation`: the pod annotation naming a pod's Envoy cluster."""
        self.client = client
        self.annotation = annotation
        self.resource = resource
        self.label_selector = label_selector
        self.world = world
        self.source = source
        self.namespace = namespace
        self.settings = settings
        self._on_change = on_change  # told after every event and every change of the status below
        self._rng = rng or random.Random()
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max, self._rng)
        self._relist_backoff = Backoff(settings.backoff_initial, settings.backoff_max, self._rng)
        self._relists_in_a_row = 0  # forced relists since a watch last delivered an event
        # status
        self.listed = False  # listed completely at least once
        self.up = False  # the last list or watch request was answered
        self.absent = False  # the cluster does not serve this kind
        self.resource_version: str | None = None  # where the watch resumes; None: relist first
        self.last_error: str | None = None
        self.relists = 0
        self.watches = 0  # watch requests answered
        # the objects this reflector gave the World (the last good version of each), and the invalid ones
        self.known: dict[ObjectRef, KubeObject] = {}
        self.problems: dict[ObjectRef, InvalidObject] = {}

    def to_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed, "up": self.up, "absent": self.absent, "resource_version": self.resource_version,
            "objects": len(self.known), "relists": self.relists, "watches": self.watches,
            "last_error": self.last_error,
        }

    async def run(self) -> None:
        """List and watch until cancelled; every failure is reported in the status and retried."""
        while True:
            try:
                if self.resource_version is None and not await self._relist():
                    await asyncio.sleep(self.settings.absent_retry)
                    continue
                if await self._watch():
                    continue
            except KubeError as e:
                if e.expired or e.too_large_resource_version:
                    await self._relist_soon(e)
                    continue
                self._failed(e)
                if e.retry_after is not None:  # 429: the server says when
                    await asyncio.sleep(e.retry_after)
                    continue
            except Exception:  # a bug must not end the cluster's watch for good: report it, resync, go on
                log.exception("%s: %s: unexpected error; relisting", self.source, self.resource.kind)
                self._failed(KubeError("unexpected error (see the log)"))
                self.resource_version = None
            await asyncio.sleep(self._backoff.next())

    async def _relist_soon(self, e: KubeError) -> None:
        """Forget the resourceVersion: the next round lists from scratch. The first relist comes at once (deletions
        in the gap must not wait); more of them without a healthy watch in between back off."""
        why = "expired" if e.expired else "is ahead of the server"
        log.info("%s: %s: resourceVersion %s %s; relisting", self.source, self.resource.kind, self.resource_version,
                 why)
        self.resource_version = None
        if self._relists_in_a_row > 0:
            await asyncio.sleep(self._relist_backoff.next())
        self._relists_in_a_row += 1

    async def _relist(self) -> bool:
        """Make the World's objects exactly the cluster's; False when the cluster does not serve the kind."""
        try:
            listed = await self.client.list(
                self.resource, self.namespace, field_selector=FIELD_SELECTORS.get(self.resource.kind, ""),
                label_selector=self.label_selector, page_size=self.settings.page_size,
                timeout=self.settings.list_timeout,
            )
        except KubeError as e:
            if (e.code == 404 and self.resource.kind != "Pod") or (e.code == 403 and self.resource.kind in OPTIONAL_READS):
                self._set_absent(e)
                return False
            raise
        objects: dict[ObjectRef, KubeObject] = {}
        problems: dict[ObjectRef, InvalidObject] = {}
        for item in listed.items:
            ref, obj, problem = self._parse(item)
            if problem is not None:
                problems[ref] = problem
                obj = self.known.get(ref)  # an object that turned invalid keeps its last good version
            if obj is not None:
                objects[ref] = obj
        self.known = objects
        self._set_problems(problems)
        self.world.replace(self.source, objects.values(), kinds=[self.resource.kind])
        self.resource_version = listed.resource_version
        self.listed, self.absent = True, False
        self.relists += 1
        self._answered()
        log.info("%s: listed %d %s objects at resourceVersion %s", self.source, len(objects),
                 self.resource.kind, self.resource_version)
        return True

    async def _watch(self) -> bool:
        """Follow changes until the server ends the stream; whether any event (or bookmark) came."""
        assert self.resource_version is not None
        timeout = self._rng.randint(self.settings.watch_timeout, 2 * self.settings.watch_timeout)
        stream = await self.client.watch(
            self.resource, self.namespace, resource_version=self.resource_version,
            field_selector=FIELD_SELECTORS.get(self.resource.kind, ""), label_selector=self.label_selector,
            timeout_seconds=timeout, connect_timeout=self.settings.connect_timeout,
            read_timeout=timeout + self.settings.read_grace,
        )
        self.watches += 1
        loop = asyncio.get_running_loop()
        opened, events = loop.time(), 0
        try:
            async for event in stream:
                self._apply(event)
                if events == 0:  # the watch proved healthy
                    self._relists_in_a_row = 0
                    self._relist_backoff.reset()
                    self._answered()
                events += 1
        finally:
            await stream.close()
        if events == 0 and loop.time() - opened < self.settings.short_watch:
            raise KubeError("the watch ended at once, with no event")
        return events > 0

    def _apply(self, event: WatchEvent) -> None:
        if event.type in ("ADDED", "MODIFIED"):
            ref, obj, problem = self._parse(event.object)
            if problem is not None:
                self._set_problems({**self.problems, ref: problem})  # the last good version stays
            elif obj is not None:
                self.known[ref] = obj
                self._clear_problem(ref)
                self.world.upsert(self.source, obj)
        elif event.type == "DELETED":
            try:
                ref = identify(self.resource.kind, event.object)
            except UnnamedError as e:
                log.warning("%s: ignoring the deletion of an object without a usable name: %s", self.source, e)
            else:
                self.known.pop(ref, None)
                self._clear_problem(ref)
                self.world.delete(self.source, ref)
        elif event.type != "BOOKMARK":
            log.debug("%s: %s: ignoring a watch event of type %s", self.source, self.resource.kind, quote(event.type))
        if event.resource_version:
            self.resource_version = event.resource_version
        self._on_change()

    def _parse(self, doc: Any) -> tuple[ObjectRef, KubeObject | None, InvalidObject | None]:
        """The object, or the problem with it (keyed by its ref; all unnamed ones of the kind share one key).

        Whatever the server sends, nothing raises: one malformed object must not stop the others' updates.
        """
        kind = self.resource.kind
        if isinstance(doc, dict):
            doc = {"kind": kind, "apiVersion": self.resource.api_version, **doc}  # lists may omit them
        try:
            obj = parse_object(doc, cluster_name_annotation=self.annotation)
            if obj is not None and obj.ref.kind != kind:
                raise ObjectError(str(obj.ref), "kind", f"sent as a {kind}")
            return identify(kind, doc), obj, None
        except UnnamedError as e:
            unnamed = ObjectRef(kind, "", "(unnamed)")
            return unnamed, None, InvalidObject(unnamed, str(e))
        except ObjectError as e:
            ref = identify(kind, doc)
            return ref, None, InvalidObject.of(ref, doc, str(e))
        except Exception as e:  # parse_object raises only ObjectError: a bug, which must not stop the watch
            log.exception("%s: %s: unexpected error while parsing an object", self.source, kind)
            unparsed = ObjectRef(kind, "", "(unparsed)")
            return unparsed, None, InvalidObject(unparsed, f"{kind}: cannot parse: {type(e).__name__}: {clip(str(e))}")

    def _set_problems(self, problems: dict[ObjectRef, InvalidObject]) -> None:
        for ref, problem in problems.items():
            if self.problems.get(ref) != problem:
                log.error("%s: invalid object, ignored (its last good version is kept): %s", self.source,
                          problem.message)
        changed = problems != self.problems
        self.problems = problems
        if changed:
            self._on_change()

    def _clear_problem(self, ref: ObjectRef) -> None:
        if ref in self.problems:
            self._set_problems({r: p for r, p in self.problems.items() if r != ref})

    def _set_absent(self, e: KubeError) -> None:
        if not self.absent:
            log.warning("%s: the cluster does not serve %s or lets us read none (%s); looking again every %gs", self.source,
                        self.resource.plural, e, self.settings.absent_retry)
        self.known.clear()
        self._set_problems({})
        self.world.replace(self.source, [], kinds=[self.resource.kind])
        self.listed = self.absent = True
        self._answered()

    def _answered(self) -> None:
        if not self.up:
            log.info("%s: %s: the API server answers", self.source, self.resource.kind)
        self._backoff.reset()
        self.up, self.last_error = True, None
        self._on_change()

    def _failed(self, e: KubeError) -> None:
        if self.last_error is None:  # the first failure since the server last answered
            kept = "; its last known objects stay until it answers" if self.listed else ""
            log.warning("%s: %s: %s; retrying%s", self.source, self.resource.kind, e, kept)
        self.up, self.last_error = False, str(e)
        self._on_change()
