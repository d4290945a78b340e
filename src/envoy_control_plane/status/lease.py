"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica serves xDS; only the holder of the lease writes status and Events. The holder renews the lease every
`retry_period`; if it cannot renew for `renew_deadline` it stops leading (before the lease can expire: the deadline
is shorter than the duration, so two replicas never both believe they lead). Another replica takes the lease over
when it has seen the same record, unrenewed, for the lease's duration by its own clock (clocks of different machines
are never compared), or at once when the holder released it on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from pathlib import Path
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..sources.kubernetes.client import KubeClient, KubeError, Resource
from ..text import quote

log = logging.getLogger(__name__)

LEASES = Resource("Lease", "coordination.k8s.io/v1", "leases")
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_identity() -> str:
    """Who this replica is in the lease: the pod's name (POD_NAME) or the host's, and a random suffix, so that a
    restarted process is a new holder (as client-go's examples do)."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "envoy-control-plane"
    return f"{base[:100]}_{uuid.uuid4().hex[:8]}"


def own_namespace() -> str:
    """The control plane's namespace: POD_NAMESPACE, else the service account's, else "default"."""
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def micro_time(when: datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    """Acquires, renews and releases one Lease; `leading` says whether this replica holds it now."""

    def __init__(
        self,
        client: Callable[[], Awaitable[KubeClient]],
        settings: LeaseSettings,
        identity: str,
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        self._client = client
        self.settings = settings
        self.identity = identity
        self._on_change = on_change
        self.leading = False
        self.holder: str | None = None  # who holds the lease, as last read
        self._observed: tuple[Any, ...] | None = None  # the record as last read...
        self._observed_at = 0.0  # ...and when (monotonic) it was first seen so
        self._last_renew = 0.0
        self._record: dict[str, Any] | None = None  # the lease object as last read or written
        self._last_error: str | None = None

    @property
    def path(self) -> str:
        return LEASES.item_path(self.settings.namespace, self.settings.name)

    async def run(self) -> None:
        """Try to acquire, then renew, every retry period, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                held = await self._try_acquire_or_renew()
                self._last_error = None
            except KubeError as e:
                held = False
                if str(e) != self._last_error:  # once per distinct failure, not every retry period
                    log.warning("lease %s: cannot %s it: %s", self.path, "renew" if self.leading else "take", e)
                self._last_error = str(e)
            now = loop.time()
            if held:
                self._last_renew = now
                self._set_leading(True)
            elif self.leading and (self.holder not in (None, self.identity)
                                   or now - self._last_renew >= self.settings.renew_deadline):
                self._set_leading(False)  # another replica holds it, or it may expire before we renew it
            await asyncio.sleep(self.settings.retry_period)

    async def release(self) -> None:
        """Give the lease up (a clean shutdown), so another replica takes over at once instead of after expiry."""
        if not self.leading or self._record is None:
            return
        self._set_leading(False)
        record = dict(self._record)
        record["spec"] = {**record.get("spec", {}), "holderIdentity": "", "leaseDurationSeconds": 1,
                          "renewTime": micro_time()}
        try:
            await (await self._client()).update(self.path, record, timeout=REQUEST_TIMEOUT)
            log.info("lease %s released", self.path)
        except KubeError as e:
            log.warning("lease %s: cannot release (another replica takes over once it expires): %s", self.path, e)

    async def _try_acquire_or_renew(self) -> bool:
        client = await self._client()
        loop = asyncio.get_running_loop()
        try:
            current = await client.get(self.path, timeout=REQUEST_TIMEOUT)
        except KubeError as e:
            if e.code != 404:
                raise
            return await self._create(client)
        spec = current.get("spec") if isinstance(current.get("spec"), dict) else {}
        holder = spec.get("holderIdentity") or ""
        observed = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"),
                    (current.get("metadata") or {}).get("resourceVersion"))
        if observed != self._observed:
            self._observed, self._observed_at = observed, loop.time()
        self.holder = holder or None
        duration = spec.get("leaseDurationSeconds")
        duration = duration if isinstance(duration, int | float) and duration > 0 else self.settings.duration
        if holder and holder != self.identity and loop.time() < self._observed_at + duration:
            return False  # held by another replica, and renewed within its duration
        if holder != self.identity:
            log.info("lease %s: taking it over from %s", self.path, quote(holder) if holder else "nobody")
        now = micro_time()
        new_spec = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.settings.duration)),
            "renewTime": now,
        }
        if holder != self.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        try:
            # The resourceVersion read above makes this conditional: a replica that wrote in between wins.
            self._record = await client.update(self.path, {**current, "spec": new_spec}, timeout=REQUEST_TIMEOUT)
        except KubeError as e:
            if e.code == 409:
                return False
            raise
        self.holder = self.identity
        return True

    async def _create(self, client: KubeClient) -> bool:
        now = micro_time()
        lease = {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, math.ceil(self.settings.duration)),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            self._record = await client.create(LEASES.path(self.settings.namespace), lease, timeout=REQUEST_TIMEOUT)
        except KubeError as e:
            if e.code == 409:
                return False  # another replica created it first
            raise
        self.holder = self.identity
        return True

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            log.info("lease %s acquired as %s: this replica writes status", self.path, self.identity)
        else:
            log.warning("lease %s lost (or released): this replica stops writing status", self.path)
        self._on_change(leading)
