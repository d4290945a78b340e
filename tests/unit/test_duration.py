import pytest

from envoy_control_plane.duration import format_duration, parse_duration

MS = 10**6
S = 10**9


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("500ms", 500 * MS),
        ("5s", 5 * S),
        ("1m", 60 * S),
        ("1h", 3600 * S),
        ("1m30s", 90 * S),
        ("1h0m0.5s", 3600 * S + 500 * MS),
        ("1.5s", 1500 * MS),
        (".5s", 500 * MS),
        ("1.s", S),
        ("2s500ms", 2500 * MS),
        ("1500us", 1500 * 1000),
        ("1500µs", 1500 * 1000),
        ("7ns", 7),
        ("1.0000000009s", S),  # like Go: a fraction of a nanosecond is dropped
        ("0", 0),
        ("0s", 0),
        ("+5s", 5 * S),
        ("-5s", -5 * S),
        ("0.1h", 360 * S),  # exact: no floating point
    ],
)
def test_go_style_durations(text, nanos):
    assert parse_duration(text) == nanos


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is not a duration"),
        ("-", "is not a duration"),
        ("s", "is not a duration"),
        (".s", "is not a duration"),
        ("5", "a number without a unit"),
        ("1.5.5s", "a number without a unit"),
        ("5d", "unknown unit 'd'"),
        ("5S", "unknown unit 'S'"),
        ("5 s", "unknown unit ' s'"),
        (" 5s", "is not a duration"),
        ("5s\n", "unknown unit 's\\n'"),  # escaped in the message
        ("1" * 65 + "s", "too long"),
        (5, "must be a duration string"),
        (1.5, "must be a duration string"),
        (None, "must be a duration string"),
        (["5s"], "must be a duration string"),
    ],
)
def test_what_is_not_a_duration_says_why(value, problem):
    with pytest.raises(ValueError) as err:
        parse_duration(value)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(0, "0s"), (5 * S, "5s"), (90 * S, "1m30s"), (1500 * MS, "1s500ms"), (3600 * S + 1, "1h1ns"), (-MS, "-1ms")],
)
def test_written_back_as_text_that_parses_to_the_same(nanos, text):
    assert format_duration(nanos) == text
    assert parse_duration(text) == nanos
