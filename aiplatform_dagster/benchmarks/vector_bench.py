"""Single-query latency of EmbeddedVectorIndex against numpy brute force on the same vectors.

Each method runs all its queries back to back, as a serving process would: alternating them query
by query made every index search follow numpy's 1.5 GB sweep and cost it up to 1.5x.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from aiplatform_dagster.rag.index.vector_store import (
    EmbeddedVectorIndex,
    LivePart,
    open_vector_part,
    write_vector_part,
)

GENERATE_ROWS = 65_536  # rows drawn per step: no float64 or full-size temporaries


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Random L2-normalised float32 rows, generated in place chunk by chunk."""
    matrix = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, GENERATE_ROWS):
        chunk = rng.standard_normal((min(GENERATE_ROWS, n - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        matrix[start : start + len(chunk)] = chunk
    return matrix


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
        meta = write_vector_part(Path(directory), ids, matrix)
        index = EmbeddedVectorIndex([LivePart(open_vector_part(Path(directory), ids, meta))])
        index.search(queries[0], k)  # first touch of the memory maps is not a query's cost
        ours, results = [], []
        for query in queries:
            start = time.perf_counter()
            results.append(index.search(query, k))
            ours.append(time.perf_counter() - start)
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
