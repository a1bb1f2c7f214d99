"""Stand-ins for what would only slow a test down, each named for what it replaces.

``HashEmbedder`` replaces an embedding model where the thing under test is the release
machinery (builds, segments, pointers, processes racing): one deterministic unit vector per
text, so a chunk's own text finds it at cosine 1, in microseconds and in any process.
"""

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import numpy as np

from aiplatform_dagster.models.embedders import Progress
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.build import (
    Build,
    assemble_release,
    count_build_terms,
    plan_build,
)
from aiplatform_dagster.rag.index.embedding import embed_build
from aiplatform_dagster.rag.index.releases import IndexRepository, Release
from aiplatform_dagster.rag.ingest.chunking import Chunk, ChunkingConfig
from aiplatform_dagster.rag.ingest.documents import Document

DIM = 16


class HashEmbedder:
    """Stands in for a model: a fixed dimension and one deterministic unit vector per text."""

    model_id = "test-hash-embedder"
    dimension = DIM
    max_tokens = 512

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return np.stack([text_vector(text) for text in texts]).astype(np.float32)


def text_vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    row = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return row / np.linalg.norm(row)


def texts(n: int, version: str = "v1") -> dict[str, str]:
    """``n`` one-chunk documents, doc-0 ... doc-(n-1)."""
    return {f"doc-{i}": f"document {i} says {version} things" for i in range(n)}


def documents_of(corpus: dict[str, str]) -> list[Document]:
    return [
        Document(
            doc_id=doc_id,
            title=doc_id.title(),
            source_path=f"/docs/{doc_id}.md",
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
            modified_at=datetime(2026, 1, 1, tzinfo=UTC),
            text=text,
        )
        for doc_id, text in corpus.items()
    ]


def build_release(repository: IndexRepository, corpus: dict[str, str]) -> Release:
    """A release of one chunk per document, built by the real steps, not yet published."""
    embedder = HashEmbedder()
    identity = embedder_identity(embedder)
    build = Build(repository, f"test-{uuid4().hex[:8]}")
    documents = documents_of(corpus)
    chunks = [
        Chunk(f"{d.doc_id}#0", d.doc_id, d.title, d.source_path, 0, 0, len(d.text), 5, d.text)
        for d in documents
    ]
    build.write_documents(documents)
    plan_build(build, chunks, identity, embedder.model_id, ChunkingConfig())
    embed_build(build, embedder, identity)
    count_build_terms(build)
    return assemble_release(build)
