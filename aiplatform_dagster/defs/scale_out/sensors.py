"""Drives a scale-out build from its plan to its release, one sensor tick at a time.

After an ``ingestion_plan_job`` run plans a build, the sensor launches ``embedding_shards_job``
once per shard (each run pinned to that plan by the ``PLAN_TAG`` tag), and once every shard
run has ended, ``ingestion_release_job`` pinned to the same plan. A failed shard is not
retried here: the release run embeds the rows no shard delivered, so it costs time, not
correctness. A newer plan (from any job) supersedes one still in flight.
"""

import dagster as dg

from aiplatform_dagster.defs.ingestion.builds import BUILD_ID, PLAN_TAG, SCALE_OUT_TAG
from aiplatform_dagster.defs.scale_out.assets import shards
from aiplatform_dagster.defs.scale_out.jobs import (
    embedding_shards_job,
    ingestion_plan_job,
    ingestion_release_job,
)

PARTITION_TAG = "dagster/partition"
DOCUMENT_CHUNKS = dg.AssetKey("document_chunks")


@dg.sensor(
    name="scale_out_ingestion_sensor",
    jobs=[embedding_shards_job, ingestion_release_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: after an ingestion_plan_job run, one embedding_shards_job run per "
    "shard; when all have ended, ingestion_release_job. Acts only on plans from "
    "ingestion_plan_job.",
)
def scale_out_ingestion_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    instance = context.instance
    plan = _latest_scale_out_plan(instance)
    if plan is None:
        return dg.SensorResult(
            skip_reason="The latest document_chunks was not planned by ingestion_plan_job: "
            "launch that job to build a release in shards"
        )
    tags = {PLAN_TAG: plan}
    shard_runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=embedding_shards_job.name, tags=tags)
    )
    launched = {run.tags.get(PARTITION_TAG) for run in shard_runs}
    missing = [key for key in shards.get_partition_keys() if key not in launched]
    if missing:
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    job_name=embedding_shards_job.name,
                    partition_key=key,
                    run_key=f"{plan}-{key}",
                    tags=tags,
                )
                for key in missing
            ]
        )
    released = instance.get_runs(
        filters=dg.RunsFilter(job_name=ingestion_release_job.name, tags=tags), limit=1
    )
    if released:
        return dg.SensorResult(
            skip_reason=f"Plan {plan} went to release run {released[0].run_id} "
            f"({released[0].status.value}); launch ingestion_plan_job for the next"
        )
    running = [run for run in shard_runs if not run.is_finished]
    if running:
        return dg.SensorResult(
            skip_reason=f"Plan {plan}: {len(running)} of {len(shard_runs)} shard runs still going"
        )
    failed = sorted(run.tags.get(PARTITION_TAG, "?") for run in shard_runs if not run.is_success)
    note = f"; the release embeds the rows of failed shards {', '.join(failed)}" if failed else ""
    context.log.info(f"Plan {plan}: {len(shard_runs)} shard runs ended{note}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                job_name=ingestion_release_job.name,
                run_key=f"{plan}-release",
                tags={**tags, "aiplatform/failed_shards": ",".join(failed) or "none"},
            )
        ]
    )


def _latest_scale_out_plan(instance: dg.DagsterInstance) -> str | None:
    """The build of the latest document_chunks, when an ingestion_plan_job run made it."""
    event = instance.get_latest_materialization_event(DOCUMENT_CHUNKS)
    if event is None:
        return None
    run = instance.get_run_by_id(event.run_id)
    if run is None or run.job_name != ingestion_plan_job.name or SCALE_OUT_TAG not in run.tags:
        return None
    build = event.asset_materialization.metadata.get(BUILD_ID)
    return build.value if build is not None else None
