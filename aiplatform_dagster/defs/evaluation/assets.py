"""Continuous evaluation: scores are asset metadata, so the UI plots them per materialisation."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.automation import follows_its_dependencies
from aiplatform_dagster.defs.compute import CPU_LARGE, on_profile
from aiplatform_dagster.defs.ingestion.assets import current_release
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.evaluation.answer_eval import (
    GOLDEN_ANSWERS,
    GoldenAnswer,
    load_golden_answers,
    run_answer_eval,
)
from aiplatform_dagster.evaluation.judge_cache import JudgeCache
from aiplatform_dagster.evaluation.metrics import DEFAULT_METRICS
from aiplatform_dagster.evaluation.retrieval_benchmark import EvalMode
from aiplatform_dagster.evaluation.runner import RetrievalEvalRequest, run_retrieval_eval
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.query.engine import NO_LLM_NOTE
from aiplatform_dagster.serving.feedback import open_feedback_store

GROUP = "evaluation"
OWNERS = ["team:ml-platform"]


class RetrievalEvalConfig(dg.Config):
    benchmark_path: str | None = Field(
        default=None,
        description="BEIR folder (corpus.jsonl, queries.jsonl, qrels/). Unset: the platform's "
        "own indexes on the shipped golden queries.",
    )
    split: str = "test"
    modes: list[str] = Field(default=[mode.value for mode in EvalMode])
    metrics: list[str] = Field(default=list(DEFAULT_METRICS))
    depth: int = Field(default=100, description="Documents ranked per query.")
    dense_weight: float | None = Field(
        default=None, description="Semantic share of hybrid; unset: AIPLATFORM_QUERY_DENSE_WEIGHT."
    )
    fusion: str | None = Field(
        default=None, description="score, dbsf or rrf; unset: AIPLATFORM_QUERY_FUSION."
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python"},
    deps=[current_release],
    code_version="1",
    **on_profile(CPU_LARGE),
    automation_condition=follows_its_dependencies(),
)
def retrieval_eval(
    context: dg.AssetExecutionContext, config: RetrievalEvalConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """nDCG, recall, precision and MRR per retrieval mode, with latency p50/p95/p99, on the
    current index release (or a BEIR benchmark's own release).

    Re-runs whenever ``current`` moves, so a regression shows up as a dip in the plots; each
    materialisation names the release and embedder it measured.
    """
    settings = platform.settings()
    request = RetrievalEvalRequest(
        benchmark=Path(config.benchmark_path) if config.benchmark_path else None,
        split=config.split,
        modes=[EvalMode(mode) for mode in config.modes],
        metrics=config.metrics,
        depth=config.depth,
        options=factory.query_options(settings).with_hybrid(config.dense_weight, config.fusion),
    )

    def embedded(done: int, total: int) -> None:
        context.log.info(f"Benchmark corpus: embedded {done}/{total} new chunks")

    def queried(mode: str, done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            context.log.info(f"{mode}: {done}/{total} queries")

    result = run_retrieval_eval(
        request,
        lambda release: factory.build_query_engine(settings, release),
        factory.build_embedder(settings),
        settings.paths.storage_dir / "benchmarks",
        embedded,
        queried,
    )
    for mode, reason in result.skipped.items():
        context.log.warning(f"{mode} not evaluated: {reason}")
    for warning in result.warnings:
        context.log.warning(f"{result.benchmark}: {warning}")
    # Keys name the benchmark, so each benchmark gets its own series in the asset's plots.
    metadata: dict[str, dg.RawMetadataValue] = {
        f"{result.benchmark}/{mode}/{name}": dg.MetadataValue.float(round(value, 4))
        for mode, values in result.as_dict().items()
        for name, value in values.items()
    }
    metadata["benchmark"] = result.benchmark
    metadata["queries"] = result.queries
    metadata["release_id"] = result.release_id
    metadata["embedder"] = result.embedder
    metadata["dataset_warnings"] = dg.MetadataValue.json(list(result.warnings))
    metadata["skipped_modes"] = dg.MetadataValue.json(result.skipped)
    metadata["summary"] = markdown_table(
        [
            {"mode": mode, **{k: round(v, 4) for k, v in values.items()}}
            for mode, values in result.as_dict().items()
        ]
    )
    return dg.MaterializeResult(metadata=metadata)


class AnswerEvalConfig(dg.Config):
    golden_answers: str = Field(
        default=str(GOLDEN_ANSWERS),
        description="JSON lines: _id, question, reference_answer, doc_ids.",
    )
    use_cache: bool = Field(
        default=False, description="Measure real generation cost and latency, not cache hits."
    )
    use_labels: bool = Field(
        default=True,
        description="Also judge against the corrected answers labellers gave (/v1/feedback).",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"openai"},
    deps=[current_release],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def answer_eval(
    context: dg.AssetExecutionContext, config: AnswerEvalConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """LLM-as-judge correctness and citation faithfulness on the golden questions, with
    latency, cost per query and the cost of the evaluation itself.

    Without an LLM there is nothing to judge with: the materialisation says so, no score.
    """
    settings = platform.settings()
    llm = factory.llm_settings(settings)
    if not llm.is_configured:
        context.log.warning(f"answer_eval did not run: {NO_LLM_NOTE}")
        return dg.MaterializeResult(
            metadata={"status": "not run", "reason": f"No LLM configured. {NO_LLM_NOTE}"}
        )
    golden = load_golden_answers(Path(config.golden_answers))
    labels = [
        GoldenAnswer(f"label-{label.request_id}", label.question, label.reference_answer, [])
        for label in open_feedback_store(settings).labels()
    ] if config.use_labels else []  # fmt: skip
    prices = factory.price_table(settings)

    def progress(done: int, total: int) -> None:
        context.log.info(f"Judged {done}/{total} answers")

    engine = factory.build_query_engine(settings)
    judge = factory.llm_settings(settings, judge=True)
    report = run_answer_eval(
        engine,
        judge.build_client(),
        judge.model,
        prices,
        golden + labels,
        replace(engine.defaults, use_cache=config.use_cache),
        progress,
        repeats=settings.llm.judge_repeats,
        cache=JudgeCache(settings.paths.storage_dir / "evaluation" / "judge_cache.sqlite"),
    )
    summary = report.summary()
    cache = engine.cache.stats() if engine.cache is not None else None
    return dg.MaterializeResult(
        metadata={
            "status": "evaluated",
            "release_id": engine.retriever.release_id or "",
            "answer_model": llm.model,
            "judge_model": report.judge_model,
            "judge_prompt_version": report.judge_prompt_version,
            "judge_repeats": report.judge_repeats,
            "questions": len(golden) + len(labels),
            "human_labels": len(labels),
            **{name: dg.MetadataValue.float(round(value, 6)) for name, value in summary.items()},
            **(
                {
                    "response_cache/hits": cache.hits,
                    "response_cache/misses": cache.misses,
                    "response_cache/hit_rate": dg.MetadataValue.float(round(cache.hit_rate, 4)),
                }
                if cache is not None
                else {}
            ),
            "answers": markdown_table(
                [
                    {
                        "id": a.question_id,
                        "correctness": a.correctness,
                        "faithfulness": a.faithfulness,
                        "correctness_std": round(a.correctness_std, 3),
                        "cited_expected": a.cited_expected_document,
                        "latency_ms": round(a.latency_ms, 1),
                        "answer": a.error or a.answer,
                    }
                    for a in report.answers
                ],
                limit=len(report.answers),
            ),
        }
    )
