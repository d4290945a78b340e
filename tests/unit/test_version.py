"""What runs is visible: `--version` and the build_info metric name the installed version."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from prometheus_client import generate_latest

from envoy_control_plane.cli import main
from envoy_control_plane.metrics import Metrics


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"envoy-control-plane {version('k8s-envoy-control-plane')}\n"


def test_build_info_metric() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert 'envoy_cp_build_info{python="' in text
    assert "_created" not in text  # counters come without their duplicate series
    assert "process_resident_memory_bytes" in text and "python_gc_collections_total" in text
    assert f'version="{version("k8s-envoy-control-plane")}"}} 1.0' in text
