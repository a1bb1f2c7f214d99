"""Daily retention of agent checkpoints, so the checkpoint tables stop growing."""

import dagster as dg

from aiplatform_dagster.defs.agents.jobs import checkpoint_retention_job

daily_checkpoint_retention = dg.ScheduleDefinition(
    name="daily_checkpoint_retention",
    job=checkpoint_retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="03:30 UTC: delete finished agent threads older than "
    "AIPLATFORM_AGENTS_RETENTION_DAYS (their checkpoints, then their index rows).",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
