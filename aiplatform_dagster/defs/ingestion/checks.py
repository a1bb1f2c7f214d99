"""Blocking checks on the build's chunks and vectors and on the release, per rule in the UI."""

import dagster as dg

from aiplatform_dagster.defs.compute import CPU_SMALL, check_on_profile
from aiplatform_dagster.defs.ingestion.assets import (
    chunk_embeddings,
    document_chunks,
    index_release,
)
from aiplatform_dagster.defs.ingestion.builds import run_build
from aiplatform_dagster.defs.metadata import quality_check_result
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.verify import verify_release
from aiplatform_dagster.rag.ingest.quality import check_chunks, check_embeddings


@dg.asset_check(asset=document_chunks, blocking=True, **check_on_profile(CPU_SMALL))
def chunks_are_valid(
    context: dg.AssetCheckExecutionContext, platform: PlatformResource
) -> dg.AssetCheckResult:
    """Non-empty text, token length within the embedder's input, unique ids, known documents.

    Blocking: nothing is embedded from chunks that fail it.
    """
    build = run_build(context, platform.repository(), ["source_documents", "document_chunks"])
    doc_ids = {doc.doc_id for doc in build.documents()}
    max_tokens = platform.embedder().max_tokens
    return quality_check_result(check_chunks(build.chunks(), doc_ids, max_tokens))


@dg.asset_check(asset=chunk_embeddings, blocking=True, **check_on_profile(CPU_SMALL))
def embeddings_are_valid(
    context: dg.AssetCheckExecutionContext, platform: PlatformResource
) -> dg.AssetCheckResult:
    """One unit-length vector per new chunk, all of the model's dimension.

    Blocking: no release is assembled from vectors that fail it.
    """
    build = run_build(context, platform.repository(), ["document_chunks", "chunk_embeddings"])
    chunks = build.chunks()
    new_ids = [chunks[position].chunk_id for position in build.plan().new_rows]
    dimension = platform.embedder().dimension
    return quality_check_result(
        check_embeddings(new_ids, build.new_vectors(), len(new_ids), dimension)
    )


@dg.asset_check(asset=index_release, blocking=True, **check_on_profile(CPU_SMALL))
def release_is_consistent(
    context: dg.AssetCheckExecutionContext, platform: PlatformResource
) -> dg.AssetCheckResult:
    """The release holds exactly the build's chunks, was built by the configured embedder,
    and its vectors find their own chunks through the configured backend.

    Blocking: ``current`` never moves to a release that fails it.
    """
    repository = platform.repository()
    build = run_build(context, repository, ["document_chunks", "index_release"])
    release = repository.open(build.release_id())
    expected = [chunk.chunk_id for chunk in build.chunks()]
    backend = platform.vector_backend()
    checks = verify_release(
        release, expected, embedder_identity(platform.embedder()), backend.open(release)
    )
    failed = [check for check in checks if not check.passed]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{c.name}: {c.detail}" for c in failed)
        or f"release {release.release_id} is consistent",
        metadata={
            "release_id": release.release_id,
            **{
                c.name: dg.MetadataValue.json({"passed": c.passed, "detail": c.detail})
                for c in checks
            },
        },
    )
