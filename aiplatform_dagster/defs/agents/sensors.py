"""Escalations in the UI: refresh agent_escalations whenever the threads waiting for a human
change."""

import hashlib

import dagster as dg

from aiplatform_dagster.agents.threads import open_thread_index
from aiplatform_dagster.defs.agents.assets import agent_escalations
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.errors import PlatformError

SENSOR_NAME = "agent_escalations_sensor"


def waiting_digest(thread_ids: list[str]) -> str:
    """The cursor: a digest of the waiting thread ids, so it stays short however many wait."""
    return hashlib.sha256("\n".join(sorted(thread_ids)).encode()).hexdigest()[:16]


@dg.sensor(
    name=SENSOR_NAME,
    target=agent_escalations,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 60 s: materialises agent_escalations when a thread starts or stops "
    "waiting for a human, and logs why each waits.",
)
def agent_escalations_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    try:
        with open_thread_index(platform.settings()) as index:
            waiting = index.waiting()
    except PlatformError as error:  # not migrated yet, or the database is down
        return dg.SkipReason(f"Cannot read the agent threads: {error}")
    digest = waiting_digest([record.thread_id for record in waiting])
    if digest == (context.cursor or waiting_digest([])):
        return dg.SkipReason(f"{len(waiting)} threads waiting for a human, as at the last look")
    for record in waiting:
        context.log.info(f"thread {record.thread_id} ({record.agent}) waits: {record.reason}")
    request = dg.RunRequest(
        tags={"aiplatform/trigger": SENSOR_NAME, "aiplatform/waiting": str(len(waiting))}
    )
    return dg.SensorResult(run_requests=[request], cursor=digest)
