"""The ingestion job: the whole ingestion group, as the sensor and schedule launch it."""

import dagster as dg

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Read documents, chunk, embed, build an index release, check it, make it current.",
)
