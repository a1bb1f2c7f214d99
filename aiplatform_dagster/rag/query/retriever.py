"""First-stage retrieval over the materialised indexes: keyword, dense or hybrid."""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.rag.index.bm25 import BM25Index
from aiplatform_dagster.rag.index.hits import Hit
from aiplatform_dagster.rag.index.segments import CorruptIndexError
from aiplatform_dagster.rag.index.vector_store import VectorStore
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.fusion import (
    distribution_fusion,
    reciprocal_rank_fusion,
    score_fusion,
)

if TYPE_CHECKING:
    from aiplatform_dagster.rag.index.releases import Release


class SearchMode(StrEnum):
    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"


class FusionMethod(StrEnum):
    """How hybrid search merges its two lists (see fusion.py for the measurements)."""

    SCORE = "score"
    """Min-max: each list scaled from no evidence (score 0) to its top score."""
    DBSF = "dbsf"
    """Distribution-based: each list scaled by its mean +- 3 standard deviations."""
    RRF = "rrf"
    """Reciprocal rank fusion: ranks only."""


@dataclass(frozen=True)
class HybridConfig:
    """How hybrid search blends its two retrievers (70% semantic / 30% keyword by default)."""

    dense_weight: float = 0.7
    candidates: int = 100
    fusion: FusionMethod = FusionMethod.SCORE

    def __post_init__(self) -> None:
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be within 0..1, got {self.dense_weight}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {self.candidates}")


@dataclass(frozen=True)
class RetrievedChunk:
    chunk: Chunk
    score: float


class Retriever:
    """Runs a query against BM25 and the vector store of one index release."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        bm25: BM25Index,
        vectors: VectorStore,
        embedder: Embedder,
        release_id: str | None = None,
        embedder_identity: str = "",
    ) -> None:
        self._chunks = {chunk.chunk_id: chunk for chunk in chunks}
        self._bm25 = bm25
        self._vectors = vectors
        self._embedder = embedder
        self.release_id = release_id
        self.embedder_identity = embedder_identity or embedder.model_id

    @classmethod
    def from_release(
        cls, release: "Release", embedder: Embedder, vectors: VectorStore | None = None
    ) -> "Retriever":
        """Search ``release`` (vectors from a server backend when given, else its segments)."""
        return cls(
            release.chunks,
            release.bm25,
            vectors or release.vectors,
            embedder,
            release.release_id,
            release.embedder_identity,
        )

    @property
    def embedder(self) -> Embedder:
        """What encodes the queries (the index's vectors came from the model it identifies)."""
        return self._embedder

    def keyword_hits(self, query: str, k: int) -> list[Hit]:
        return self._bm25.search(query, k)

    def dense_hits(self, query: str, k: int) -> list[Hit]:
        vector = self._embedder.encode([query])[0]
        return self._vectors.search(vector, k)

    def hits(
        self, query: str, mode: SearchMode, k: int, hybrid: HybridConfig | None = None
    ) -> list[Hit]:
        """Top ``k`` hits for ``query`` in ``mode``."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if mode is SearchMode.BM25:
            return self.keyword_hits(query, k)
        if mode is SearchMode.DENSE:
            return self.dense_hits(query, k)
        hybrid = hybrid or HybridConfig()
        depth = max(k, hybrid.candidates)
        ranked_lists = [
            (self.dense_hits(query, depth), hybrid.dense_weight),
            (self.keyword_hits(query, depth), 1.0 - hybrid.dense_weight),
        ]
        if hybrid.fusion is FusionMethod.RRF:
            return reciprocal_rank_fusion(ranked_lists, k)
        if hybrid.fusion is FusionMethod.DBSF:
            return distribution_fusion(ranked_lists, k, depth)
        return score_fusion(ranked_lists, k, depth)

    def search(
        self,
        query: str,
        mode: SearchMode = SearchMode.HYBRID,
        k: int = 10,
        hybrid: HybridConfig | None = None,
    ) -> list[RetrievedChunk]:
        """Like ``hits`` but with the chunks (text, title, source) attached."""
        hits = self.hits(query, mode, k, hybrid)
        unknown = [hit.chunk_id for hit in hits if hit.chunk_id not in self._chunks]
        if unknown:
            raise CorruptIndexError(
                f"index release {self.release_id}: the {mode.value} index returned "
                f"{len(unknown)} chunk ids the release does not hold (e.g. {unknown[0]}); "
                "its vector backend is out of step with it. Publish the release again."
            )
        return [RetrievedChunk(self._chunks[hit.chunk_id], hit.score) for hit in hits]
