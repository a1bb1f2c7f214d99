"""Fusion methods on small hand-made lists: each method's scale, and what a missing hit scores."""

import pytest

from aiplatform_dagster.rag.index.hits import Hit
from aiplatform_dagster.rag.query.fusion import (
    distribution_fusion,
    reciprocal_rank_fusion,
    score_fusion,
)
from aiplatform_dagster.rag.query.retriever import FusionMethod, HybridConfig


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(chunk_id, score) for chunk_id, score in pairs]


def scores(fused: list[Hit]) -> dict[str, float]:
    return {hit.chunk_id: hit.score for hit in fused}


def test_min_max_scales_each_list_from_its_no_evidence_floor_not_its_last_candidate() -> None:
    # Three cosines in a narrow band: stretching 0.50..0.62 to 0..1 would let a 0.12 cosine
    # gap outweigh BM25's whole range. Scaled from 0 (orthogonal / no shared term) instead:
    dense = hits(("a", 0.62), ("b", 0.60), ("c", 0.50))
    keyword = hits(("b", 10.0), ("c", 9.0), ("a", 2.0))
    fused = score_fusion([(dense, 0.7), (keyword, 0.3)], k=3, depth=3)
    assert [hit.chunk_id for hit in fused] == ["b", "c", "a"]
    assert scores(fused) == pytest.approx(
        {
            "a": 0.7 * 1.0 + 0.3 * 0.2,
            "b": 0.7 * 0.60 / 0.62 + 0.3 * 1.0,
            "c": 0.7 * 0.50 / 0.62 + 0.3 * 0.9,
        }
    )


def test_hit_missing_from_a_cut_list_scores_that_lists_lowest_listed_score() -> None:
    # Each retriever returned all 2 hits it was asked for, so a chunk it did not return scored
    # at most its last hit: "a" is not known to share no keyword, and "c" is not orthogonal.
    dense = hits(("a", 0.9), ("b", 0.8))
    keyword = hits(("c", 10.0), ("b", 8.0))
    fused = score_fusion([(dense, 0.7), (keyword, 0.3)], k=3, depth=2)
    assert scores(fused) == pytest.approx(
        {
            "a": 0.7 * 1.0 + 0.3 * 0.8,
            "b": 0.7 * 0.8 / 0.9 + 0.3 * 0.8,
            "c": 0.7 * 0.8 / 0.9 + 0.3 * 1.0,
        }
    )


def test_hit_missing_from_a_list_shorter_than_asked_scores_nothing_there() -> None:
    # BM25 found one chunk sharing a query term out of 3 asked for: every other chunk shares
    # none, so they get no keyword credit (and the lone hit is not scaled against itself).
    dense = hits(("a", 0.9), ("b", 0.6), ("c", 0.3))
    keyword = hits(("c", 4.0))
    fused = score_fusion([(dense, 0.7), (keyword, 0.3)], k=3, depth=3)
    assert scores(fused) == pytest.approx(
        {"a": 0.7 * 1.0, "b": 0.7 * 0.6 / 0.9, "c": 0.7 * 0.3 / 0.9 + 0.3 * 1.0}
    )


def test_negative_cosines_count_as_no_evidence() -> None:
    dense = hits(("a", 0.5), ("b", -0.2))
    fused = score_fusion([(dense, 1.0)], k=2, depth=5)
    assert scores(fused) == pytest.approx({"a": 1.0, "b": 0.0})
    for fuse in (score_fusion, distribution_fusion):
        assert scores(fuse([(hits(("c", -0.1)), 1.0)], k=1, depth=5)) == {"c": 0.0}


def test_distribution_fusion_scales_each_list_by_its_mean_plus_minus_three_deviations() -> None:
    # mean 2, population sd sqrt(2/3): the limits are 2 -+ 3 * 0.8165.
    keyword = hits(("a", 3.0), ("b", 2.0), ("c", 1.0))
    low, high = 2.0 - 3 * (2 / 3) ** 0.5, 2.0 + 3 * (2 / 3) ** 0.5
    fused = distribution_fusion([(keyword, 1.0)], k=3, depth=3)
    assert scores(fused) == pytest.approx(
        {name: (score - low) / (high - low) for name, score in [("a", 3), ("b", 2), ("c", 1)]}
    )


def test_distribution_fusion_keeps_an_outlier_apart_and_fills_a_missing_hit_like_min_max() -> None:
    # One BM25 score far above the rest lands past mean + 3 sd: it stays above 1 rather than
    # tying with whatever else reaches the cap. "out", missing from the cut dense list, gets
    # that list's lowest listed score.
    keyword = hits(("out", 100.0), *((f"k{i}", 1.0) for i in range(10)))
    dense = hits(("k0", 0.9), ("k1", 0.7))
    fused = scores(distribution_fusion([(keyword, 0.5), (dense, 0.5)], k=20, depth=2))
    keyword_low, keyword_high = 10 - 3 * 810**0.5, 10 + 3 * 810**0.5  # mean 10, sd sqrt(810)
    dense_low = 0.8 - 3 * 0.1  # mean 0.8, sd 0.1
    outlier = (100 - keyword_low) / (keyword_high - keyword_low)
    assert outlier > 1.0
    assert fused["out"] == pytest.approx(0.5 * outlier + 0.5 * (0.7 - dense_low) / 0.6)
    assert fused["k0"] > fused["k1"] == pytest.approx(fused["k2"])


def test_one_hit_lists_count_fully_in_every_score_method() -> None:
    for fuse in (score_fusion, distribution_fusion):
        assert scores(fuse([(hits(("a", 0.4)), 1.0)], k=1, depth=10)) == {"a": 1.0}


def test_reciprocal_rank_fusion_uses_ranks_only() -> None:
    dense = hits(("a", 0.9), ("b", 0.1))
    keyword = hits(("b", 50.0), ("c", 40.0))
    fused = reciprocal_rank_fusion([(dense, 0.7), (keyword, 0.3)], k=3)
    assert scores(fused) == pytest.approx({"a": 0.7 / 61, "b": 0.7 / 62 + 0.3 / 61, "c": 0.3 / 62})


def test_ties_break_by_chunk_id_so_results_are_reproducible() -> None:
    fused = score_fusion([(hits(("b", 1.0), ("a", 1.0)), 1.0)], k=2, depth=2)
    assert [hit.chunk_id for hit in fused] == ["a", "b"]


@pytest.mark.parametrize("fuse", [score_fusion, distribution_fusion])
def test_depth_below_one_is_refused(fuse) -> None:
    with pytest.raises(ValueError, match="depth must be at least 1"):
        fuse([(hits(("a", 1.0)), 1.0)], k=1, depth=0)


def test_distribution_fusion_is_a_hybrid_setting() -> None:
    assert HybridConfig(fusion=FusionMethod("dbsf")).fusion is FusionMethod.DBSF
