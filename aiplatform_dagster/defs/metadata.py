"""Turn domain results into Dagster metadata values the UI renders well."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from aiplatform_dagster.rag.ingest.quality import QualityResult

PREVIEW_ROWS = 10
_CELL_CHARS = 80


def markdown_table(
    rows: Sequence[Mapping[str, Any]], limit: int = PREVIEW_ROWS
) -> dg.MetadataValue:
    """The first ``limit`` rows as a Markdown table (cells shortened to stay readable)."""
    if not rows:
        return dg.MetadataValue.md("_(none)_")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        cells = (_cell(row[column]) for column in columns)
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more not shown_")
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: Any) -> str:
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


def histogram(values: Sequence[int], bins: int = 8, width: int = 30) -> dg.MetadataValue:
    """Counts of ``values`` in equal-width ranges, drawn as Markdown bars: a shape is read at a
    glance, a list of numbers is not."""
    if not values:
        return dg.MetadataValue.md("_(none)_")
    low, high = min(values), max(values)
    step = max(1, -(-(high - low + 1) // bins))
    counts = [0] * (-(-(high - low + 1) // step))
    for value in values:
        counts[(value - low) // step] += 1
    top = max(counts)
    lines = ["| tokens | chunks | |", "|---|---:|---|"]
    for index, count in enumerate(counts):
        start = low + index * step
        bar = "█" * round(width * count / top)
        lines.append(f"| {start}–{start + step - 1} | {count} | {bar} |")
    return dg.MetadataValue.md("\n".join(lines))


def quality_check_result(results: list[QualityResult]) -> dg.AssetCheckResult:
    """One Dagster check result from Great Expectations results: passes only if all do; each
    expectation's outcome, count and examples are metadata."""
    failed = [r for r in results if not r.success]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{r.name}: {r.description}" for r in failed)
        or "all expectations met",
        metadata={
            r.name: dg.MetadataValue.json(
                {
                    "passed": r.success,
                    "unexpected": r.unexpected_count,
                    "examples": [str(e) for e in r.unexpected_examples],
                }
            )
            for r in results
        },
    )


def latest_metadata_value(instance: dg.DagsterInstance, asset: dg.AssetKey, key: str) -> Any:
    """The value ``key`` had in ``asset``'s latest materialisation (None when there is none):
    how one asset finds what another wrote."""
    event = instance.get_latest_materialization_event(asset)
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get(key) if materialization else None
    return value.value if value is not None else None
