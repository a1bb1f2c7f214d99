"""The embedded index: exact cosine search over the live rows of a release's segments.

Segments are written with the real ``write_vector_part`` and read back memory-mapped; every
result is compared with numpy brute force over the rows the release keeps.
"""

from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.rag.index.hits import Hit
from aiplatform_dagster.rag.index.vector_store import (
    EmbeddedVectorIndex,
    LivePart,
    VectorStore,
    open_vector_part,
    write_vector_part,
)

DIM = 384


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids_for(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def brute_force(ids: list[str], vectors: np.ndarray, query: np.ndarray, k: int) -> list[Hit]:
    query = query / np.linalg.norm(query)
    scores = vectors @ query
    return [Hit(ids[row], float(scores[row])) for row in np.argsort(-scores)[:k]]


def assert_same_hits(got: list[Hit], expected: list[Hit]) -> None:
    assert [hit.chunk_id for hit in got] == [hit.chunk_id for hit in expected]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-5)


def live_part(
    folder: Path,
    ids: list[str],
    vectors: np.ndarray,
    live: np.ndarray | None = None,
    shard_rows: int = 1_000,
) -> LivePart:
    """A segment's vectors written to ``folder`` and opened as the release would open them."""
    folder.mkdir(parents=True)
    meta = write_vector_part(folder, ids, vectors, shard_rows=shard_rows)
    return LivePart(open_vector_part(folder, ids, meta), live)


@pytest.fixture(scope="module")
def release(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[str], np.ndarray, EmbeddedVectorIndex]:
    """Three segments as a release after two updates: two keep only some rows, one keeps all.

    Small shards, so results merge candidates from several shards of several segments.
    """
    root = tmp_path_factory.mktemp("release")
    rng = np.random.default_rng(7)
    sizes, parts, live_ids, live_vectors = [2_000, 1_500, 1_000], [], [], []
    for number, size in enumerate(sizes):
        ids, vectors = ids_for(size, f"s{number}-"), unit_rows(size, seed=number)
        live = None if number == 1 else rng.random(size) > 0.3
        parts.append(live_part(root / f"segment-{number}", ids, vectors, live, shard_rows=500))
        keep = np.ones(size, bool) if live is None else live
        live_ids += [chunk_id for chunk_id, kept in zip(ids, keep, strict=True) if kept]
        live_vectors.append(vectors[keep])
    return live_ids, np.concatenate(live_vectors), EmbeddedVectorIndex(parts)


def test_embedded_index_is_a_vector_store(release) -> None:
    ids, _, index = release
    store: VectorStore = index
    assert store.count() == len(ids)
    assert store.dimension == DIM


@pytest.mark.parametrize("k", [1, 10, 50, 200])
def test_search_matches_brute_force_over_the_live_rows(release, k: int) -> None:
    ids, vectors, index = release
    for query in unit_rows(30, seed=11):
        assert_same_hits(index.search(query, k), brute_force(ids, vectors, query, k))


def test_search_batch_matches_brute_force(release) -> None:
    ids, vectors, index = release
    queries = unit_rows(25, seed=12)
    for query, hits in zip(queries, index.search_batch(queries, 10), strict=True):
        assert_same_hits(hits, brute_force(ids, vectors, query, 10))


def test_unnormalised_query_still_scores_cosine(release) -> None:
    ids, vectors, index = release
    query = unit_rows(1, seed=13)[0]
    assert_same_hits(index.search(query * 7.5, 5), brute_force(ids, vectors, query, 5))


def test_dead_rows_are_never_returned(release) -> None:
    ids, _, index = release
    every = {hit.chunk_id for hit in index.search(unit_rows(1, seed=14)[0], len(ids) + 100)}
    assert every == set(ids)


def test_a_query_whose_neighbours_all_died_finds_the_live_ones(tmp_path) -> None:
    """The k + dead candidates a segment returns still hold k live rows."""
    ids, vectors = ids_for(3_000), unit_rows(3_000, seed=3)
    query = vectors[0]
    live = np.ones(len(ids), bool)
    live[np.argsort(-(vectors @ query))[:100]] = False  # the 100 nearest rows, query's own first
    index = EmbeddedVectorIndex([live_part(tmp_path / "s", ids, vectors, live, shard_rows=700)])
    kept = [chunk_id for chunk_id, alive in zip(ids, live, strict=True) if alive]
    assert_same_hits(index.search(query, 20), brute_force(kept, vectors[live], query, 20))


def test_k_above_count_returns_every_live_vector_best_first(tmp_path) -> None:
    live = np.array([True, False, True])
    index = EmbeddedVectorIndex([live_part(tmp_path / "s", ids_for(3), unit_rows(3), live)])
    hits = index.search(unit_rows(1, seed=1)[0], 10)
    assert sorted(hit.chunk_id for hit in hits) == ["c0", "c2"]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_empty_release_returns_no_hits(tmp_path) -> None:
    all_dead = live_part(tmp_path / "s", ids_for(4), unit_rows(4), np.zeros(4, bool))
    for index in (EmbeddedVectorIndex([]), EmbeddedVectorIndex([all_dead])):
        assert index.count() == 0
        assert index.dimension is None
        assert index.search(unit_rows(1)[0], 5) == []
        assert index.search_batch(unit_rows(2), 5) == [[], []]


def test_segments_of_another_dimension_are_refused(tmp_path) -> None:
    parts = [
        live_part(tmp_path / "a", ids_for(3), unit_rows(3)),
        live_part(tmp_path / "b", ids_for(3, "d"), unit_rows(3, dim=DIM // 2)),
    ]
    with pytest.raises(ValueError, match=r"disagree on dimension: \[192, 384\]"):
        EmbeddedVectorIndex(parts)


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (ids_for(4), unit_rows(4)[0], "must be a 2-D"),
        (ids_for(3), unit_rows(4), "ids has 3 entries but vectors has 4 rows"),
        (["a", "b", "a"], unit_rows(3), r"ids must be unique.*'a'"),
        (ids_for(2), np.array([[1.0, 0.0], [np.inf, 0.0]]), r"'c1' \(row 1\) contains NaN or inf"),
        (ids_for(2), np.array([[1.0, 0.0], [3.0, 4.0]]), "norm 5, not 1: L2-normalise"),
    ],
)
def test_writing_bad_vectors_is_refused_with_a_fix(tmp_path, ids, vectors, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_vector_part(tmp_path, ids, vectors)


def test_query_errors_say_what_to_fix(release) -> None:
    _, _, index = release
    with pytest.raises(ValueError, match="index release has dim 384, query has 768: embed"):
        index.search(unit_rows(1, dim=768)[0], 5)
    with pytest.raises(ValueError, match="k must be a positive number of hits, got 0"):
        index.search(unit_rows(1)[0], 0)
    with pytest.raises(ValueError, match="use search_batch"):
        index.search(unit_rows(2), 5)
    with pytest.raises(ValueError, match="finite and non-zero"):
        index.search(np.zeros(DIM, np.float32), 5)
