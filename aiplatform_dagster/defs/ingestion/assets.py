"""Ingestion assets: each reads the previous artifact, calls domain code, records metadata."""

import time
from collections import Counter

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import ComputePool, pool_op_tags
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import (
    DocumentSourceResource,
    EmbedderResource,
    StorageResource,
    VectorStoreResource,
)
from aiplatform_dagster.rag.bm25 import BM25Index
from aiplatform_dagster.rag.chunking import ChunkingConfig, chunk_documents
from aiplatform_dagster.rag.documents import load_documents
from aiplatform_dagster.rag.incremental import embed_incrementally

GROUP = "ingestion"
OWNERS = ["team:ml-platform"]


class DocumentChunksConfig(dg.Config):
    """Chunk size and overlap, counted in the embedder's tokens."""

    chunk_tokens: int = Field(default=ChunkingConfig.chunk_tokens, description="Budget per chunk, title included.")
    overlap_tokens: int = Field(default=ChunkingConfig.overlap_tokens, description="Tokens repeated from the previous chunk.")


class ChunkEmbeddingsConfig(dg.Config):
    reuse_previous: bool = Field(
        default=True,
        description="Reuse vectors of unchanged chunks; the nightly full refresh sets False.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    op_tags=pool_op_tags(ComputePool.CPU),
    pool=ComputePool.CPU.value,
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
    op_tags=pool_op_tags(ComputePool.CPU),
    pool=ComputePool.CPU.value,
)
def document_chunks(
    context: dg.AssetExecutionContext,
    config: DocumentChunksConfig,
    storage: StorageResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """Documents split at paragraph, sentence, then word boundaries into token-sized chunks."""
    chunking = ChunkingConfig(config.chunk_tokens, config.overlap_tokens)
    model = embedder.get_embedder()
    if chunking.chunk_tokens > model.max_tokens:
        raise ValueError(
            f"chunk_tokens={chunking.chunk_tokens} exceeds the embedder's {model.max_tokens}-token "
            "input: chunks would be truncated. Lower chunk_tokens."
        )
    store = storage.ingestion_store()
    docs = store.read_documents()
    chunks = chunk_documents(docs, model.count_tokens, chunking)
    store.write_chunks(chunks)
    token_counts = sorted(chunk.token_count for chunk in chunks)
    context.log.info(f"Split {len(docs)} documents into {len(chunks)} chunks")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(chunks),
            "documents": len(docs),
            "chunk_tokens": chunking.chunk_tokens,
            "overlap_tokens": chunking.overlap_tokens,
            "median_tokens": token_counts[len(token_counts) // 2] if chunks else 0,
            "max_tokens": token_counts[-1] if chunks else 0,
            "preview": markdown_table(
                [
                    {"chunk_id": c.chunk_id[:12], "doc_id": c.doc_id, "position": c.position,
                     "tokens": c.token_count, "text": c.text}
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
    op_tags=pool_op_tags(ComputePool.GPU),
    pool=ComputePool.GPU.value,
)
def chunk_embeddings(
    context: dg.AssetExecutionContext,
    config: ChunkEmbeddingsConfig,
    storage: StorageResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """Unit-length vectors for every chunk; unchanged chunks reuse their previous vector."""
    store = storage.ingestion_store()
    chunks = store.read_chunks()
    model = embedder.get_embedder()
    previous = store.read_embeddings() if config.reuse_previous else None
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        context.log.info(f"Embedded {done}/{total} new chunks")

    run = embed_incrementally(chunks, model, previous, progress=report)
    seconds = time.perf_counter() - started
    store.write_embeddings(run.embeddings)
    context.log.info(f"{run.computed} chunks embedded, {run.reused} reused, in {seconds:.1f}s")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(chunks),
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
    op_tags=pool_op_tags(ComputePool.CPU),
    pool=ComputePool.CPU.value,
)
def bm25_index(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Keyword index (Okapi BM25 with stemming; IDs, dates and codes stay exact)."""
    store = storage.ingestion_store()
    chunks = store.read_chunks()
    started = time.perf_counter()
    index = BM25Index.build([c.chunk_id for c in chunks], [c.indexed_text for c in chunks])
    index.save(store.bm25_dir)
    seconds = time.perf_counter() - started
    context.log.info(f"Indexed {len(index)} chunks, {index.vocabulary_size} terms, in {seconds:.1f}s")
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
    op_tags=pool_op_tags(ComputePool.CPU),
    pool=ComputePool.CPU.value,
)
def vector_index(
    context: dg.AssetExecutionContext, storage: StorageResource, vector_store: VectorStoreResource
) -> dg.MaterializeResult:
    """The vector store synced to exactly the current embeddings (removed chunks deleted)."""
    embeddings = storage.ingestion_store().read_embeddings()
    if embeddings is None:
        raise FileNotFoundError("No embeddings stored: materialise chunk_embeddings first")
    stats = vector_store.get_store().sync(embeddings.chunk_ids, embeddings.vectors)
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
            "model": embeddings.model_id,
        }
    )
