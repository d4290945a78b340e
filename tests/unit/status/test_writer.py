"""What the status writer sends: the patch (only when something changed, transition times kept) and which Events,
rate-limited per object."""

from __future__ import annotations

from envoy_control_plane.config import ClusterConfig, StatusConfig
from envoy_control_plane.metrics import Metrics
from envoy_control_plane.model import ObjectRef
from envoy_control_plane.sources.kubernetes.client import KubeError, ListResult
from envoy_control_plane.status.conditions import Condition, ListenerStatus
from envoy_control_plane.status.events import EventRateLimit
from envoy_control_plane.status.writer import StatusWriter, new_problems, status_patch

REF = ObjectRef("EgressListener", "default", "out")


def listener(accepted: tuple[str, str, str], programmed: tuple[str, str, str], endpoints: int = 1,
             generation: int = 3) -> ListenerStatus:
    conditions = (Condition("Accepted", *accepted), Condition("Programmed", *programmed))
    return ListenerStatus("aws", REF, "n", 9090, endpoints, generation, conditions)


OK = ("True", "Accepted", "fine")
RUNS = ("True", "Programmed", "runs")


def test_a_status_is_written_when_it_differs_and_keeps_transition_times_of_unchanged_conditions():
    first = status_patch(listener(OK, ("Unknown", "NoEnvoy", "none")), {}, "T1")
    assert first is not None
    assert [(c["type"], c["status"], c["lastTransitionTime"], c["observedGeneration"]) for c in first["conditions"]] == [
        ("Accepted", "True", "T1", 3), ("Programmed", "Unknown", "T1", 3)]
    assert status_patch(listener(OK, ("Unknown", "NoEnvoy", "none")), first, "T2") is None  # nothing changed

    second = status_patch(listener(OK, RUNS), first, "T2")
    assert second is not None
    assert [c["lastTransitionTime"] for c in second["conditions"]] == ["T1", "T2"]
    assert status_patch(listener(OK, RUNS, endpoints=2), second, "T3")["endpoints"] == 2
    # The same status with a new message or generation is rewritten, its transition time kept.
    third = status_patch(listener(OK, ("True", "Programmed", "other"), generation=4), second, "T4")
    assert [c["lastTransitionTime"] for c in third["conditions"]] == ["T1", "T2"]


def test_events_for_conditions_that_turn_false_or_change_while_false():
    conflict = ("False", "PortConflict", "port 9090 is taken by the older X")
    not_sent = ("False", "NotAccepted", "see Accepted")
    before = status_patch(listener(OK, RUNS), {}, "T1")
    assert new_problems(listener(conflict, not_sent), before) == [("PortConflict", conflict[2])]
    now = status_patch(listener(conflict, not_sent), before, "T2")
    assert new_problems(listener(conflict, not_sent), now) == []
    rejected = ("False", "Rejected", "Envoy says no")
    assert new_problems(listener(OK, rejected), now) == [("Rejected", "Envoy says no")]


def test_the_event_rate_limit_allows_a_burst_then_one_per_period_per_object():
    clock = [0.0]
    limit = EventRateLimit(burst=2, every=60, clock=lambda: clock[0])
    key, other = ("aws", REF), ("gcp", REF)
    assert [limit.allow(key) for _ in range(3)] == [True, True, False]
    assert limit.allow(other)  # another object has its own bucket
    clock[0] = 59
    assert not limit.allow(key)
    clock[0] = 61
    assert limit.allow(key) and not limit.allow(key)


class StubClient:
    """Plays the API server for the writer: objects' statuses, and failures by path."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, KubeError] = {}  # path fragment -> the error every matching request gets

    def _check(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        for fragment, error in self.fail.items():
            if fragment in path:
                raise error

    async def list(self, resource, namespace, *, page_size: int, timeout: float) -> ListResult:
        self._check("LIST", resource.path(namespace))
        return ListResult([], "1")

    async def get(self, path: str, *, timeout: float) -> dict:
        self._check("GET", path)
        return {"metadata": {"uid": "u"}}

    async def patch(self, path: str, patch: dict, *, timeout: float) -> dict:
        self._check("PATCH", path)
        return patch

    async def create(self, path: str, body: dict, *, timeout: float) -> dict:
        self._check("POST", path)
        return body


def writer_with(statuses: list[ListenerStatus]) -> tuple[StatusWriter, StubClient]:
    cluster = ClusterConfig(name="aws")
    writer = StatusWriter([cluster], lambda: statuses, StatusConfig(), "me", Metrics(), "default")
    stub = writer._clients["aws"] = StubClient()  # type: ignore[assignment]
    return writer, stub


def named(name: str, accepted: tuple[str, str, str] = OK) -> ListenerStatus:
    conditions = (Condition("Accepted", *accepted), Condition("Programmed", *RUNS))
    return ListenerStatus("aws", ObjectRef("EgressListener", "default", name), "n", 1, 0, 1, conditions)


async def test_a_status_the_server_refuses_is_not_retried_and_does_not_hold_back_the_others():
    writer, stub = writer_with([named("bad"), named("good")])
    stub.fail["/bad/status"] = KubeError("422 Invalid: no", 422)
    await writer.write_once()
    assert [m for m, p in stub.calls if m == "PATCH"] == ["PATCH", "PATCH"]  # bad (refused), then good
    stub.calls.clear()
    await writer.write_once()
    assert not [c for c in stub.calls if c[0] == "PATCH"]  # nothing new: neither is written again


async def test_a_cluster_that_fails_is_retried_after_a_backoff_not_every_round():
    writer, stub = writer_with([named("one")])
    stub.fail["egresslisteners"] = KubeError("connection refused")
    await writer.write_once()
    tried = len(stub.calls)
    await writer.write_once()
    assert len(stub.calls) == tried  # backing off
    writer._retry_at.clear()  # the backoff has passed
    stub.fail.clear()
    await writer.write_once()
    assert ("PATCH", "/apis/egresslistener.envoy.uw.systems/v1alpha1/namespaces/default/egresslisteners/one/status") \
        in stub.calls
