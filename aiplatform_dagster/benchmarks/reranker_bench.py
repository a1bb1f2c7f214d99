"""(h) The trained cross-encoder reranker against hybrid alone on a BEIR benchmark.

Trained on the train split's non-dev queries (dev held out by ``in_dev_split``, as the gate
uses it), compared on dev, then measured once on test. Rerank latency is the cross-encoder
over the top 10 hybrid candidates on CPU, as a ratio to the hybrid retrieval that produced
them, both timed in this process on the same queries.
"""

import time
from pathlib import Path
from typing import Any

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.runner import open_benchmark
from aiplatform_dagster.mlops.reranker_training import (
    RerankerBudget,
    RerankerRecipe,
    candidate_lists,
    compare_with_hybrid,
    split_queries,
    train_reranker,
)
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import Release
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker
from aiplatform_dagster.rag.query.retriever import SearchMode

LATENCY_QUERIES = 100
TOP = 10


def bench_reranker(
    dataset: Path,
    dev_fraction: float = 0.2,
    budget: RerankerBudget | None = None,
    recipe: RerankerRecipe | None = None,
) -> dict[str, Any]:
    settings = load_settings()
    embedder = factory.build_embedder(settings)
    storage = settings.paths.storage_dir / "benchmarks"
    budget = budget or RerankerBudget()

    def make_engine(release: Release | None) -> QueryEngine:
        return factory.build_query_engine(settings, release, embedder)

    train = open_benchmark(dataset, "train", make_engine, embedder, storage)
    dev_queries = split_queries(train.queries, dev_fraction, "dev")
    lists = candidate_lists(
        train.engine, split_queries(train.queries, dev_fraction, "train"), train.qrels,
        budget.candidates,
    )  # fmt: skip
    folder = storage / f"{dataset.name}-reranker"
    stats = train_reranker(lists, folder, budget, recipe)
    reranker = CrossEncoderReranker(str(folder), device="cpu")
    dev = compare_with_hybrid(train.engine, reranker, dev_queries, train.qrels)
    test = open_benchmark(dataset, "test", make_engine, embedder, storage)
    measured = compare_with_hybrid(test.engine, reranker, test.queries, test.qrels)
    hybrid_ms, rerank_ms = _latency(test.engine, reranker, list(test.queries.values()))
    return {
        "stats": stats,
        "dev": dev,
        "test": measured,
        "hybrid_ms": hybrid_ms,
        "rerank_ms": rerank_ms,
        "rerank_vs_hybrid_p50": rerank_ms["p50_ms"] / hybrid_ms["p50_ms"],
    }


def _latency(
    engine: QueryEngine, reranker: CrossEncoderReranker, queries: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-query milliseconds of hybrid top-10 retrieval and of reranking those 10 (models
    loaded beforehand, so neither counts a cold start)."""
    reranker.rerank(queries[0], engine.retriever.search(queries[0], SearchMode.HYBRID, TOP), TOP)
    hybrid, rerank = [], []
    for query in queries[:LATENCY_QUERIES]:
        started = time.perf_counter()
        candidates = engine.retriever.search(query, SearchMode.HYBRID, TOP)
        retrieved = time.perf_counter()
        reranker.rerank(query, candidates, TOP)
        hybrid.append((retrieved - started) * 1000)
        rerank.append((time.perf_counter() - retrieved) * 1000)
    return percentiles(hybrid), percentiles(rerank)
