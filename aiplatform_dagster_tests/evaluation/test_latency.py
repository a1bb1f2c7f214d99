"""Latency percentiles must match numpy's linear interpolation and name keys p{p}_ms."""

import pytest

from aiplatform_dagster.evaluation.latency import percentiles


def test_default_percentiles_interpolate_linearly() -> None:
    # Sorted samples 10, 20, 30, 40 sit at positions 0..3; p95 is position 0.95 * 3 = 2.85,
    # i.e. 30 + 0.85 * 10 = 38.5; p99 is position 2.97 -> 39.7.
    result = percentiles([40.0, 10.0, 30.0, 20.0])
    assert result == pytest.approx({"p50_ms": 25.0, "p95_ms": 38.5, "p99_ms": 39.7})


def test_custom_percentiles_name_fractional_keys() -> None:
    result = percentiles(list(range(1, 1001)), ps=(90, 99.9))
    assert set(result) == {"p90_ms", "p99.9_ms"}
    assert result["p90_ms"] == pytest.approx(900.1)


def test_single_sample_is_every_percentile() -> None:
    assert percentiles([7.5]) == {"p50_ms": 7.5, "p95_ms": 7.5, "p99_ms": 7.5}


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one latency sample"):
        percentiles([])
