"""Ingestion assets: each reads the previous artifact, calls domain code, records metadata."""

import time
from collections import Counter

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import ComputePool, on_pool
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import (
    DocumentSourceResource,
    EmbedderResource,
    StorageResource,
    VectorStoreResource,
)
from aiplatform_dagster.rag.ingest.chunking import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    ChunkingConfig,
)
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import bm25_step, chunk_step, embed_step, vector_step

GROUP = "ingestion"
OWNERS = ["team:ml-platform"]


class DocumentChunksConfig(dg.Config):
    """Chunk size and overlap, counted in the embedder's tokens."""

    chunk_tokens: int = Field(
        default=DEFAULT_CHUNK_TOKENS, description="Budget per chunk, title included."
    )
    overlap_tokens: int = Field(
        default=DEFAULT_OVERLAP_TOKENS,
        description="Tokens repeated from the previous chunk.",
    )


class ChunkEmbeddingsConfig(dg.Config):
    reuse_previous: bool = Field(
        default=True,
        description="Reuse vectors of unchanged chunks; the nightly full refresh sets False.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    **on_pool(ComputePool.CPU),
)
def source_documents(
    context: dg.AssetExecutionContext, documents: DocumentSourceResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Every readable document under the configured folder, as clean text with provenance.

    Unreadable, binary, non-UTF-8, empty and oversized files are skipped and listed.
    """
    docs, skipped = load_documents(documents.path, documents.max_file_bytes)
    for problem in skipped:
        context.log.warning(f"Skipped {problem.path}: {problem.reason}")
    storage.ingestion_store().write_documents(docs)
    context.log.info(f"Read {len(docs)} documents from {documents.folder}, skipped {len(skipped)}")
    formats = Counter(doc.doc_id.rsplit(".", 1)[-1] for doc in docs)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(docs),
            "skipped_files": len(skipped),
            "skipped": markdown_table([{"file": s.path, "reason": s.reason} for s in skipped], 50),
            "folder": dg.MetadataValue.path(documents.folder),
            "formats": dg.MetadataValue.json(dict(formats)),
            "total_characters": sum(len(doc.text) for doc in docs),
            "preview": markdown_table(
                [{"doc_id": d.doc_id, "title": d.title, "characters": len(d.text)} for d in docs]
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    deps=[source_documents],
    **on_pool(ComputePool.CPU),
)
def document_chunks(
    context: dg.AssetExecutionContext,
    config: DocumentChunksConfig,
    storage: StorageResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """Documents split at paragraph, sentence, then word boundaries into token-sized chunks."""
    chunking = ChunkingConfig(config.chunk_tokens, config.overlap_tokens)
    chunks = chunk_step(storage.ingestion_store(), embedder.get_embedder(), chunking)
    documents = len({chunk.doc_id for chunk in chunks})
    context.log.info(f"Split {documents} documents into {len(chunks)} chunks")
    token_counts = sorted(chunk.token_count for chunk in chunks)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(chunks),
            "documents": documents,
            "chunk_tokens": chunking.chunk_tokens,
            "overlap_tokens": chunking.overlap_tokens,
            "median_tokens": token_counts[len(token_counts) // 2] if chunks else 0,
            "max_tokens": token_counts[-1] if chunks else 0,
            "preview": markdown_table(
                [
                    {
                        "chunk_id": c.chunk_id[:12],
                        "doc_id": c.doc_id,
                        "position": c.position,
                        "tokens": c.token_count,
                        "text": c.text,
                    }
                    for c in chunks
                ]
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "numpy"},
    deps=[document_chunks],
    **on_pool(ComputePool.GPU),
)
def chunk_embeddings(
    context: dg.AssetExecutionContext,
    config: ChunkEmbeddingsConfig,
    storage: StorageResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """Unit-length vectors for every chunk; unchanged chunks reuse their previous vector."""
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        context.log.info(f"Embedded {done}/{total} new chunks")

    run = embed_step(
        storage.ingestion_store(), embedder.get_embedder(), config.reuse_previous, report
    )
    seconds = time.perf_counter() - started
    context.log.info(f"{run.computed} chunks embedded, {run.reused} reused, in {seconds:.1f}s")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(run.embeddings.chunk_ids),
            "reused": run.reused,
            "computed": run.computed,
            "model": run.embeddings.model_id,
            "dimension": int(run.embeddings.vectors.shape[1]),
            "seconds": round(seconds, 2),
            "chunks_per_second": round(run.computed / seconds, 1) if run.computed else 0.0,
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "scipy"},
    deps=[document_chunks],
    **on_pool(ComputePool.CPU),
)
def bm25_index(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Keyword index (Okapi BM25 with stemming; IDs, dates and codes stay exact)."""
    store = storage.ingestion_store()
    started = time.perf_counter()
    index = bm25_step(store)
    seconds = time.perf_counter() - started
    context.log.info(
        f"Indexed {len(index)} chunks ({index.vocabulary_size} terms) in {seconds:.1f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(index),
            "vocabulary_size": index.vocabulary_size,
            "build_seconds": round(seconds, 2),
            "path": dg.MetadataValue.path(str(store.bm25_dir)),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "numpy"},
    deps=[chunk_embeddings],
    **on_pool(ComputePool.CPU),
)
def vector_index(
    context: dg.AssetExecutionContext, storage: StorageResource, vector_store: VectorStoreResource
) -> dg.MaterializeResult:
    """The vector store synced to exactly the current embeddings (removed chunks deleted)."""
    stats = vector_step(storage.ingestion_store(), vector_store.get_store())
    context.log.info(
        f"Vector store holds {stats.total}: {stats.added} added, {stats.updated} updated, "
        f"{stats.removed} removed, {stats.unchanged} unchanged"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.total,
            "added": stats.added,
            "updated": stats.updated,
            "removed": stats.removed,
            "unchanged": stats.unchanged,
            "backend": vector_store.backend,
        }
    )
