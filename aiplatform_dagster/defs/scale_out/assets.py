"""``embedding_shards``: the build's new rows embedded one shard (a Dagster partition) at a time.

Documents are hashed into ``AIPLATFORM_INGEST_SHARDS`` shards. Each partition is its own run
and, under the k8s executor, its own Kubernetes Job on the GPU pool; it embeds the rows of the
latest ``document_chunks`` plan that belong to its shard and leaves them in that plan's build
folder, where ``chunk_embeddings`` takes them instead of embedding them again
(``rag/index/embedding.py``). Its own group: the ingestion group's jobs stay unpartitioned.
"""

import dagster as dg

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.defs.compute import GPU_T4, on_profile
from aiplatform_dagster.defs.ingestion.assets import OWNERS, document_chunks
from aiplatform_dagster.defs.ingestion.builds import BUILD_ID, run_build
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.embedding import Shard, embed_shard, shard_keys

GROUP = "ingestion_scale_out"
PLAN_BUILD = "plan_build"
"""Metadata key: the build (``document_chunks`` run) whose plan a shard embedded."""
shards = dg.StaticPartitionsDefinition(shard_keys(load_settings().ingest.ingest_shards))


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "numpy"},
    deps=[document_chunks],
    partitions_def=shards,
    code_version="1",
    **on_profile(GPU_T4),
)
def embedding_shards(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> dg.MaterializeResult:
    """One shard of the latest plan's new rows, embedded: every document whose id hashes to
    this partition. ``chunk_embeddings`` then embeds only what no shard did."""
    shard = Shard.parse(context.partition_key)
    build = run_build(context, platform.repository(), ["source_documents", "document_chunks"])
    embedder = platform.embedder()

    def report(done: int, total: int) -> None:
        context.log.info(f"Shard {shard.key}: embedded {done}/{total} chunks")

    result = embed_shard(build, shard, embedder, embedder_identity(embedder), report)
    context.log.info(
        f"Shard {shard.key} of plan {result.plan_build}: {result.rows} chunks of "
        f"{result.documents} documents in {result.seconds:.1f}s"
    )
    return dg.MaterializeResult(
        metadata={
            BUILD_ID: context.run_id,
            PLAN_BUILD: result.plan_build,
            "dagster/row_count": result.rows,
            "documents": result.documents,
            "model": embedder.model_id,
            "seconds": round(result.seconds, 2),
            "chunks_per_second": round(result.rows / result.seconds, 1) if result.rows else 0.0,
        }
    )
