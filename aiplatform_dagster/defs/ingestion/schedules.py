"""Nightly full refresh: re-read everything and re-embed every chunk from scratch."""

import dagster as dg

from aiplatform_dagster.defs.ingestion.jobs import ingestion_job

nightly_full_refresh = dg.ScheduleDefinition(
    name="nightly_full_refresh",
    job=ingestion_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    run_config=dg.RunConfig(ops={"chunk_embeddings": {"config": {"reuse_previous": False}}}),
    description="02:00 UTC: rebuild every ingestion artifact without reusing vectors.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
