"""spec.healthcheck and spec.outlierDetection -> the egress cluster's health_checks, outlier_detection, lb settings."""

import pytest

from envoy_control_plane.model import parse_object
from envoy_control_plane.translate.clusters import egress_cluster
from tests.unit.objects import egress_doc
from tests.unit.translate.decode import as_dict

BASE = {
    "name": "egress_db_cluster",
    "type": "EDS",
    "connectTimeout": "1s",
    "edsClusterConfig": {"edsConfig": {"ads": {}, "resourceApiVersion": "V3"}, "serviceName": "postgres:5432"},
}
NO_PANIC = {"commonLbConfig": {"healthyPanicThreshold": {}}}  # 0%: failing endpoints get no traffic, however many


def check(**fields):
    """The HealthCheck every spec.healthcheck gets, with `fields` on top."""
    return {
        "timeout": "1s",
        "interval": "5s",
        "noTrafficInterval": "5s",
        "intervalJitterPercent": 10,
        "unhealthyThreshold": 3,
        "healthyThreshold": 2,
        "reuseConnection": False,
        **fields,
    }


def outlier(**fields):
    return {
        "consecutive5xx": 5,
        "interval": "10s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 10,
        "alwaysEjectOneHost": True,
        "enforcingSuccessRate": 0,
        **fields,
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {}),  # off when absent: the cluster as before
        (
            {"healthcheck": {"type": "tcp"}},
            {"healthChecks": [check(tcpHealthCheck={})], "ignoreHealthOnHostRemoval": True, **NO_PANIC},
        ),
        (
            {"healthcheck": {"type": "tcp", "interval": "500ms", "timeout": "250ms", "unhealthyThreshold": 1,
                             "healthyThreshold": 4}},
            {
                "healthChecks": [check(timeout="0.250s", interval="0.500s", noTrafficInterval="0.500s",
                                       unhealthyThreshold=1, healthyThreshold=4,
                                       tcpHealthCheck={})],
                "ignoreHealthOnHostRemoval": True,
                **NO_PANIC,
            },
        ),
        (
            {"healthcheck": {"type": "http", "path": "/healthz", "interval": "1m30s"}},
            {
                "healthChecks": [check(interval="90s", noTrafficInterval="90s", httpHealthCheck={
                    "host": "postgres", "path": "/healthz", "expectedStatuses": [{"start": "200", "end": "201"}]})],
                "ignoreHealthOnHostRemoval": True,
                **NO_PANIC,
            },
        ),
        (
            {"healthcheck": {"type": "http", "path": "/ready", "host": "db.internal",
                             "expectedStatuses": [204, 200, 201, 200, 503]}},
            {
                "healthChecks": [check(httpHealthCheck={"host": "db.internal", "path": "/ready", "expectedStatuses": [
                    {"start": "200", "end": "202"}, {"start": "204", "end": "205"}, {"start": "503", "end": "504"}]})],
                "ignoreHealthOnHostRemoval": True,
                **NO_PANIC,
            },
        ),
        ({"outlierDetection": {}}, {"outlierDetection": outlier(), **NO_PANIC}),
        (
            {"outlierDetection": {"consecutiveErrors": 2, "interval": "1s", "baseEjectionTime": "1m",
                                  "maxEjectionPercent": 0}},
            {
                "outlierDetection": outlier(consecutive5xx=2, interval="1s", baseEjectionTime="60s",
                                            maxEjectionPercent=0, alwaysEjectOneHost=False),
                **NO_PANIC,
            },
        ),
        (
            # both: a passing health check does not end an ejection early
            {"healthcheck": {"type": "tcp"}, "outlierDetection": {"maxEjectionPercent": 50}},
            {
                "healthChecks": [check(tcpHealthCheck={})],
                "ignoreHealthOnHostRemoval": True,
                "outlierDetection": outlier(maxEjectionPercent=50, successfulActiveHealthCheckUnejectHost=False),
                **NO_PANIC,
            },
        ),
    ],
)
def test_health_settings_on_the_egress_cluster(spec, expected):
    doc = egress_doc("db", "n", 9090, 5432, "postgres")
    doc["spec"].update(spec)
    listener = parse_object(doc)
    assert as_dict(egress_cluster(listener)) == {**BASE, **expected}
