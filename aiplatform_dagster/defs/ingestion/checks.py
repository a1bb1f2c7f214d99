"""Great Expectations checks on chunks and embeddings, shown per rule in the Dagster UI."""

import dagster as dg

from aiplatform_dagster.defs.compute import ComputePool, on_pool
from aiplatform_dagster.defs.ingestion.assets import chunk_embeddings, document_chunks
from aiplatform_dagster.defs.resources import EmbedderResource, StorageResource
from aiplatform_dagster.rag.ingest.quality import QualityResult, check_chunks, check_embeddings


def _check_result(results: list[QualityResult]) -> dg.AssetCheckResult:
    failed = [r for r in results if not r.success]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{r.name}: {r.description}" for r in failed)
        or "all expectations met",
        metadata={
            r.name: dg.MetadataValue.json(
                {
                    "passed": r.success,
                    "unexpected": r.unexpected_count,
                    "examples": [str(e) for e in r.unexpected_examples],
                }
            )
            for r in results
        },
    )


@dg.asset_check(asset=document_chunks, blocking=True, **on_pool(ComputePool.CPU))
def chunks_are_valid(storage: StorageResource, embedder: EmbedderResource) -> dg.AssetCheckResult:
    """Non-empty text, token length within the embedder's input, unique ids, known documents.

    Blocking: embeddings are not computed from chunks that fail it.
    """
    store = storage.ingestion_store()
    doc_ids = {doc.doc_id for doc in store.read_documents()}
    max_tokens = embedder.get_embedder().max_tokens
    return _check_result(check_chunks(store.read_chunks(), doc_ids, max_tokens))


@dg.asset_check(asset=chunk_embeddings, blocking=True, **on_pool(ComputePool.CPU))
def embeddings_are_valid(
    storage: StorageResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    """One unit-length vector per chunk, all of the model's dimension.

    Blocking: the vector store is not synced to embeddings that fail it.
    """
    store = storage.ingestion_store()
    embeddings = store.read_embeddings()
    if embeddings is None:
        return dg.AssetCheckResult(passed=False, description="no embeddings stored")
    expected_rows = len(store.read_chunks())
    dimension = embedder.get_embedder().dimension
    return _check_result(
        check_embeddings(embeddings.chunk_ids, embeddings.vectors, expected_rows, dimension)
    )
