"""Small builders for the query-path tests, so each test states only what matters to it."""

from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.context import Context, build_context
from aiplatform_dagster.rag.query.retriever import RetrievedChunk


def context_of(*texts: str) -> Context:
    """A context with one source per text, numbered from 1, counting words as tokens."""
    chunks = [
        RetrievedChunk(
            Chunk(f"c{n}", f"doc-{n}.md", f"Doc {n}", f"/docs/{n}", 0, 0, len(t), 0, t), 1.0
        )
        for n, t in enumerate(texts, start=1)
    ]
    return build_context(chunks, 10_000, lambda batch: [len(t.split()) for t in batch])
