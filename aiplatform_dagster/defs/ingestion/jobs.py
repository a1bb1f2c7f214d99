"""The ingestion job: the whole ingestion group, as the sensor and schedule launch it."""

import dagster as dg

from aiplatform_dagster.defs.compute import GPU_RUN_TAGS

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Read documents, chunk, embed, build an index release, check it, make it current.",
    tags=GPU_RUN_TAGS,
)
