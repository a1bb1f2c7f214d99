"""Single-query latency of EmbeddedVectorIndex: the exact scan against numpy brute force on
uniform vectors, and the IVF index against the exact scan on clustered ones.

Each method runs all its queries back to back, as a serving process would: alternating them query
by query made every index search follow numpy's 1.5 GB sweep and cost it up to 1.5x.

Why two data sets: uniform noise has no neighbourhood structure, so no approximate index can
beat a scan on it (the IVF policy then keeps the exact scan, which is what (c) measures).
Embeddings cluster by topic in a few dozen effective dimensions; (c2) draws 1M rows around
SciFact's real MiniLM chunk vectors and asks SciFact's real test queries, so recall is measured
as a user's questions would see it.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from aiplatform_dagster.benchmarks.release_bench import beir_sample, kept_repository
from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.rag.index.approximate import ApproximatePolicy
from aiplatform_dagster.rag.index.vector_store import (
    EmbeddedVectorIndex,
    LivePart,
    open_vector_part,
    write_vector_part,
)
from aiplatform_dagster.rag.ingest.pipeline import ingest

GENERATE_ROWS = 65_536  # rows drawn per step: no float64 or full-size temporaries
KDE_SPREAD = 0.6  # noise scale: 1M rows around SciFact's chunks keep its query-neighbour cosine


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Random L2-normalised float32 rows, generated in place chunk by chunk."""
    matrix = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, GENERATE_ROWS):
        chunk = rng.standard_normal((min(GENERATE_ROWS, n - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        matrix[start : start + len(chunk)] = chunk
    return matrix


def embedding_like_rows(rng: np.random.Generator, seeds: np.ndarray, n: int) -> np.ndarray:
    """Unit rows drawn from a kernel density estimate of ``seeds`` (real embeddings): each is a
    seed plus Gaussian noise shaped by the seeds' covariance, so the rows keep the seeds' topics
    and their low effective dimension (about 70 of 384 for MiniLM on SciFact)."""
    centred = seeds - seeds.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    shape = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))).T.astype(np.float32)
    matrix = np.empty((n, seeds.shape[1]), dtype=np.float32)
    for start in range(0, n, GENERATE_ROWS):
        count = min(GENERATE_ROWS, n - start)
        chunk = seeds[rng.integers(0, len(seeds), count)].astype(np.float32)
        chunk += KDE_SPREAD * (rng.standard_normal((count, len(shape)), dtype=np.float32) @ shape)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        matrix[start : start + count] = chunk
    return matrix


def _timed_searches(index: EmbeddedVectorIndex, queries: np.ndarray, k: int) -> tuple[list, list]:
    """Each query's hits and seconds, after one untimed search touches the memory maps."""
    index.search(queries[0], k)
    seconds, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(index.search(query, k))
        seconds.append(time.perf_counter() - start)
    return results, seconds


def bench_approximate_search(
    seeds: np.ndarray,
    questions: np.ndarray,
    queries: np.ndarray,
    n: int = 1_000_000,
    k: int = 10,
    seed: int = 0,
) -> dict:
    """The IVF index against the exact scan on ``n`` rows drawn around ``seeds`` (real chunk
    embeddings): tuned on ``questions`` (real ones, e.g. a train split), asked other real
    ``queries``: p50/p95 of each, recall@k of IVF against exact, build times, and the recall
    the build measured on its questions."""
    rng = np.random.default_rng(seed)
    matrix = embedding_like_rows(rng, seeds, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    ids = [f"chunk-{i}" for i in range(n)]
    measured = {}
    for name, policy in (
        ("exact", ApproximatePolicy(min_rows=n + 1)),
        ("ivf", ApproximatePolicy(min_rows=1)),
    ):
        with tempfile.TemporaryDirectory(prefix="vector-bench-") as directory:
            started = time.perf_counter()
            meta = write_vector_part(Path(directory), ids, matrix, policy, questions)
            build_s = time.perf_counter() - started
            index = EmbeddedVectorIndex([LivePart(open_vector_part(Path(directory), ids, meta))])
            results, seconds = _timed_searches(index, queries, k)
        measured[name] = (meta, build_s, results, np.percentile(seconds, [50, 95]) * 1000)
    found = sum(
        len({h.chunk_id for h in exact} & {h.chunk_id for h in approximate})
        for exact, approximate in zip(measured["exact"][2], measured["ivf"][2], strict=True)
    )
    summary = measured["ivf"][0].get("approximate", {})
    nearest = np.mean([hits[0].score for hits in measured["exact"][2]])
    return {
        "n": n,
        "dim": matrix.shape[1],
        "queries": len(queries),
        "query_nearest_cosine": float(nearest),
        "used": bool(summary.get("used")),
        "nprobe": summary.get("nprobe"),
        "nlist": summary.get("nlist"),
        "build_recall": summary.get("recall_at_10"),
        "ivf_build_s": measured["ivf"][1],
        "exact_build_s": measured["exact"][1],
        "p50_ms": float(measured["ivf"][3][0]),
        "p95_ms": float(measured["ivf"][3][1]),
        "exact_p50_ms": float(measured["exact"][3][0]),
        "exact_p95_ms": float(measured["exact"][3][1]),
        "speedup_p95": float(measured["exact"][3][1] / measured["ivf"][3][1]),
        "recall_at_k_vs_exact": found / (k * len(queries)),
    }


def bench_vector_search(
    n: int = 1_000_000, dim: int = 384, n_queries: int = 200, k: int = 10, seed: int = 0
) -> dict:
    """p50/p95 of one top-k search, the numpy `matrix @ q` + argpartition p50, and recall@k."""
    if k >= n:
        raise ValueError(f"k ({k}) must be below n ({n}) for argpartition")
    rng = np.random.default_rng(seed)
    matrix = _unit_rows(rng, n, dim)
    queries = _unit_rows(rng, n_queries, dim)
    ids = [f"chunk-{i}" for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="vector-bench-") as directory:
        meta = write_vector_part(Path(directory), ids, matrix, ApproximatePolicy(min_rows=n + 1))
        index = EmbeddedVectorIndex([LivePart(open_vector_part(Path(directory), ids, meta))])
        results, ours = _timed_searches(index, queries, k)
    numpy_ms, found = [], 0
    for query, hits in zip(queries, results, strict=True):
        start = time.perf_counter()
        exact = np.argpartition(-(matrix @ query), k)[:k]
        numpy_ms.append(time.perf_counter() - start)
        found += len({ids[row] for row in exact} & {hit.chunk_id for hit in hits})
    p50, p95 = np.percentile(ours, [50, 95]) * 1000
    baseline = float(np.median(numpy_ms) * 1000)
    return {
        "n": n,
        "dim": dim,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "numpy_baseline_p50_ms": baseline,
        "speedup_vs_numpy": baseline / float(p50),
        "recall_at_k_vs_exact": found / (k * n_queries),
    }


def real_embeddings(
    dataset: Path, documents: int, embedder: Embedder
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A BEIR corpus's chunk vectors (from the releases benchmark's kept repository; embedded
    once), its train questions and its test questions, embedded by ``embedder``."""
    repository = kept_repository(dataset)
    if repository.pointer() is None:
        ingest(repository, beir_sample(dataset, documents), embedder)
    release = repository.open_pointer()
    seeds = np.concatenate([vectors for _, vectors in release.live_vectors()])
    train, _ = load_judged_queries(dataset, "train")
    test, _ = load_judged_queries(dataset, "test")
    return seeds, embedder.encode(list(train.values())), embedder.encode(list(test.values()))
