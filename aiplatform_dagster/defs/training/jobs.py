"""The training job: the whole training group, as the drift sensor and the weekly schedule
launch it."""

import dagster as dg

from aiplatform_dagster.defs.compute import GPU_RUN_TAGS

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training"),
    description="Build training data, train the query path's models, gate and register them.",
    tags=GPU_RUN_TAGS,
)
