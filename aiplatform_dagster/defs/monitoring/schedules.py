"""Weekly retraining, whether or not the traffic drifted (off until switched on)."""

import dagster as dg

from aiplatform_dagster.defs.training.jobs import training_job

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=training_job,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    description="Mondays 03:00 UTC: run training_job on the week's data.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
