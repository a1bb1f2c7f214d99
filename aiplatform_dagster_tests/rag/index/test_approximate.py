"""The IVF index of a large segment: used only when the recall it measures at write time reaches
the target, searched with exact re-scoring, and never returning rows a release dropped.

Clustered vectors stand in for embeddings (real ones are clustered by topic); uniform noise is
the case IVF cannot help, where the segment must keep the exact scan. Every result is compared
with numpy brute force.
"""

from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.approximate import APPROXIMATE_FILE, ApproximatePolicy
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.index.vector_store import (
    EmbeddedVectorIndex,
    LivePart,
    open_vector_part,
    write_vector_part,
)
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster_tests.rag.index.test_releases import SMALL, own_text
from aiplatform_dagster_tests.stand_ins import HashEmbedder, documents_of, texts

DIM = 32
ROWS = 20_000
CLUSTERS = 100
IVF_POLICY = ApproximatePolicy(min_rows=1_000, target_recall=0.95)


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors drawn around the given topic centres."""
    rng = np.random.default_rng(seed)
    rows = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, DIM))
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def centres() -> np.ndarray:
    centres = np.random.default_rng(1).standard_normal((CLUSTERS, DIM))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus(centres: np.ndarray) -> tuple[list[str], np.ndarray]:
    return [f"c{i}" for i in range(ROWS)], clustered(ROWS, 2, centres)


def written(
    folder: Path,
    ids: list[str],
    vectors: np.ndarray,
    policy: ApproximatePolicy,
    questions: np.ndarray | None = None,
) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return write_vector_part(folder, ids, vectors, policy, questions)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(vectors @ query), kind="stable")[:k]


def test_a_large_clustered_segment_is_searched_by_ivf_at_the_recall_it_measured(
    tmp_path: Path, corpus: tuple[list[str], np.ndarray], centres: np.ndarray
) -> None:
    ids, vectors = corpus
    meta = written(tmp_path, ids, vectors, IVF_POLICY)
    summary = meta["approximate"]
    assert summary["used"] and meta["scan"] == "faiss-ivf-sq8" and meta["shards"] == []
    assert summary["recall_at_10"] >= 0.95
    assert summary["nprobe"] <= summary["nlist"] // 4
    assert (tmp_path / APPROXIMATE_FILE).is_file()

    index = EmbeddedVectorIndex([LivePart(open_vector_part(tmp_path, ids, meta))])
    queries = clustered(200, 3, centres)  # new points, not stored rows
    found = 0
    for query in queries:
        hits = index.search(query, 10)
        expected = {ids[row] for row in exact_top(vectors, query, 10)}
        found += len(expected & {hit.chunk_id for hit in hits})
        rows = [int(hit.chunk_id[1:]) for hit in hits]
        np.testing.assert_allclose([h.score for h in hits], vectors[rows] @ query, atol=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert found / (10 * len(queries)) >= 0.9


def test_below_min_rows_a_segment_keeps_the_exact_scan(
    tmp_path: Path, corpus: tuple[list[str], np.ndarray]
) -> None:
    ids, vectors = corpus
    meta = written(tmp_path, ids, vectors, ApproximatePolicy(min_rows=ROWS + 1))
    assert "approximate" not in meta and meta["scan"] == "faiss-sq-fp16"
    index = EmbeddedVectorIndex([LivePart(open_vector_part(tmp_path, ids, meta))])
    for query in vectors[:20]:
        expected = [ids[row] for row in exact_top(vectors, query, 10)]
        assert [hit.chunk_id for hit in index.search(query, 10)] == expected


def test_vectors_without_structure_keep_the_exact_scan_and_say_why(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((5_000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"u{i}" for i in range(len(vectors))]
    meta = written(tmp_path, ids, vectors, ApproximatePolicy(min_rows=1_000, target_recall=1.0))
    summary = meta["approximate"]
    assert summary["used"] is False and "exact scan is kept" in summary["reason"]
    assert max(summary["recall_curve"].values()) < 1.0
    assert not (tmp_path / APPROXIMATE_FILE).exists() and meta["shards"]
    index = EmbeddedVectorIndex([LivePart(open_vector_part(tmp_path, ids, meta))])
    for query in vectors[:20]:
        expected = [ids[row] for row in exact_top(vectors, query, 10)]
        assert [hit.chunk_id for hit in index.search(query, 10)] == expected


def test_rows_a_release_dropped_are_never_returned_by_the_ivf_index(
    tmp_path: Path, corpus: tuple[list[str], np.ndarray]
) -> None:
    ids, vectors = corpus
    meta = written(tmp_path, ids, vectors, IVF_POLICY)
    live = np.random.default_rng(5).random(ROWS) > 0.5
    index = EmbeddedVectorIndex([LivePart(open_vector_part(tmp_path, ids, meta), live)])
    assert index.count() == int(live.sum())
    live_rows = np.flatnonzero(live)
    found = 0
    for row in np.flatnonzero(~live)[:50]:  # a dropped row's own vector: its best match is gone
        hits = index.search(vectors[row], 10)
        returned = [int(hit.chunk_id[1:]) for hit in hits]
        assert len(hits) == 10 and live[returned].all()
        found += len(
            set(live_rows[exact_top(vectors[live_rows], vectors[row], 10)]) & set(returned)
        )
    assert found / 500 >= 0.9


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"min_rows": 0}, "min_rows"),
        ({"target_recall": 0.0}, "target_recall"),
        ({"target_recall": 1.5}, "target_recall"),
        ({"sample_queries": 0}, "sample_queries"),
    ],
)
def test_a_policy_out_of_range_is_refused_with_the_field_named(arguments, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        ApproximatePolicy(**arguments)


def test_the_configuration_sets_the_policy_of_every_build(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(tmp_path),
            "AIPLATFORM_VECTOR_APPROXIMATE_MIN_ROWS": "40",
            "AIPLATFORM_VECTOR_APPROXIMATE_RECALL": "0.5",
        }
    )
    repository = factory.open_repository(settings)
    assert repository.vector_policy == ApproximatePolicy(min_rows=40, target_recall=0.5)

    corpus = texts(300)
    release = ingest(repository, documents_of(corpus), HashEmbedder(), config=SMALL).release
    (segment,) = release.segments
    summary = segment.meta["vectors"]["approximate"]
    assert summary["used"] and summary["recall_at_10"] >= 0.5
    assert release.manifest["segments"][0]["search"] == segment.search
    assert segment.search.startswith(f"ivf nprobe {summary['nprobe']}/{summary['nlist']}")
    assert release.vector_recall() == summary["recall_at_10"]
    for doc_id in list(corpus)[:20]:  # a chunk's own text finds it first, through the IVF index
        query = HashEmbedder().encode([own_text(doc_id, corpus)])[0]
        assert release.chunk_index[release.vectors.search(query, 1)[0].chunk_id].doc_id == doc_id


def test_an_index_tuned_on_questions_keeps_its_recall_on_new_questions(
    tmp_path: Path, corpus: tuple[list[str], np.ndarray], centres: np.ndarray
) -> None:
    """Questions sit farther from the rows than the rows from each other; tuned on some, the
    index serves the recall target to others from the same distribution."""
    ids, vectors = corpus

    def far_questions(seed: int) -> np.ndarray:
        draws = clustered(200, seed, centres)
        noise = np.random.default_rng(seed).standard_normal(draws.shape).astype(np.float32)
        draws += 0.6 * noise / np.sqrt(DIM)
        return draws / np.linalg.norm(draws, axis=1, keepdims=True)

    meta = written(tmp_path, ids, vectors, IVF_POLICY, far_questions(8))
    summary = meta["approximate"]
    assert summary["recall_measured_on"] == "200 questions"
    assert summary["used"] and summary["recall_at_10"] >= 0.95

    index = EmbeddedVectorIndex([LivePart(open_vector_part(tmp_path, ids, meta))])
    new_questions = far_questions(9)
    found = 0
    for query in new_questions:
        expected = {ids[row] for row in exact_top(vectors, query, 10)}
        found += len(expected & {hit.chunk_id for hit in index.search(query, 10)})
    assert found / (10 * len(new_questions)) >= 0.93


def test_a_build_tunes_its_ivf_index_on_the_questions_it_is_given(tmp_path: Path) -> None:
    corpus = texts(300)
    questions = [own_text(doc_id, corpus) for doc_id in list(corpus)[:30]]
    policy = ApproximatePolicy(min_rows=40, target_recall=0.5)
    repository = IndexRepository(tmp_path / "ivf", vector_policy=policy)
    release = ingest(
        repository, documents_of(corpus), HashEmbedder(), config=SMALL, questions=questions
    ).release
    summary = release.segments[0].meta["vectors"]["approximate"]
    assert summary["recall_measured_on"] == "30 questions" and summary["used"]

    small = IndexRepository(tmp_path / "exact", vector_policy=ApproximatePolicy(min_rows=301))
    release = ingest(small, documents_of(corpus), HashEmbedder(), config=SMALL, questions=questions)
    assert "approximate" not in release.release.segments[0].meta["vectors"]
