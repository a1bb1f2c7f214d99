"""The ingestion steps, each reading the previous step's artifact from an ``IngestionStore``.

Dagster runs each step as its own asset; evaluation and benchmarks run them back to back
with ``ingest`` on a corpus of their own, so both paths share one implementation.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from aiplatform_dagster.models.embedders import Embedder, Progress
from aiplatform_dagster.rag.index.artifacts import IngestionStore
from aiplatform_dagster.rag.index.bm25 import BM25Index
from aiplatform_dagster.rag.index.vector_store import SyncStats, VectorStore
from aiplatform_dagster.rag.ingest.chunking import Chunk, ChunkingConfig, chunk_documents
from aiplatform_dagster.rag.ingest.documents import Document
from aiplatform_dagster.rag.ingest.incremental import EmbeddingRun, embed_incrementally


def chunk_step(store: IngestionStore, embedder: Embedder, config: ChunkingConfig) -> list[Chunk]:
    """Chunk the stored documents with the embedder's tokenizer and store the chunks."""
    if config.chunk_tokens > embedder.max_tokens:
        raise ValueError(
            f"chunk_tokens={config.chunk_tokens} exceeds the embedder's {embedder.max_tokens}-"
            "token input: chunks would be truncated. Lower chunk_tokens."
        )
    chunks = chunk_documents(store.read_documents(), embedder.count_tokens, config)
    store.write_chunks(chunks)
    return chunks


def embed_step(
    store: IngestionStore, embedder: Embedder, reuse_previous: bool, progress: Progress | None
) -> EmbeddingRun:
    """Embed the stored chunks, reusing unchanged vectors unless told not to."""
    previous = store.read_embeddings() if reuse_previous else None
    run = embed_incrementally(store.read_chunks(), embedder, previous, progress)
    store.write_embeddings(run.embeddings)
    return run


def bm25_step(store: IngestionStore) -> BM25Index:
    """Rebuild the keyword index over the stored chunks (title + text, as embedded)."""
    chunks = store.read_chunks()
    index = BM25Index.build([c.chunk_id for c in chunks], [c.indexed_text for c in chunks])
    index.save(store.bm25_dir)
    return index


def vector_step(store: IngestionStore, vectors: VectorStore) -> SyncStats:
    """Make the vector store hold exactly the stored embeddings."""
    embeddings = store.read_embeddings()
    if embeddings is None:
        raise FileNotFoundError(
            f"No embeddings under {store.root}: materialise chunk_embeddings first"
        )
    return vectors.sync(embeddings.chunk_ids, embeddings.vectors)


@dataclass(frozen=True)
class IngestionSummary:
    documents: int
    chunks: int
    embedding: EmbeddingRun
    vectors: SyncStats


def ingest(
    store: IngestionStore,
    documents: Sequence[Document],
    embedder: Embedder,
    vectors: VectorStore,
    config: ChunkingConfig | None = None,
    progress: Progress | None = None,
) -> IngestionSummary:
    """Every step back to back: what one run of the ingestion job does."""
    store.write_documents(list(documents))
    chunks = chunk_step(store, embedder, config or ChunkingConfig())
    embedding = embed_step(store, embedder, reuse_previous=True, progress=progress)
    bm25_step(store)
    stats = vector_step(store, vectors)
    return IngestionSummary(len(documents), len(chunks), embedding, stats)
