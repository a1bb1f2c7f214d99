"""Retrain when the query traffic drifts, at most once per cooldown."""

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from aiplatform_dagster.defs.monitoring.assets import query_drift_report
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.defs.training.jobs import training_job

SENSOR_NAME = "drift_retrain_sensor"


@dataclass(frozen=True)
class DriftCursor:
    """The newest drift report acted on (its event's storage id) and the last retraining asked."""

    seen: int = 0
    requested_at: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> "DriftCursor":
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self))


@dg.sensor(
    name=SENSOR_NAME,
    job=training_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests training_job when the newest query_drift_report drifted, at most once "
    "per AIPLATFORM_MONITORING_RETRAIN_COOLDOWN_H hours (whoever started the last training).",
)
def drift_retrain_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    cursor = DriftCursor.parse(context.cursor)
    records = context.instance.fetch_materializations(query_drift_report.key, limit=1).records
    if not records:
        return dg.SkipReason("No query_drift_report yet: nothing to judge drift by")
    latest = records[0]
    day = latest.partition_key or "unpartitioned"
    if latest.storage_id <= cursor.seen:
        return dg.SkipReason(f"No drift report since the one for {day}, already acted on")
    metadata = latest.asset_materialization.metadata if latest.asset_materialization else {}
    drifted = metadata.get("drifted")
    if drifted is None or not drifted.value:
        status = metadata["status"].value if "status" in metadata else "unknown"
        return dg.SensorResult(
            skip_reason=f"The drift report for {day} shows no drift (status: {status})",
            cursor=DriftCursor(latest.storage_id, cursor.requested_at).dump(),
        )
    now = datetime.now(UTC)
    cooldown = timedelta(hours=platform.settings().monitoring.retrain_cooldown_h)
    last = _last_retraining(context.instance, cursor)
    if last is not None and now - last < cooldown:
        # The report stays unacted on, so it is acted on when the cooldown ends.
        return dg.SkipReason(
            f"The drift report for {day} drifted, but retraining was last asked for or started "
            f"at {last:%Y-%m-%d %H:%M} UTC; the cooldown of {cooldown.total_seconds() / 3600:g} h "
            f"allows the next at {last + cooldown:%Y-%m-%d %H:%M} UTC"
        )
    features = metadata["drifted_features"].value if "drifted_features" in metadata else ""
    request = dg.RunRequest(
        run_key=f"drift-{day}-{latest.storage_id}",
        tags={
            "aiplatform/trigger": SENSOR_NAME,
            "aiplatform/drift_report": day,
            "aiplatform/drifted_features": str(features),
        },
    )
    return dg.SensorResult(
        run_requests=[request], cursor=DriftCursor(latest.storage_id, now.isoformat()).dump()
    )


def _last_retraining(instance: dg.DagsterInstance, cursor: DriftCursor) -> datetime | None:
    """When this sensor last asked for training, or a training run last started, if later."""
    runs = instance.get_run_records(dg.RunsFilter(job_name=training_job.name), limit=1)
    times = [datetime.fromisoformat(cursor.requested_at)] if cursor.requested_at else []
    times += [record.create_timestamp.astimezone(UTC) for record in runs]
    return max(times, default=None)
