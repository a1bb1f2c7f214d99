"""What the embedder gate measures: hybrid nDCG@10 on the dev queries of a labelled benchmark,
each embedder over the benchmark corpus indexed by itself (one repository per embedder, so a
rerun re-embeds nothing)."""

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiplatform_dagster.config import Settings
from aiplatform_dagster.evaluation.retrieval_benchmark import (
    EvalMode,
    document_rankers,
    evaluate_modes,
)
from aiplatform_dagster.evaluation.runner import open_benchmark
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.rag import factory

METRIC = "ndcg@10"


@dataclass(frozen=True)
class EmbedderScores:
    ndcg: dict[str, float]
    """label -> hybrid nDCG@10 over the dev queries."""
    queries: int


def score_embedders(
    settings: Settings,
    benchmark: Path,
    split: str,
    dev_query_ids: Collection[str],
    embedders: Mapping[str, Embedder],
    log: Callable[[str], None] = print,
) -> EmbedderScores:
    """Hybrid nDCG@10 of each embedder on the ``dev_query_ids`` of ``split``."""
    scores: dict[str, float] = {}
    queries: dict[str, str] = {}
    for label, embedder in embedders.items():

        def progress(done: int, total: int, label: str = label) -> None:
            log(f"{label} embedder: {done}/{total} benchmark chunks embedded")

        opened = open_benchmark(
            benchmark,
            split,
            lambda release, embedder=embedder: factory.build_query_engine(
                settings, release, embedder=embedder, registry_models=False
            ),
            embedder,
            settings.paths.storage_dir / "benchmarks",
            embed_progress=progress,
        )
        queries = {qid: text for qid, text in opened.queries.items() if qid in dev_query_ids}
        if not queries:
            raise ValueError(f"none of the dev queries is in {benchmark.name}/{split}")
        qrels = {qid: opened.qrels[qid] for qid in queries}
        rankers, _ = document_rankers(opened.engine, [EvalMode.HYBRID])
        report = evaluate_modes(rankers, queries, qrels, [METRIC])[EvalMode.HYBRID.value]
        scores[label] = report.metrics[METRIC]
        log(f"{label} embedder: hybrid {METRIC} {scores[label]:.4f} on {len(queries)} dev queries")
    return EmbedderScores(scores, len(queries))
