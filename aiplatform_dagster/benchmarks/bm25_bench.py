"""Query latency of our sparse BM25 index against rank-bm25 on one synthetic corpus.

Both indexes get the same pre-tokenised corpus, so the numbers compare scoring, not analysis.
"""

import time
from collections.abc import Callable, Sequence

import numpy as np
from rank_bm25 import BM25Okapi

from aiplatform_dagster.rag.index.bm25 import BM25Index

VOCABULARY_SIZE = 50_000
DOC_LENGTHS = (60, 200)
QUERY_LENGTHS = (2, 5)
# rank-bm25 scans every document per query term in Python; a few queries give a stable median.
RANK_BM25_QUERIES = 20


def _synthetic_corpus(
    rng: np.random.Generator, n_docs: int, n_queries: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Documents and queries drawn from one Zipf (s=1) vocabulary, like natural text."""
    frequency = 1.0 / np.arange(1, VOCABULARY_SIZE + 1)
    frequency /= frequency.sum()
    words = np.array([f"w{i}" for i in range(VOCABULARY_SIZE)], dtype=object)

    def draw(n: int, lengths: tuple[int, int]) -> list[list[str]]:
        sizes = rng.integers(lengths[0], lengths[1] + 1, size=n)
        flat = words[rng.choice(VOCABULARY_SIZE, size=int(sizes.sum()), p=frequency)]
        return [part.tolist() for part in np.split(flat, np.cumsum(sizes)[:-1])]

    return draw(n_docs, DOC_LENGTHS), draw(n_queries, QUERY_LENGTHS)


def _p50_ms(run_query: Callable[[list[str]], object], queries: Sequence[list[str]]) -> float:
    """Median wall time of one query, in milliseconds."""
    timings = []
    for query in queries:
        start = time.perf_counter()
        run_query(query)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000)


def bench_bm25(n_docs: int = 100_000, n_queries: int = 200, seed: int = 0) -> dict:
    """Top-10 query p50 of `BM25Index.search` and rank-bm25's `get_top_n`, plus our build time.

    rank-bm25 runs on the first 20 queries only: it is orders of magnitude slower.
    """
    if n_docs < 1 or n_queries < 1:
        raise ValueError("rank-bm25 needs at least one document and one query")
    rng = np.random.default_rng(seed)
    documents, queries = _synthetic_corpus(rng, n_docs, n_queries)
    doc_ids = [f"doc-{i}" for i in range(n_docs)]

    start = time.perf_counter()
    ours = BM25Index.from_tokens(doc_ids, documents)
    build_s = time.perf_counter() - start
    theirs = BM25Okapi(documents, k1=ours.k1, b=ours.b)

    ours_p50 = _p50_ms(lambda query: ours.search(" ".join(query), k=10), queries)
    theirs_p50 = _p50_ms(
        lambda query: theirs.get_top_n(query, doc_ids, n=10), queries[:RANK_BM25_QUERIES]
    )
    return {
        "n_docs": n_docs,
        "ours_p50_ms": ours_p50,
        "rank_bm25_p50_ms": theirs_p50,
        "speedup": theirs_p50 / ours_p50,
        "build_s": build_s,
    }
