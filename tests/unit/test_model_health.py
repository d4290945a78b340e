"""EgressListener spec.healthcheck and spec.outlierDetection: defaults, and a clear error naming the field."""

from datetime import timedelta

import pytest

from envoy_control_plane.model import HealthCheck, ObjectError, OutlierDetection, parse_object
from tests.unit.objects import egress_doc


def spec(**extra):
    doc = egress_doc("eg", "n", 9090, 8080, "backends")
    doc["spec"].update(extra)
    return parse_object(doc).spec


def test_off_when_absent():
    parsed = spec()
    assert parsed.healthcheck is None and parsed.outlierDetection is None


def test_defaults():
    parsed = spec(healthcheck={"type": "tcp"}, outlierDetection={})
    assert parsed.healthcheck == HealthCheck.model_validate(
        {"type": "tcp", "interval": "5s", "timeout": "1s", "unhealthyThreshold": 3, "healthyThreshold": 2}
    )
    assert parsed.outlierDetection == OutlierDetection.model_validate(
        {"consecutiveErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 10}
    )


def test_every_field():
    parsed = spec(
        healthcheck={"type": "http", "interval": "1m30s", "timeout": "1.5s", "unhealthyThreshold": 1,
                     "healthyThreshold": 100, "path": "/healthz?full=1", "host": "api.example:8080",
                     "expectedStatuses": [200, 204]},
        outlierDetection={"consecutiveErrors": 1000, "interval": "1h", "baseEjectionTime": "1ms",
                          "maxEjectionPercent": 0},
    )
    check = parsed.healthcheck
    assert (check.interval, check.timeout) == (timedelta(seconds=90), timedelta(milliseconds=1500))
    assert (check.unhealthy_threshold, check.healthy_threshold) == (1, 100)
    assert (check.path, check.host, check.expected_statuses) == ("/healthz?full=1", "api.example:8080", (200, 204))
    detection = parsed.outlierDetection
    assert (detection.consecutive_errors, detection.interval, detection.base_ejection_time) == (
        1000, timedelta(hours=1), timedelta(milliseconds=1))
    assert detection.max_ejection_percent == 0
    hash(parsed)  # still hashable, like every spec


TCP = {"type": "tcp"}
HTTP = {"type": "http", "path": "/healthz"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # durations
        ({"healthcheck": {**TCP, "interval": "5"}}, "spec.healthcheck.interval: is not a duration: a number without"),
        ({"healthcheck": {**TCP, "interval": "5d"}}, "spec.healthcheck.interval: is not a duration: unknown unit 'd'"),
        ({"healthcheck": {**TCP, "interval": 5}}, "spec.healthcheck.interval: must be a duration string"),
        ({"healthcheck": {**TCP, "interval": True}}, "spec.healthcheck.interval: must be a duration string"),
        ({"healthcheck": {**TCP, "interval": "-5s"}}, "spec.healthcheck.interval: must not be negative"),
        ({"healthcheck": {**TCP, "interval": "0s"}}, "spec.healthcheck.interval: must be from 1ms to 1h"),
        ({"healthcheck": {**TCP, "timeout": "0"}}, "spec.healthcheck.timeout: must be from 1ms to 1h"),
        ({"healthcheck": {**TCP, "timeout": "61m"}}, "spec.healthcheck.timeout: must be from 1ms to 1h"),
        ({"healthcheck": {**TCP, "interval": "99999999999999999h"}}, "spec.healthcheck.interval: must be from"),
        ({"healthcheck": {**TCP, "interval": "1.5ms"}}, "spec.healthcheck.interval: must be a whole number of milli"),
        ({"outlierDetection": {"interval": "0ms"}}, "spec.outlierDetection.interval: must be from 1ms to 1h"),
        ({"outlierDetection": {"baseEjectionTime": "2h"}}, "spec.outlierDetection.baseEjectionTime: must be from"),
        # counts
        ({"healthcheck": {**TCP, "unhealthyThreshold": 0}}, "spec.healthcheck.unhealthyThreshold: Input should be gre"),
        ({"healthcheck": {**TCP, "healthyThreshold": 101}}, "spec.healthcheck.healthyThreshold: Input should be less"),
        ({"healthcheck": {**TCP, "healthyThreshold": "2"}}, "spec.healthcheck.healthyThreshold: Input should be a val"),
        ({"healthcheck": {**TCP, "healthyThreshold": 2.0}}, "spec.healthcheck.healthyThreshold: Input should be a val"),
        ({"healthcheck": {**TCP, "healthyThreshold": True}}, "spec.healthcheck.healthyThreshold: Input should be a val"),
        ({"outlierDetection": {"consecutiveErrors": 0}}, "spec.outlierDetection.consecutiveErrors: Input should be gr"),
        ({"outlierDetection": {"consecutiveErrors": 1001}}, "spec.outlierDetection.consecutiveErrors: Input should be"),
        ({"outlierDetection": {"maxEjectionPercent": 101}}, "spec.outlierDetection.maxEjectionPercent: Input should"),
        ({"outlierDetection": {"maxEjectionPercent": -1}}, "spec.outlierDetection.maxEjectionPercent: Input should"),
        # type and the http-only fields
        ({"healthcheck": {}}, "spec.healthcheck.type: Field required"),
        ({"healthcheck": {"type": "grpc"}}, "spec.healthcheck.type: Input should be 'tcp' or 'http'"),
        ({"healthcheck": "tcp"}, "spec.healthcheck: Input should be a valid dictionary"),
        ({"healthcheck": {"type": "http"}}, "spec.healthcheck.path: is required for type http"),
        ({"healthcheck": {**TCP, "path": "/healthz"}}, "spec.healthcheck.path: is only for type http"),
        ({"healthcheck": {**TCP, "host": "h"}}, "spec.healthcheck.host: is only for type http"),
        ({"healthcheck": {**TCP, "expectedStatuses": [200]}}, "spec.healthcheck.expectedStatuses: is only for type h"),
        ({"healthcheck": {**HTTP, "path": "healthz"}}, "spec.healthcheck.path: must start with /"),
        ({"healthcheck": {**HTTP, "path": "/a b"}}, "spec.healthcheck.path: must start with /"),
        ({"healthcheck": {**HTTP, "path": "/\r\nX-Evil: 1"}}, "spec.healthcheck.path: must start with /"),
        ({"healthcheck": {**HTTP, "path": "/" + "a" * 1024}}, "spec.healthcheck.path: must start with /"),
        ({"healthcheck": {**HTTP, "host": ""}}, "spec.healthcheck.host: must be 1 to 255 visible ASCII"),
        ({"healthcheck": {**HTTP, "host": "a\nb"}}, "spec.healthcheck.host: must be 1 to 255 visible ASCII"),
        ({"healthcheck": {**HTTP, "expectedStatuses": []}}, "spec.healthcheck.expectedStatuses: Value should have at"),
        ({"healthcheck": {**HTTP, "expectedStatuses": 200}}, "spec.healthcheck.expectedStatuses: must be a list"),
        ({"healthcheck": {**HTTP, "expectedStatuses": [99]}}, "spec.healthcheck.expectedStatuses.0: Input should be"),
        ({"healthcheck": {**HTTP, "expectedStatuses": [600]}}, "spec.healthcheck.expectedStatuses.0: Input should be"),
        ({"healthcheck": {**HTTP, "expectedStatuses": ["200"]}}, "spec.healthcheck.expectedStatuses.0: Input should"),
        ({"healthcheck": {**HTTP, "expectedStatuses": list(range(200, 301))}}, "spec.healthcheck.expectedStatuses: "),
        ({"healthcheck": {**HTTP}, "targetcluster": "a b"}, "spec.healthcheck: needs a host"),
        # unknown and misspelt fields
        ({"healthcheck": {**TCP, "unhealthy_threshold": 2}}, "spec.healthcheck.unhealthy_threshold: Extra inputs"),
        ({"outlierDetection": {"consecutive5xx": 2}}, "spec.outlierDetection.consecutive5xx: Extra inputs"),
        ({"outlierDetection": []}, "spec.outlierDetection: Input should be a valid dictionary"),
    ],
)
def test_bad_health_settings_name_the_field(extra, message):
    with pytest.raises(ObjectError) as err:
        spec(**extra)
    assert str(err.value).startswith(f"EgressListener default/eg: {message}"), str(err.value)



def test_the_crd_schema_has_the_same_fields_defaults_and_bounds():
    from pathlib import Path

    import yaml

    from envoy_control_plane.model import EgressSpec

    crd = yaml.safe_load((Path(__file__).parents[2] / "manifests/crds/egresslistener.yaml").read_text())
    properties = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for name, model in (("healthcheck", HealthCheck), ("outlierDetection", OutlierDetection)):
        schema = properties[name]
        assert set(schema["properties"]) == {f.alias for f in model.model_fields.values()}, name
        assert set(schema.get("required", [])) == {f.alias for f in model.model_fields.values() if f.is_required()}
        for field in model.model_fields.values():
            bounds = {m.__class__.__name__: m for m in field.metadata}
            prop = schema["properties"][field.alias]
            if "Ge" in bounds:
                assert (prop["minimum"], prop["maximum"]) == (bounds["Ge"].ge, bounds["Le"].le), field.alias
            if field.default is not None and "Default" in prop["description"]:
                # the documented default parses to the model's default
                text = prop["description"].rpartition("Default")[2].strip(" :.")
                assert model.model_validate({**({"type": "tcp"} if model is HealthCheck else {}),
                                             field.alias: int(text) if text.isdigit() else text}) == model.model_validate(
                    {"type": "tcp"} if model is HealthCheck else {}), field.alias
    assert set(properties) == set(EgressSpec.model_fields)


def test_a_spec_serialises_to_what_parses_back_to_it():
    """As a state file keeps it: JSON, the CRD's names, set fields only."""
    doc = egress_doc("eg", "n", 9090, 8080, "backends")
    doc["spec"].update(
        healthcheck={"type": "http", "interval": "1m30.5s", "path": "/h", "expectedStatuses": [204, 200]},
        outlierDetection={"baseEjectionTime": "1h", "maxEjectionPercent": 0},
    )
    parsed = parse_object(doc)
    written = parsed.spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    assert written["healthcheck"] == {"type": "http", "interval": "1m30s500ms", "path": "/h",
                                      "expectedStatuses": [204, 200]}
    assert written["outlierDetection"] == {"baseEjectionTime": "1h", "maxEjectionPercent": 0}
    assert parse_object({**doc, "spec": written}) == parsed


@pytest.mark.parametrize(
    "extra",
    [
        {"healthcheck": {**TCP, "interval": "5s\n" + "x" * 100_000}},
        {"healthcheck": {**HTTP, "path": "/\r\n" + "x" * 100_000}},
        {"healthcheck": {**HTTP, "expectedStatuses": [[200] * 10_000]}},
        {"outlierDetection": {"consecutiveErrors": {"k" * 1000: ["v" * 1000] * 1000}}},
    ],
)
def test_hostile_values_show_bounded_and_escaped(extra):
    with pytest.raises(ObjectError) as err:
        spec(**extra)
    assert "\n" not in str(err.value) and "\r" not in str(err.value) and len(str(err.value)) < 600, str(err.value)


def test_a_missing_path_says_so_without_echoing_the_block():
    with pytest.raises(ObjectError) as err:
        spec(healthcheck={"type": "http"})
    assert str(err.value) == "EgressListener default/eg: spec.healthcheck.path: is required for type http"
