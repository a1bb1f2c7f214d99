"""Embed only what changed: chunks whose id was embedded last time keep their vector."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aiplatform_dagster.models.embedders import Embedder, Progress
from aiplatform_dagster.rag.index.artifacts import StoredEmbeddings
from aiplatform_dagster.rag.ingest.chunking import Chunk


@dataclass(frozen=True)
class EmbeddingRun:
    """The new embeddings and how they were obtained."""

    embeddings: StoredEmbeddings
    reused: int
    computed: int


def embed_incrementally(
    chunks: Sequence[Chunk],
    embedder: Embedder,
    previous: StoredEmbeddings | None,
    progress: Progress | None = None,
) -> EmbeddingRun:
    """Vectors for ``chunks`` in order, reusing ``previous`` rows when the model is the same.

    Chunk ids hash the document id and text, so an unchanged chunk keeps its id and its
    vector is still valid; a different model invalidates everything.
    """
    too_long = [c.chunk_id for c in chunks if c.token_count > embedder.max_tokens]
    if too_long:
        raise ValueError(
            f"{len(too_long)} chunks exceed the embedder's {embedder.max_tokens}-token input "
            f"(first: {too_long[0]}) and would be truncated: lower chunk_tokens"
        )
    reusable: dict[str, int] = {}
    if previous is not None and previous.model_id == embedder.model_id:
        reusable = {chunk_id: row for row, chunk_id in enumerate(previous.chunk_ids)}
    dimension = previous.vectors.shape[1] if reusable else embedder.dimension
    vectors = np.zeros((len(chunks), dimension), dtype=np.float32)
    missing = []
    for row, chunk in enumerate(chunks):
        previous_row = reusable.get(chunk.chunk_id)
        if previous_row is None:
            missing.append(row)
        else:
            vectors[row] = previous.vectors[previous_row]
    if missing:
        vectors[missing] = embedder.encode([chunks[i].indexed_text for i in missing], progress)
    embeddings = StoredEmbeddings([c.chunk_id for c in chunks], vectors, embedder.model_id)
    return EmbeddingRun(embeddings, reused=len(chunks) - len(missing), computed=len(missing))
