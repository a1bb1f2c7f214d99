import numpy as np
import pytest

from aiplatform_dagster.benchmarks.vector_bench import bench_vector_search
from aiplatform_dagster.rag.index.hits import Hit
from aiplatform_dagster.rag.index.vector_store import EmbeddedVectorIndex, SyncStats, VectorStore

DIM = 384


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids_for(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[str], np.ndarray, EmbeddedVectorIndex]:
    ids, vectors = ids_for(5_000), unit_rows(5_000)
    # Small shards, so results merge candidates from five of them.
    index = EmbeddedVectorIndex(tmp_path_factory.mktemp("corpus"), shard_rows=1_000)
    index.sync(ids, vectors)
    return ids, vectors, index


def brute_force(ids: list[str], vectors: np.ndarray, query: np.ndarray, k: int) -> list[Hit]:
    scores = vectors @ query
    return [Hit(ids[row], float(scores[row])) for row in np.argsort(-scores)[:k]]


def assert_same_hits(got: list[Hit], expected: list[Hit]) -> None:
    assert [hit.chunk_id for hit in got] == [hit.chunk_id for hit in expected]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-5)


def test_embedded_index_is_a_vector_store(corpus) -> None:
    _, _, index = corpus
    store: VectorStore = index
    assert store.count() == 5_000
    assert store.dimension == DIM


@pytest.mark.parametrize("k", [1, 10, 50, 200])
def test_search_matches_brute_force(corpus, k: int) -> None:
    ids, vectors, index = corpus
    for query in unit_rows(40, seed=1):
        assert_same_hits(index.search(query, k), brute_force(ids, vectors, query, k))


def test_search_batch_matches_single_searches(corpus) -> None:
    ids, vectors, index = corpus
    queries = unit_rows(25, seed=2)
    for query, hits in zip(queries, index.search_batch(queries, 10), strict=True):
        assert_same_hits(hits, brute_force(ids, vectors, query, 10))


def test_unnormalised_query_still_scores_cosine(corpus) -> None:
    ids, vectors, index = corpus
    query = unit_rows(1, seed=3)[0]
    assert_same_hits(index.search(query * 7.5, 5), brute_force(ids, vectors, query, 5))


def test_k_above_count_returns_every_vector(tmp_path) -> None:
    index = EmbeddedVectorIndex(tmp_path)
    index.sync(ids_for(3), unit_rows(3))
    hits = index.search(unit_rows(1, seed=1)[0], 10)
    assert sorted(hit.chunk_id for hit in hits) == ["c0", "c1", "c2"]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_empty_index_returns_no_hits(tmp_path) -> None:
    index = EmbeddedVectorIndex(tmp_path / "never-synced")
    assert index.count() == 0
    assert index.dimension is None
    assert index.search(unit_rows(1)[0], 5) == []
    index.sync([], np.empty((0, DIM), np.float32))
    assert index.search_batch(unit_rows(2), 5) == [[], []]


def test_sync_reports_changes_and_persists(tmp_path) -> None:
    ids, vectors = ids_for(100), unit_rows(100)
    index = EmbeddedVectorIndex(tmp_path)
    assert index.sync(ids, vectors) == SyncStats(
        added=100, updated=0, removed=0, unchanged=0, total=100
    )

    # Drop c0-c2, re-embed c3-c4, nudge c5 below tolerance, add four new chunks.
    new_ids = ids[3:] + ids_for(4, prefix="new")
    new_vectors = np.concatenate([vectors[3:], unit_rows(4, seed=9)])
    new_vectors[:2] = unit_rows(2, seed=8)
    new_vectors[2, 0] += 5e-7
    stats = index.sync(new_ids, new_vectors)
    assert stats == SyncStats(added=4, updated=2, removed=3, unchanged=95, total=101)
    assert index.sync(new_ids, new_vectors) == SyncStats(
        added=0, updated=0, removed=0, unchanged=101, total=101
    )

    reopened = EmbeddedVectorIndex(tmp_path)
    assert reopened.count() == 101
    for query in new_vectors[[0, 50, 100]]:
        assert_same_hits(reopened.search(query, 5), brute_force(new_ids, new_vectors, query, 5))
    assert (tmp_path / "manifest.json").exists()
    assert len(list(tmp_path.glob("version-*"))) == 1  # the replaced version is cleaned up


def test_failed_sync_keeps_the_stored_index(tmp_path) -> None:
    ids, vectors = ids_for(50), unit_rows(50)
    index = EmbeddedVectorIndex(tmp_path)
    index.sync(ids, vectors)
    broken = unit_rows(60, seed=5)
    broken[42, 7] = np.nan
    with pytest.raises(ValueError, match=r"'c42' \(row 42\) contains NaN"):
        index.sync(ids_for(60), broken)

    for store in (index, EmbeddedVectorIndex(tmp_path)):
        assert store.count() == 50
        assert_same_hits(store.search(vectors[7], 3), brute_force(ids, vectors, vectors[7], 3))


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (ids_for(4), unit_rows(4)[0], "must be a 2-D"),
        (ids_for(3), unit_rows(4), "ids has 3 entries but vectors has 4 rows"),
        (["a", "b", "a"], unit_rows(3), r"ids must be unique.*'a'"),
        (ids_for(2), np.array([[1.0, 0.0], [np.inf, 0.0]]), "contains NaN or inf"),
        (ids_for(2), np.array([[1.0, 0.0], [3.0, 4.0]]), "norm 5, not 1: L2-normalise"),
    ],
)
def test_sync_rejects_bad_input_with_a_fix(tmp_path, ids, vectors, message) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddedVectorIndex(tmp_path).sync(ids, vectors)


def test_query_errors_say_what_to_fix(corpus) -> None:
    _, _, index = corpus
    with pytest.raises(ValueError, match="index has dim 384, query has 768: embed queries"):
        index.search(unit_rows(1, dim=768)[0], 5)
    with pytest.raises(ValueError, match="k must be a positive number of hits, got 0"):
        index.search(unit_rows(1)[0], 0)
    with pytest.raises(ValueError, match="use search_batch"):
        index.search(unit_rows(2), 5)


def test_bench_finds_the_exact_neighbours() -> None:
    result = bench_vector_search(n=3_000, dim=64, n_queries=10, k=5)
    assert result["recall_at_k_vs_exact"] == 1.0
    assert result["p50_ms"] > 0
