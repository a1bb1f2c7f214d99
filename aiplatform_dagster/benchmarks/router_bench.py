"""(g) The trained query router against the rule router, on a BEIR benchmark's test split.

Trained on the benchmark's train split (dev split held out, as the gate uses it), measured once
on test: the mean nDCG@10 of the mode each router picks per query, next to always-hybrid and the
oracle (the best mode for every query), all from the same per-query, per-mode scores.
"""

import time
from pathlib import Path
from typing import Any

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.evaluation.runner import open_benchmark
from aiplatform_dagster.mlops.router import (
    MODES,
    TrainedRouter,
    label_counts,
    routed_score,
    score_modes,
    train_router,
    training_frame,
)
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import Release
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.router import Router


def bench_router(dataset: Path, dev_fraction: float = 0.2) -> dict[str, Any]:
    settings = load_settings()
    embedder = factory.build_embedder(settings)
    storage = settings.paths.storage_dir / "benchmarks"

    def make_engine(release: Release | None) -> QueryEngine:
        return factory.build_query_engine(settings, release, embedder)

    train = open_benchmark(dataset, "train", make_engine, embedder, storage)
    frame = training_frame(train.queries, score_modes(train.engine, train.queries, train.qrels),
                           dev_fraction)  # fmt: skip
    started = time.perf_counter()
    try:
        router: Router = TrainedRouter(train_router(frame))
        note = ""
    except ValueError as error:  # one label everywhere: the gate would keep the rules
        router, note = factory.rule_router(settings), str(error)
    train_seconds = time.perf_counter() - started
    test = open_benchmark(dataset, "test", make_engine, embedder, storage)
    scores = score_modes(test.engine, test.queries, test.qrels)
    measured = training_frame(test.queries, scores, dev_fraction=0.0)
    rules = factory.rule_router(settings)
    dev = frame[frame["split"] == "dev"]
    return {
        "train_queries": int((frame["split"] == "train").sum()),
        "test_queries": len(measured),
        "train_labels": label_counts(frame, "train"),
        "train_seconds": train_seconds,
        "note": note,
        "dev_trained": routed_score(router, dev),
        "dev_rules": routed_score(rules, dev),
        "test_trained": routed_score(router, measured),
        "test_rules": routed_score(rules, measured),
        **{f"test_{mode.value}": float(measured[f"ndcg_{mode.value}"].mean()) for mode in MODES},
        "test_oracle": float(measured[[f"ndcg_{m.value}" for m in MODES]].max(axis=1).mean()),
    }
