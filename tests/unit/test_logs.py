"""Logging: our level and format as configured (any case), the libraries quiet unless asked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from envoy_control_plane import logs
from envoy_control_plane.config import ConfigError, build_config


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours = logging.getLogger(logs.OURS).level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(logs.OURS).setLevel(ours)


def test_json_lines_with_rfc3339_time(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("debug", "json")
    logging.getLogger("envoy_control_plane.xds").debug("node %s connected", "a\nb")
    logging.getLogger("grpc").info("library chatter")
    logging.getLogger("grpc").warning("library warning")
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["message"] for e in entries] == ["node a\nb connected", "library warning"]
    assert entries[0]["level"] == "DEBUG" and entries[0]["logger"] == "envoy_control_plane.xds"
    assert entries[0]["time"].endswith("+00:00") and "T" in entries[0]["time"]


def test_text_and_library_level_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("WARNING", "text", library_level="info")
    logging.getLogger("envoy_control_plane.state").info("ours, below the level")
    logging.getLogger("watchfiles").info("theirs, asked for")
    err = capsys.readouterr().err
    assert "ours" not in err
    assert "INFO watchfiles: theirs, asked for" in err


def test_config_levels_any_case_and_bad_values() -> None:
    config = build_config({"log_level": "debug", "library_log_level": "Error", "log_format": "json"})
    assert (config.log_level, config.library_log_level, config.log_format) == ("DEBUG", "ERROR", "json")
    with pytest.raises(ConfigError, match="log_level: expected one of DEBUG, INFO, WARNING, ERROR"):
        build_config({"log_level": "verbose"})
    with pytest.raises(ConfigError, match="log_format"):
        build_config({"log_format": "xml"})
