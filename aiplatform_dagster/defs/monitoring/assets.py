"""The daily drift report: one UTC day of the query log against the reference."""

import base64
import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import CPU_SMALL, on_profile
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.monitoring.drift import (
    DEFAULT_MIN_QUERIES,
    DriftReport,
    Thresholds,
    compare,
)
from aiplatform_dagster.monitoring.features import QueryRecord
from aiplatform_dagster.monitoring.plots import plot_drift
from aiplatform_dagster.monitoring.query_log import QueryLog, open_query_log, records_frame
from aiplatform_dagster.monitoring.reference import (
    frozen_golden_reference,
    golden_questions,
    golden_records,
)
from aiplatform_dagster.rag.index.atomic import write_atomically
from aiplatform_dagster.rag.index.releases import CURRENT

if TYPE_CHECKING:
    import pandas as pd

GROUP = "monitoring"
OWNERS = ["team:ml-platform"]
DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")


class DriftReportConfig(dg.Config):
    reference_start: str | None = Field(
        default=None,
        description="First UTC day (YYYY-MM-DD) of the query-log reference period. Unset: the "
        "golden questions answered on the current index release.",
    )
    reference_end: str | None = Field(
        default=None, description="UTC day (YYYY-MM-DD) after the reference period's last."
    )
    min_queries: int = Field(
        default=DEFAULT_MIN_QUERIES,
        description="Fewer queries in the day: reported as too few, never as drift.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"scipy", "parquet"},
    partitions_def=DAILY,
    code_version="1",
    **on_profile(CPU_SMALL),
)
def query_drift_report(
    context: dg.AssetExecutionContext, config: DriftReportConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """KS test and PSI per query feature, and embedding drift, of one UTC day of the query log
    against the reference (a named period of the log, or the golden questions).

    `drift_retrain_sensor` asks for retraining when a report drifts. The report is also kept as
    JSON (and a PNG) under `<storage>/monitoring/reports/`.
    """
    settings = platform.settings()
    window = context.partition_time_window
    log = open_query_log(settings)
    current = log.read(window.start, window.end)
    reference, reference_name = (
        (records_frame([]), "not read: the window is empty")
        if current.empty
        else _reference(config, platform, log, context)
    )
    report = compare(
        reference,
        current,
        Thresholds.from_settings(settings.monitoring),
        window=(window.start, window.end),
        reference_name=reference_name,
        min_queries=config.min_queries,
    )
    folder = settings.paths.storage_dir / "monitoring" / "reports"
    day = context.partition_key
    saved = write_atomically(
        folder / f"{day}.json",
        lambda path: path.write_text(json.dumps(report.as_dict(), indent=2), "utf-8"),
    )
    metadata: dict[str, Any] = {
        "status": report.status.value,
        "drifted": report.drifted,
        "window_queries": report.current_count,
        "reference_queries": report.reference_count,
        "reference": report.reference,
        "report": dg.MetadataValue.path(str(saved)),
    }
    if report.features:
        plot = plot_drift(report, reference, current, folder / f"{day}.png")
        metadata |= _scores(report)
        metadata["plot"] = dg.MetadataValue.path(str(plot))
        image = base64.b64encode(plot.read_bytes()).decode()
        metadata["plot_preview"] = dg.MetadataValue.md(f"![drift](data:image/png;base64,{image})")
    context.log.info(f"{day}: {report.status.value}, drifted={report.drifted}")
    return dg.MaterializeResult(metadata=metadata)


def _reference(
    config: DriftReportConfig,
    platform: PlatformResource,
    log: QueryLog,
    context: dg.AssetExecutionContext,
) -> tuple["pd.DataFrame", str]:
    """The configured query-log period, or the golden questions on the current release."""
    if config.reference_start or config.reference_end:
        start, end = _period(config.reference_start, config.reference_end)
        name = f"query log {start:%Y-%m-%d} to {end:%Y-%m-%d} (exclusive)"
        return log.read(start, end), name
    repository = platform.repository()
    release_id = repository.pointer(CURRENT)
    if release_id is None:
        return records_frame([]), (
            "golden questions: no current index release yet (materialise the ingestion group) "
            "and no reference_start/reference_end period configured"
        )

    def answer_golden_questions() -> list[QueryRecord]:
        context.log.info(f"Answering the golden questions on release {release_id}")
        engine = platform.query_engine(repository.open(release_id))
        return golden_records(engine, platform.embedder().encode, golden_questions())

    folder = platform.settings().paths.storage_dir / "monitoring" / "reference"
    frame = frozen_golden_reference(folder, release_id, answer_golden_questions)
    return frame, f"golden questions on release {release_id}"


def _period(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    if not (start and end):
        raise dg.Failure(
            "Set both reference_start and reference_end (YYYY-MM-DD, end exclusive), or "
            "neither to compare with the golden questions"
        )
    try:
        first, after = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as error:
        raise dg.Failure(f"reference period {start!r}..{end!r}: {error}; use YYYY-MM-DD") from error
    if first >= after:
        raise dg.Failure(f"reference_start {start} must come before reference_end {end}")
    return (
        datetime.combine(first, datetime.min.time(), UTC),
        datetime.combine(after, datetime.min.time(), UTC),
    )


def _scores(report: DriftReport) -> dict[str, Any]:
    """The feature table, and one float per feature so the asset's plots chart PSI over days."""
    rows = [
        {
            "feature": f.feature,
            "kind": f.kind.value,
            "statistic": _round(f.statistic),
            "p_value": _round(f.p_value),
            "psi": _round(f.psi),
            "threshold": f.threshold,
            "drifted": f.drifted,
            "reference": f.reference_count,
            "window": f.current_count,
            "note": f.note,
        }
        for f in report.features
    ]
    scores: dict[str, Any] = {
        f"psi/{f.feature}": dg.MetadataValue.float(round(f.psi, 4))
        for f in report.features
        if f.psi is not None
    }
    return {
        "features": markdown_table(rows, limit=len(rows)),
        "drifted_features": ", ".join(report.drifted_features) or "none",
        **scores,
    }


def _round(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)
