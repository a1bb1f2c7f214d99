"""The three jobs of a scale-out build: plan, one run per shard, then the release from them."""

import dagster as dg

from aiplatform_dagster.defs.compute import GPU_RUN_TAGS
from aiplatform_dagster.defs.ingestion.builds import SCALE_OUT_TAG
from aiplatform_dagster.defs.scale_out.assets import embedding_shards

ingestion_plan_job = dg.define_asset_job(
    "ingestion_plan_job",
    selection=dg.AssetSelection.assets("source_documents", "document_chunks"),
    description="Scale-out ingestion, step 1: read and chunk the documents and plan the build; "
    "scale_out_ingestion_sensor then launches embedding_shards_job once per shard.",
    tags={SCALE_OUT_TAG: "scale-out"},
)

embedding_shards_job = dg.define_asset_job(
    "embedding_shards_job",
    selection=dg.AssetSelection.assets(embedding_shards),
    description="Scale-out ingestion, step 2: embed one shard of the latest plan (one run, and "
    "under the k8s executor one Kubernetes Job, per partition).",
    tags=GPU_RUN_TAGS,
)

ingestion_release_job = dg.define_asset_job(
    "ingestion_release_job",
    selection=dg.AssetSelection.assets(
        "chunk_embeddings", "bm25_index", "index_release", "current_release"
    ),
    description="Scale-out ingestion, step 3: take the shards' vectors (embedding what none "
    "embedded), count terms, build and check the release, make it current.",
    tags=GPU_RUN_TAGS,
)
