"""One ingestion, back to back: documents in, a published index release out.

Dagster runs each step as its own asset (``defs/ingestion``); evaluation, benchmarks and tests
call ``ingest`` on a repository of their own, so both paths share the steps of
``rag/index/build.py``.
"""

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiplatform_dagster.models.embedders import Embedder, Progress
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.build import (
    Build,
    EmbeddingReport,
    assemble_release,
    count_build_terms,
    plan_build,
    publish_release,
)
from aiplatform_dagster.rag.index.embedding import embed_build
from aiplatform_dagster.rag.index.releases import IndexRepository, Release, Retention
from aiplatform_dagster.rag.index.vector_backends import EmbeddedBackend, VectorBackend
from aiplatform_dagster.rag.ingest.chunking import ChunkedDocuments, ChunkingConfig, chunk_documents
from aiplatform_dagster.rag.ingest.documents import Document


def chunk_for(
    documents: Sequence[Document], embedder: Embedder, config: ChunkingConfig
) -> ChunkedDocuments:
    """Chunk with the embedder's tokenizer, refusing a budget the model would truncate."""
    if config.chunk_tokens > embedder.max_tokens:
        raise ValueError(
            f"chunk_tokens={config.chunk_tokens} exceeds the embedder's {embedder.max_tokens}-"
            "token input: chunks would be truncated. Lower chunk_tokens."
        )
    return chunk_documents(documents, embedder.count_tokens, config)


@dataclass(frozen=True)
class IngestionSummary:
    documents: int
    chunks: int
    embedding: EmbeddingReport
    release: Release


def ingest(
    repository: IndexRepository,
    documents: Sequence[Document],
    embedder: Embedder,
    backend: VectorBackend | None = None,
    config: ChunkingConfig | None = None,
    progress: Progress | None = None,
    reuse: bool = True,
    retention: Retention | None = None,
    questions: Sequence[str] = (),
) -> IngestionSummary:
    """Every step of one build, then publish it as ``current``; the build folder is removed.

    ``questions`` tune an approximate vector index, if the release is large enough for one."""
    config = config or ChunkingConfig()
    build = Build(repository, f"local-{uuid.uuid4().hex[:12]}")
    try:
        build.write_documents(documents)
        chunks = chunk_for(documents, embedder, config).chunks
        identity = embedder_identity(embedder)
        plan_build(build, chunks, identity, embedder.model_id, config, reuse)
        report = embed_build(build, embedder, identity, progress, questions)
        count_build_terms(build)
        release = assemble_release(build)
        backend = backend or EmbeddedBackend()
        backend.prepare(release)
        publish_release(repository, release, backend, retention or Retention())
    finally:
        shutil.rmtree(build.folder, ignore_errors=True)
    return IngestionSummary(len(documents), len(chunks), report, release)
