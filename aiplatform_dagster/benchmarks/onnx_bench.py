"""(l) ONNX inference on CPU against the PyTorch float32 models, in the same process.

The query encoder is the packaged MiniLM: single queries (as serving encodes them) and one batch
of all the golden queries in int8, and single queries through the fused float graph (the "onnx"
path, the same arithmetic as PyTorch). The reranker is a small cross-encoder trained here on the
golden queries' hybrid candidates over the sample corpus (none can be downloaded), reranking
each query's top 10 as the query path does. The gate's routed nDCG@10 loss on the golden set and its
cosine between float and int8 query vectors are reported with them, since the gate decides
whether a serving release may use the int8 path.
"""

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR, load_settings
from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.onnx_gate import onnx_gate
from aiplatform_dagster.evaluation.runner import GOLDEN_DIR
from aiplatform_dagster.mlops.reranker_training import (
    RerankerBudget,
    RerankerRecipe,
    candidate_lists,
    train_reranker,
)
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.models.onnx_inference import INT8, ONNX, OnnxQueryEmbedder, OnnxReranker
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker
from aiplatform_dagster.rag.query.retriever import SearchMode

TOP = 10
REPEATS = 5
"""Timed passes over the queries; each query's fastest pass counts, against noise."""


def bench_onnx(reranker_steps: int = 6) -> dict[str, Any]:
    settings = load_settings()
    cache = factory.onnx_cache(settings)
    queries, qrels = load_judged_queries(GOLDEN_DIR)
    texts = list(queries.values())
    float_embedder = SentenceTransformerEmbedder()
    int8_embedder = OnnxQueryEmbedder.of(float_embedder, cache)
    started = time.perf_counter()
    int8_embedder.encode(texts[:1])
    load_s = time.perf_counter() - started  # exports once per model digest, then only loads
    float_embedder.encode(texts[:1])

    single = _ratio(
        lambda text: float_embedder.encode([text]), lambda text: int8_embedder.encode([text]), texts
    )
    onnx_embedder = OnnxQueryEmbedder.of(float_embedder, cache, ONNX)
    onnx_vectors = onnx_embedder.encode(texts)  # exported first when not cached
    onnx_single = _ratio(
        lambda text: float_embedder.encode([text]), lambda text: onnx_embedder.encode([text]), texts
    )
    onnx_cosine_min = float(np.sum(float_embedder.encode(texts) * onnx_vectors, axis=1).min())
    batch = _ratio(
        lambda _: float_embedder.encode(texts), lambda _: int8_embedder.encode(texts), ["all"]
    )

    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as scratch:
        repository = IndexRepository(Path(scratch) / "ingestion")
        ingest(repository, load_documents(SAMPLE_CORPUS_DIR)[0], float_embedder)
        release = repository.open_pointer()
        engine = factory.build_query_engine(
            settings, release, float_embedder, registry_models=False
        )
        folder = Path(scratch) / "reranker"
        lists = candidate_lists(engine, queries, qrels, 30)
        budget = RerankerBudget(max_steps=reranker_steps)
        train_reranker(lists, folder, budget, RerankerRecipe(interpolate=False), device="cpu")
        float_reranker = CrossEncoderReranker(str(folder))
        int8_reranker = OnnxReranker(str(folder), Path(scratch) / "onnx")
        candidates = {q: engine.retriever.search(q, SearchMode.HYBRID, TOP) for q in texts}
        float_reranker.rerank(texts[0], candidates[texts[0]], TOP)  # loads the float weights
        int8_reranker.rerank(texts[0], candidates[texts[0]], TOP)  # exports, then loads
        rerank = _ratio(
            lambda q: float_reranker.rerank(q, candidates[q], TOP),
            lambda q: int8_reranker.rerank(q, candidates[q], TOP),
            texts,
        )
        same_top3 = np.mean(
            [
                _ids(float_reranker.rerank(q, candidates[q], 3))
                == _ids(int8_reranker.rerank(q, candidates[q], 3))
                for q in texts
            ]
        )
        gate = onnx_gate(
            factory.build_query_engine(
                settings, release, float_embedder, registry_models=False, reranker=float_reranker
            ),
            factory.build_query_engine(
                settings, release, int8_embedder, registry_models=False, reranker=int8_reranker
            ),
            INT8,
            settings.query.onnx_max_ndcg_loss,
        )
    return {
        "queries": len(texts),
        "load_s": load_s,
        "single": single,
        "onnx_single": onnx_single,
        "onnx_cosine_min": onnx_cosine_min,
        "batch": batch,
        "rerank": rerank,
        "same_top3": float(same_top3),
        "reranker_steps": reranker_steps,
        "gate": gate,
    }


def _ids(reranked: list) -> list[str]:
    return [candidate.chunk.chunk_id for candidate in reranked]


def _ratio(
    baseline: Callable[[str], object], onnx: Callable[[str], object], items: list[str]
) -> dict[str, float]:
    """p50 milliseconds per item of each (each item's fastest of REPEATS passes), and their
    ratio. A pass runs all items with one method, then all with the other: alternating call by
    call made each method start while the other's threads still spun (PyTorch's OpenMP pool
    busy-waits after a call)."""
    best = {name: [float("inf")] * len(items) for name in ("torch", "onnx")}
    for _ in range(REPEATS):
        for name, call in (("torch", baseline), ("onnx", onnx)):
            for number, item in enumerate(items):
                started = time.perf_counter()
                call(item)
                elapsed = (time.perf_counter() - started) * 1000
                best[name][number] = min(best[name][number], elapsed)
    torch_ms = percentiles(best["torch"], (50,))["p50_ms"]
    onnx_ms = percentiles(best["onnx"], (50,))["p50_ms"]
    return {"torch_ms": torch_ms, "onnx_ms": onnx_ms, "speedup": torch_ms / onnx_ms}
