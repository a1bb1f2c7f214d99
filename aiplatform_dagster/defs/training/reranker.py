"""The reranker loop: labelled pairs -> a cross-encoder trained on hybrid candidates of the train
queries (MLflow run, registered ``challenger``) -> the gate, which makes it ``champion`` only when
hybrid + reranker beats what serves (the champion reranker, or no reranker) on the dev queries.
The query path follows ``models:/reranker@champion`` (``AIPLATFORM_RERANKER_MODEL``).
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import CPU_LARGE, GPU_T4, on_profile
from aiplatform_dagster.defs.metadata import latest_metadata_value, markdown_table
from aiplatform_dagster.defs.resources import MlflowResource, PlatformResource
from aiplatform_dagster.defs.training.assets import GATE_TAG, GROUP, OWNERS, ValidationConfig
from aiplatform_dagster.defs.training.embedder import (
    BENCHMARK_PATH,
    PAIRS_PATH,
    SPLIT,
    retrieval_training_pairs,
)
from aiplatform_dagster.mlops.names import RERANKER
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker, Reranker


@dataclass(frozen=True)
class LabelledQueries:
    """The labelled benchmark as the serving embedder indexes it, with the pairs' split."""

    engine: QueryEngine
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    train: dict[str, str]
    dev: dict[str, str]
    dataset_version: str


def open_labelled(
    context: dg.AssetExecutionContext, platform: PlatformResource
) -> LabelledQueries | None:
    """The queries ``retrieval_training_pairs`` last labelled, over the benchmark corpus indexed
    by the embedder that serves now (None: nothing labelled yet)."""
    import pandas as pd

    from aiplatform_dagster.evaluation.runner import open_benchmark

    key = retrieval_training_pairs.key
    pairs_path = latest_metadata_value(context.instance, key, PAIRS_PATH)
    if pairs_path is None:
        return None
    settings = platform.settings()
    embedder = platform.embedder()
    opened = open_benchmark(
        Path(latest_metadata_value(context.instance, key, BENCHMARK_PATH)),
        latest_metadata_value(context.instance, key, SPLIT),
        lambda release: factory.build_query_engine(
            settings, release, embedder=embedder, registry_models=False
        ),
        embedder,
        settings.paths.storage_dir / "benchmarks",
    )
    pairs = pd.read_parquet(pairs_path)
    side = dict(zip(pairs["query_id"], pairs["split"], strict=False))
    return LabelledQueries(
        engine=opened.engine,
        queries=opened.queries,
        qrels=opened.qrels,
        train={q: t for q, t in opened.queries.items() if side.get(q) == "train"},
        dev={q: t for q, t in opened.queries.items() if side.get(q) == "dev"},
        dataset_version=Path(pairs_path).stem,
    )


class RerankerTrainingConfig(dg.Config):
    epochs: int = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="Stop early (a budget).")
    batch_queries: int = Field(default=4, gt=0, description="Queries per optimiser step.")
    group_size: int = Field(default=8, gt=1, description="Passages scored together per query.")
    candidates: int = Field(default=30, gt=1, description="Hybrid candidates per train query.")
    learning_rate: float = Field(default=3e-5, gt=0)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    deps=[retrieval_training_pairs],
    code_version="1",
    output_required=False,
    **on_profile(GPU_T4),
)
def reranker_model(
    context: dg.AssetExecutionContext,
    config: RerankerTrainingConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
):
    """A cross-encoder trained on the hybrid candidates of the train queries (negatives
    filtered against the qrels, listwise distillation from the fused scores, blended with the
    first-stage score by a weight chosen on held-out train queries), logged to MLflow and
    registered as the ``challenger`` version of ``reranker``."""
    from aiplatform_dagster.mlops.registry import SEMVER_TAG, Change, ModelRegistry
    from aiplatform_dagster.mlops.reranker_training import (
        RerankerBudget,
        RerankerRecipe,
        candidate_lists,
        train_reranker,
    )

    labelled = open_labelled(context, platform)
    if labelled is None:
        context.log.warning("retrieval_training_pairs has no data yet; nothing to train")
        return
    budget = RerankerBudget(
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_queries=config.batch_queries,
        group_size=config.group_size,
        candidates=config.candidates,
        learning_rate=config.learning_rate,
    )
    recipe = RerankerRecipe()
    lists = candidate_lists(labelled.engine, labelled.train, labelled.qrels, budget.candidates)

    def report(step: int, total: int) -> None:
        if step == total or step % 10 == 0:
            context.log.info(f"Step {step}/{total}")

    with mlflow.run_for(context, labelled.dataset_version) as run:
        run.log_params({**budget.__dict__, **recipe.__dict__, "train_queries": len(lists)})
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "reranker"
            stats = train_reranker(lists, folder, budget, recipe, progress=report)
            metrics = {
                "pairs_per_second": stats.pairs_per_second,
                "train_seconds": stats.seconds,
                "loss": stats.loss,
                "first_stage_weight": stats.first_stage_weight,
                **{
                    f"holdout_{ranking.replace('=', '_')}_ndcg_at_10": score
                    for ranking, score in stats.holdout.items()
                },
            }
            run.log_metrics(metrics)
            source = run.log_folder(folder, "reranker")
        registry = ModelRegistry(run.client)
        name = run.target.model_name(RERANKER)
        first = not registry.has_versions(name)
        version = registry.register(
            name,
            source,
            run.run_id,
            Change.BASE_MODEL if first else Change.RETRAINED,
            base_model=recipe.base_model,
            description=f"Trained by Dagster run {context.run_id}",
        )
    yield dg.MaterializeResult(
        metadata={
            "model_version": version.version,
            "semver": version.tags.get(SEMVER_TAG, ""),
            "device": stats.device,
            "train_queries": stats.train_queries,
            "holdout_queries": stats.holdout_queries,
            "steps": stats.steps,
            "holdout": markdown_table(
                [{"ranking": k, "ndcg@10": round(v, 4)} for k, v in stats.holdout.items()], 20
            ),
            "mlflow_run": dg.MetadataValue.url(run.url),
            "mlflow_model": dg.MetadataValue.url(run.target.model_url(name, version.version)),
            **{key: round(value, 4) for key, value in metrics.items() if "holdout" not in key},
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    deps=[reranker_model],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def reranker_validation(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The gate: nDCG@10 of hybrid + challenger against hybrid + champion (or hybrid alone when
    there is no champion) on the dev queries; ``champion`` only on a win."""
    from aiplatform_dagster.mlops.gate import GateDecision
    from aiplatform_dagster.mlops.registry import CHALLENGER, CHAMPION, ModelRegistry
    from aiplatform_dagster.mlops.reranker_training import compare_with_hybrid
    from aiplatform_dagster.mlops.serving import model_folder

    target = mlflow.target()
    registry = ModelRegistry(target.client())
    name = target.model_name(RERANKER)
    labelled = open_labelled(context, platform)
    if labelled is None or registry.version(name, CHALLENGER) is None:
        return dg.MaterializeResult(metadata={"decision": "not run: no challenger to validate"})
    cache = factory.model_cache(platform.settings())

    def reranker(alias: str) -> tuple[str, Reranker]:
        version, folder = model_folder(target, f"models:/{name}@{alias}", cache)
        return version, CrossEncoderReranker(str(folder))

    challenger_version, challenger = reranker(CHALLENGER)
    measured = compare_with_hybrid(labelled.engine, challenger, labelled.dev, labelled.qrels)
    if registry.version(name, CHAMPION) is not None:
        champion_version, champion = reranker(CHAMPION)
        baseline_name = f"champion v{champion_version}"
        baseline = compare_with_hybrid(
            labelled.engine, champion, labelled.dev, labelled.qrels
        ).reranked
    else:
        baseline_name, baseline = "hybrid without a reranker", measured.hybrid
    decision = GateDecision("nDCG@10", measured.reranked, baseline, baseline_name, config.margin)
    context.log.info(f"challenger v{challenger_version}: {decision.reason}")
    if decision.promoted:
        registry.promote(name, challenger_version, decision.reason, f"dagster run {context.run_id}")
    registry.client.set_model_version_tag(name, challenger_version, GATE_TAG, decision.reason)
    return dg.MaterializeResult(
        metadata={
            "challenger_version": challenger_version,
            "baseline": baseline_name,
            "challenger_dev_ndcg@10": round(decision.candidate, 4),
            "baseline_dev_ndcg@10": round(decision.baseline, 4),
            "hybrid_dev_ndcg@10": round(measured.hybrid, 4),
            "margin": decision.margin,
            "promoted": decision.promoted,
            "decision": decision.reason,
            "dev_queries": measured.queries,
        }
    )
