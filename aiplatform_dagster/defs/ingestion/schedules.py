"""Nightly full refresh: re-read everything and re-embed every chunk from scratch."""

import dagster as dg

from aiplatform_dagster.defs.ingestion.jobs import ingestion_job

nightly_full_refresh = dg.ScheduleDefinition(
    name="nightly_full_refresh",
    job=ingestion_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    run_config=dg.RunConfig(ops={"document_chunks": {"config": {"reuse_previous": False}}}),
    description="02:00 UTC: build a release from scratch, reusing no row or vector.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
