"""Drift statistics against scipy, a hand computation, and synthetic traffic."""

import math

import numpy as np
import pytest
import scipy.stats

from aiplatform_dagster.monitoring.drift import (
    Kind,
    Status,
    Thresholds,
    bin_count,
    categorical_psi,
    centroid_distance,
    compare,
    embedding_drift,
    numeric_drift,
    projection_psi,
    psi,
)
from aiplatform_dagster.monitoring.query_log import records_frame
from aiplatform_dagster_tests.monitoring.synthetic import day_start, traffic

WINDOW = (day_start("2026-12-01"), day_start("2026-12-02"))


def test_ks_matches_scipy_on_known_samples() -> None:
    rng = np.random.default_rng(7)
    reference, current = rng.normal(0, 1, 300), rng.normal(0.4, 1, 200)
    expected = scipy.stats.ks_2samp(reference, current)
    drift = numeric_drift("x", reference, current, Thresholds())
    assert drift.statistic == pytest.approx(expected.statistic)
    assert drift.p_value == pytest.approx(expected.pvalue)
    assert drift.p_value < 0.01 and drift.drifted


def test_ks_leaves_out_missing_values() -> None:
    reference = [1.0, 2.0, math.nan, 3.0, 4.0]
    drift = numeric_drift("x", reference, [2.0, 3.0, 5.0, math.nan], Thresholds())
    expected = scipy.stats.ks_2samp([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 5.0])
    assert (drift.reference_count, drift.current_count) == (4, 3)
    assert drift.p_value == pytest.approx(expected.pvalue)


def test_psi_matches_a_hand_computation() -> None:
    # Reference 1..8, two bins: the median 4.5 cuts it into {1..4} and {5..8}, half each.
    # Current 1, 2, 3, 6: 3/4 in the first bin, 1/4 in the second.
    # PSI = (0.75 - 0.5) ln(0.75 / 0.5) + (0.25 - 0.5) ln(0.25 / 0.5) = 0.25 ln 1.5 + 0.25 ln 2
    reference = np.arange(1.0, 9.0)
    current = np.array([1.0, 2.0, 3.0, 6.0])
    assert psi(reference, current, bins=2) == pytest.approx(0.25 * math.log(1.5 * 2))


def test_psi_of_an_empty_bin_is_large_but_finite() -> None:
    # Every current value lies above the reference: the first bin's 0 share counts as 1e-4.
    value = psi(np.arange(1.0, 9.0), np.array([20.0, 30.0]), bins=2)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert value == pytest.approx(expected)


def test_psi_of_a_constant_reference_sees_new_values() -> None:
    assert psi(np.full(50, 5.0), np.full(50, 5.0)) == pytest.approx(0.0)
    assert psi(np.full(50, 5.0), np.full(50, 7.0)) > 1.0


def test_bins_shrink_with_the_smaller_sample() -> None:
    assert bin_count(1000, 1000) == 10
    assert bin_count(1000, 100) == 5
    assert bin_count(55, 30) == 2


def test_categorical_psi_by_hand() -> None:
    # Shares: a 0.5 -> 0.25, b 0.5 -> 0.75.
    value = categorical_psi(["a", "b"] * 10, ["a"] + ["b"] * 3)
    assert value == pytest.approx(-0.25 * math.log(0.5) + 0.25 * math.log(1.5))


def embeddings(n: int, topic: int, seed: int) -> np.ndarray:
    """Unit vectors around the axis ``topic``, about as tight as one topic's questions
    (cosine about 0.3 between two of them)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 32))
    vectors[:, topic] += 4.0
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_embedding_drift_detects_a_shifted_distribution_only() -> None:
    reference = embeddings(400, 0, seed=1)
    same = embedding_drift(reference, embeddings(300, 0, seed=2), Thresholds())
    moved = embedding_drift(reference, embeddings(300, 1, seed=3), Thresholds())
    assert not same.drifted and same.psi < 0.1
    assert moved.drifted and moved.psi > 0.2
    assert moved.statistic > 5 * same.statistic


def test_projection_psi_is_deterministic_and_centroid_distance_exact() -> None:
    reference, current = embeddings(200, 0, seed=4), embeddings(200, 1, seed=5)
    assert projection_psi(reference, current) == projection_psi(reference, current)
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [1.0, 1.0]])
    # Centroids (1, 0) and (0.5, 1): cosine 0.5 / sqrt(1.25).
    assert centroid_distance(a, b) == pytest.approx(1 - 0.5 / math.sqrt(1.25))


def test_embeddings_of_another_dimension_are_not_compared() -> None:
    drift = embedding_drift(embeddings(50, 0, 1), embeddings(50, 0, 2)[:, :16], Thresholds())
    assert not drift.drifted and drift.psi is None
    assert "embedder changed" in drift.note


def test_a_steady_day_does_not_drift_and_a_shifted_one_does() -> None:
    reference = records_frame(traffic("2026-11-20", 400, seed=1))
    steady = compare(
        reference, records_frame(traffic("2026-12-01", 300, seed=2)), Thresholds(),
        window=WINDOW, reference_name="test",
    )  # fmt: skip
    shifted = compare(
        reference, records_frame(traffic("2026-12-01", 300, shifted=True, seed=3)), Thresholds(),
        window=WINDOW, reference_name="test",
    )  # fmt: skip
    assert steady.status == Status.COMPARED and not steady.drifted, steady.features
    assert shifted.drifted
    assert {"question_words", "top_score", "route", "embedding"} <= set(shifted.drifted_features)
    assert {f.kind for f in shifted.features} == set(Kind)


def test_latency_is_reported_but_never_drifts_the_report() -> None:
    reference = records_frame(traffic("2026-11-20", 200, seed=1))
    slow = traffic("2026-12-01", 200, seed=1)
    slow_frame = records_frame(slow).assign(latency_ms=lambda f: f["latency_ms"] * 10)
    report = compare(reference, slow_frame, Thresholds(), window=WINDOW, reference_name="test")
    latency = next(f for f in report.features if f.feature == "latency_ms")
    assert latency.drifted and latency.kind == Kind.OPERATIONAL
    assert not report.drifted


def test_empty_and_small_windows_report_no_scores() -> None:
    reference = records_frame(traffic("2026-11-20", 100))
    empty = compare(reference, records_frame([]), Thresholds(), window=WINDOW, reference_name="r")
    few = compare(
        reference, records_frame(traffic("2026-12-01", 5)), Thresholds(),
        window=WINDOW, reference_name="r", min_queries=30,
    )  # fmt: skip
    missing = compare(
        records_frame([]), records_frame(traffic("2026-12-01", 50)), Thresholds(),
        window=WINDOW, reference_name="r",
    )  # fmt: skip
    assert (empty.status, few.status, missing.status) == (
        Status.NO_QUERIES,
        Status.TOO_FEW_QUERIES,
        Status.NO_REFERENCE,
    )
    assert not any(r.features or r.drifted for r in (empty, few, missing))
    assert empty.as_dict()["status"] == "no queries"


def test_report_json_has_no_nan() -> None:
    reference = records_frame(traffic("2026-11-20", 100))
    current = records_frame(traffic("2026-12-01", 100)).assign(score_margin=math.nan)
    data = compare(reference, current, Thresholds(), window=WINDOW, reference_name="r").as_dict()
    margin = next(f for f in data["features"] if f["feature"] == "score_margin")
    assert margin["psi"] is None and "fewer than 2" in margin["note"]
    assert data["window_start"] == "2026-12-01T00:00:00+00:00"
