"""Combine ranked lists from several retrievers into one ranking.

Score fusion min-max normalises each list so cosine similarities and BM25 scores share a
0..1 scale, then takes the weighted sum (a document missing from a list scores 0 there).
Reciprocal rank fusion ignores scores and uses ranks only: robust when scales are odd.
"""

from collections import defaultdict
from collections.abc import Sequence

from aiplatform_dagster.rag.index.hits import Hit

WeightedHits = tuple[Sequence[Hit], float]
"""A retriever's ranked hits and the weight its evidence gets."""

RRF_K = 60


def score_fusion(ranked_lists: Sequence[WeightedHits], k: int) -> list[Hit]:
    """Weighted sum of min-max normalised scores; top ``k``."""
    fused: dict[str, float] = defaultdict(float)
    for hits, weight in ranked_lists:
        if not hits:
            continue
        scores = [hit.score for hit in hits]
        low, high = min(scores), max(scores)
        spread = high - low
        for hit in hits:
            normalised = (hit.score - low) / spread if spread > 0 else 1.0
            fused[hit.chunk_id] += weight * normalised
    return _top(fused, k)


def reciprocal_rank_fusion(
    ranked_lists: Sequence[WeightedHits], k: int, rrf_k: int = RRF_K
) -> list[Hit]:
    """Weighted reciprocal rank fusion (Cormack et al. 2009); top ``k``."""
    fused: dict[str, float] = defaultdict(float)
    for hits, weight in ranked_lists:
        for rank, hit in enumerate(hits, start=1):
            fused[hit.chunk_id] += weight / (rrf_k + rank)
    return _top(fused, k)


def _top(fused: dict[str, float], k: int) -> list[Hit]:
    ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(chunk_id, score) for chunk_id, score in ranked[:k]]
