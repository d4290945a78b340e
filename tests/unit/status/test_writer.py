"""What the status writer sends: the patch (only when something changed, transition times kept) and which Events,
rate-limited per object."""

from __future__ import annotations

from envoy_control_plane.model import ObjectRef
from envoy_control_plane.status.conditions import Condition, ListenerStatus
from envoy_control_plane.status.events import EventRateLimit
from envoy_control_plane.status.writer import new_problems, status_patch

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
