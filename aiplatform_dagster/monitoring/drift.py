"""Drift statistics: does a window of queries look like the reference?

Numeric features: the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) and the
population stability index,

    PSI = sum_i (c_i - r_i) * ln(c_i / r_i)

where r_i and c_i are the shares of reference and current values in bin i. Bins are quantiles
of the reference (cut points: the distinct quantiles at 1/B .. (B-1)/B; bins closed on the
right, the outer two open-ended, so every value has a bin); a share of 0 counts as
``EPSILON`` so an empty bin adds a large but finite term. PSI's sampling noise is about
(B - 1) * (1/n_r + 1/n_c), so B is at most 10 and shrinks until each bin expects at least
``MIN_PER_BIN`` values of the smaller sample: otherwise a small window always looks drifted.
Rule of thumb: below 0.1 stable, above 0.2 shifted.

Categorical features (script, route): PSI over the categories. Embeddings: PSI of ``K``
projections on fixed random directions (seeded, so every report uses the same ones), averaged,
and the cosine distance between the two centroids (reported, not thresholded).

A feature drifts when its KS p-value is below ``ks_pvalue`` or its PSI above
``psi_threshold`` (as the settings document them); the embeddings when their mean PSI is
above ``embedding_threshold``. The report drifts when any feature but the operational ones
does: latency moves with load and hardware, which no retraining fixes.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from aiplatform_dagster.config import MonitoringSettings
from aiplatform_dagster.monitoring.features import (
    CATEGORICAL_FEATURES,
    EMBEDDING,
    NUMERIC_FEATURES,
    OPERATIONAL_FEATURES,
    as_vector,
)

if TYPE_CHECKING:
    import pandas as pd

EPSILON = 1e-4
MAX_BINS = 10
MIN_PER_BIN = 20
PROJECTIONS = 16
PROJECTION_SEED = 0
DEFAULT_MIN_QUERIES = 30


class Status(StrEnum):
    COMPARED = "compared"
    NO_QUERIES = "no queries"
    TOO_FEW_QUERIES = "too few queries"
    NO_REFERENCE = "no reference"


class Kind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    EMBEDDING = "embedding"
    OPERATIONAL = "operational"


@dataclass(frozen=True)
class Thresholds:
    ks_pvalue: float = 0.01
    psi: float = 0.2
    embedding: float = 0.2

    @classmethod
    def from_settings(cls, monitoring: MonitoringSettings) -> "Thresholds":
        return cls(monitoring.ks_pvalue, monitoring.psi_threshold, monitoring.embedding_threshold)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: Kind
    reference_count: int
    current_count: int
    statistic: float | None
    """KS statistic D; for embeddings, the cosine distance between the centroids."""
    p_value: float | None
    psi: float | None
    threshold: float
    """The PSI above which this feature drifts."""
    drifted: bool
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    status: Status
    window_start: datetime
    window_end: datetime
    reference: str
    """Where the reference came from, e.g. the query log period or the golden queries."""
    reference_count: int
    current_count: int
    thresholds: Thresholds
    features: tuple[FeatureDrift, ...] = field(default=())

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted and f.kind != Kind.OPERATIONAL]

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601, NaN as null."""
        data = _json_ready(asdict(self))
        data["drifted"] = self.drifted
        data["drifted_features"] = self.drifted_features
        return data


def compare(
    reference: "pd.DataFrame",
    current: "pd.DataFrame",
    thresholds: Thresholds,
    *,
    window: tuple[datetime, datetime],
    reference_name: str,
    min_queries: int = DEFAULT_MIN_QUERIES,
) -> DriftReport:
    """The drift report of ``current`` (a query-log window) against ``reference``."""

    def report(status: Status, features: Sequence[FeatureDrift] = ()) -> DriftReport:
        return DriftReport(
            status=status,
            window_start=window[0],
            window_end=window[1],
            reference=reference_name,
            reference_count=len(reference),
            current_count=len(current),
            thresholds=thresholds,
            features=tuple(features),
        )

    if current.empty:
        return report(Status.NO_QUERIES)
    if reference.empty:
        return report(Status.NO_REFERENCE)
    if len(current) < min_queries:
        return report(Status.TOO_FEW_QUERIES)
    features = [
        *(
            numeric_drift(name, reference[name], current[name], thresholds, Kind.NUMERIC)
            for name in NUMERIC_FEATURES
        ),
        *(
            categorical_drift(name, reference[name], current[name], thresholds)
            for name in CATEGORICAL_FEATURES
        ),
        embedding_drift(
            embedding_matrix(reference[EMBEDDING]), embedding_matrix(current[EMBEDDING]), thresholds
        ),
        *(
            numeric_drift(name, reference[name], current[name], thresholds, Kind.OPERATIONAL)
            for name in OPERATIONAL_FEATURES
        ),
    ]
    return report(Status.COMPARED, features)


def numeric_drift(
    name: str,
    reference: Sequence[float],
    current: Sequence[float],
    thresholds: Thresholds,
    kind: Kind = Kind.NUMERIC,
) -> FeatureDrift:
    """KS test and PSI of one numeric feature (missing values, NaN, left out)."""
    from scipy.stats import ks_2samp

    ref, cur = finite_values(reference), finite_values(current)
    if ref.size < 2 or cur.size < 2:
        return FeatureDrift(
            name, kind, ref.size, cur.size, None, None, None, thresholds.psi, False,
            "not compared: fewer than 2 values on one side",
        )  # fmt: skip
    test = ks_2samp(ref, cur)
    value = psi(ref, cur)
    drifted = bool(test.pvalue < thresholds.ks_pvalue or value > thresholds.psi)
    return FeatureDrift(
        name, kind, ref.size, cur.size, float(test.statistic), float(test.pvalue), value,
        thresholds.psi, drifted,
    )  # fmt: skip


def categorical_drift(
    name: str, reference: Sequence[str], current: Sequence[str], thresholds: Thresholds
) -> FeatureDrift:
    """PSI over the categories either side holds."""
    value = categorical_psi(list(reference), list(current))
    return FeatureDrift(
        name, Kind.CATEGORICAL, len(reference), len(current), None, None, value, thresholds.psi,
        value > thresholds.psi,
    )  # fmt: skip


def embedding_drift(
    reference: np.ndarray, current: np.ndarray, thresholds: Thresholds
) -> FeatureDrift:
    """Mean PSI over random projections, and the centroids' cosine distance."""

    def skipped(note: str) -> FeatureDrift:
        return FeatureDrift(
            EMBEDDING, Kind.EMBEDDING, len(reference), len(current), None, None, None,
            thresholds.embedding, False, f"not compared: {note}",
        )  # fmt: skip

    if len(reference) < 2 or len(current) < 2:
        return skipped("fewer than 2 embeddings on one side")
    if reference.shape[1] != current.shape[1]:
        return skipped(
            f"dimension {reference.shape[1]} in the reference, {current.shape[1]} in the window: "
            "the embedder changed, so the vectors cannot be compared"
        )
    value = projection_psi(reference, current)
    return FeatureDrift(
        EMBEDDING, Kind.EMBEDDING, len(reference), len(current),
        centroid_distance(reference, current), None, value, thresholds.embedding,
        value > thresholds.embedding, "statistic: cosine distance between the centroids",
    )  # fmt: skip


def psi(reference: np.ndarray, current: np.ndarray, bins: int | None = None) -> float:
    """PSI of ``current`` against ``reference`` over reference quantile bins (see the module)."""
    bins = bins or bin_count(len(reference), len(current))
    cuts = np.unique(np.quantile(reference, np.arange(1, bins) / bins))
    return psi_from_shares(bin_shares(reference, cuts), bin_shares(current, cuts))


def bin_count(reference_size: int, current_size: int) -> int:
    """Bins such that each expects ``MIN_PER_BIN`` values of the smaller sample (2..10)."""
    return int(np.clip(min(reference_size, current_size) // MIN_PER_BIN, 2, MAX_BINS))


def bin_shares(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin: (-inf, c0], (c0, c1], ..., (c_last, inf)."""
    counts = np.bincount(np.searchsorted(cuts, values, side="left"), minlength=len(cuts) + 1)
    return counts / counts.sum()


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def categorical_psi(reference: Sequence[str], current: Sequence[str]) -> float:
    categories = sorted(set(reference) | set(current))

    def shares(values: Sequence[str]) -> np.ndarray:
        counts = np.array([sum(1 for v in values if v == c) for c in categories], dtype=float)
        return counts / counts.sum()

    return psi_from_shares(shares(reference), shares(current))


def projection_psi(
    reference: np.ndarray, current: np.ndarray, projections: int = PROJECTIONS
) -> float:
    """Mean PSI of the embeddings projected on ``projections`` fixed random unit directions."""
    rng = np.random.default_rng(PROJECTION_SEED)
    directions = rng.standard_normal((reference.shape[1], projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    ref, cur = reference @ directions, current @ directions
    return float(np.mean([psi(ref[:, k], cur[:, k]) for k in range(projections)]))


def centroid_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """1 - cosine similarity of the two mean vectors (0 when either mean is zero)."""
    a, b = reference.mean(axis=0), current.mean(axis=0)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(a @ b) / norms if norms > 0 else 0.0


def embedding_matrix(values: Sequence[Any]) -> np.ndarray:
    """The non-empty embeddings among ``values``, of their most common dimension, as rows."""
    vectors = [vector for vector in (as_vector(value) for value in values) if vector.size]
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    sizes, counts = np.unique([vector.size for vector in vectors], return_counts=True)
    size = int(sizes[np.argmax(counts)])
    return np.stack([vector for vector in vectors if vector.size == size])


def finite_values(values: Sequence[float]) -> np.ndarray:
    """``values`` as floats, NaN and infinities left out."""
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
