"""One picture of a drift report: reference against window, feature by feature."""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aiplatform_dagster.monitoring.drift import DriftReport, finite_values
from aiplatform_dagster.monitoring.features import (
    CATEGORICAL_FEATURES,
    EMBEDDING,
    NUMERIC_FEATURES,
    OPERATIONAL_FEATURES,
)
from aiplatform_dagster.rag.index.atomic import write_atomically

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

_COLUMNS = 4


def plot_drift(
    report: DriftReport, reference: "pd.DataFrame", current: "pd.DataFrame", path: Path
) -> Path:
    """Histograms of each numeric feature and shares of each category, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drifted = set(report.drifted_features)
    names = [*NUMERIC_FEATURES, *OPERATIONAL_FEATURES, *CATEGORICAL_FEATURES]
    rows = -(-(len(names) + 1) // _COLUMNS)  # one more panel: the embedding summary
    figure, axes = plt.subplots(rows, _COLUMNS, figsize=(4 * _COLUMNS, 3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        if name in CATEGORICAL_FEATURES:
            _bars(axis, reference[name], current[name])
        else:
            _histograms(axis, reference[name], current[name])
        axis.set_title(f"{name} (drifted)" if name in drifted else name, fontsize=10)
    for axis in axes.flat[len(names) :]:
        axis.axis("off")
    axes.flat[len(names)].text(0.0, 0.5, _embedding_summary(report), fontsize=10, va="center")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(
        f"{report.window_start:%Y-%m-%d}: {report.current_count} queries against "
        f"{report.reference_count} ({report.reference})",
        fontsize=11,
    )
    figure.tight_layout()
    try:
        return write_atomically(path, lambda pending: figure.savefig(pending, format="png", dpi=72))
    finally:
        plt.close(figure)


def _embedding_summary(report: DriftReport) -> str:
    drift = next((f for f in report.features if f.feature == EMBEDDING), None)
    if drift is None or drift.psi is None:
        return f"embedding: {drift.note if drift else 'not compared'}"
    return (
        f"embedding{' (drifted)' if drift.drifted else ''}\n"
        f"projection PSI {drift.psi:.3f} (threshold {drift.threshold:g})\n"
        f"centroid cosine distance {drift.statistic:.3f}"
    )


def _histograms(axis: "Axes", reference: "pd.Series", current: "pd.Series") -> None:
    ref, cur = finite_values(reference), finite_values(current)
    both = np.concatenate([ref, cur])
    if both.size == 0:
        return
    edges = np.histogram_bin_edges(both, bins=20)
    axis.hist(ref, bins=edges, density=True, alpha=0.5, label="reference")
    axis.hist(cur, bins=edges, density=True, alpha=0.5, label="window")


def _bars(axis: "Axes", reference: "pd.Series", current: "pd.Series") -> None:
    categories = sorted(set(reference) | set(current))
    positions = np.arange(len(categories))
    for offset, values, label in ((-0.2, reference, "reference"), (0.2, current, "window")):
        shares = values.value_counts(normalize=True).reindex(categories, fill_value=0.0)
        axis.bar(positions + offset, shares.to_numpy(), width=0.4, alpha=0.7, label=label)
    axis.set_xticks(positions, categories, fontsize=8)
