"""Training assets: labelled data, the trained query router, and the gate that promotes it.

Each training materialisation is one MLflow run (``MlflowResource.run_for``); the registered
version becomes ``challenger``, and only ``query_router_validation`` makes it ``champion`` when it
beats what serves on the dev split. Heavy libraries load inside the steps.
"""

import hashlib
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field

from aiplatform_dagster.config import Settings
from aiplatform_dagster.defs.compute import CPU_LARGE, on_profile
from aiplatform_dagster.defs.metadata import latest_metadata_value, markdown_table
from aiplatform_dagster.defs.resources import MlflowResource, PlatformResource
from aiplatform_dagster.mlops.names import ROUTER
from aiplatform_dagster.rag import factory

GROUP = "training"
OWNERS = ["team:ml-platform"]
FRAME_PATH = "frame_path"
GATE_TAG = "aiplatform.gate"


class LabelledDataConfig(dg.Config):
    """Where labelled queries come from and how they are split; shared by every training set."""

    benchmark_path: str | None = Field(
        default=None,
        description="BEIR folder whose train qrels label the queries (e.g. ../shared/datasets/"
        "scifact). Unset: AIPLATFORM_TRAINING_BENCHMARK_PATH; unset too, the golden set, which "
        "has only a test split, so nothing is trained.",
    )
    split: str = Field(default="train", description="Qrels split to label; never 'test'.")
    dev_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Queries held out for the gate."
    )
    min_dev_queries: int = Field(
        default=20,
        gt=0,
        description="Fewer dev queries than this: skip rather than train on noise.",
    )

    def benchmark(self, settings: Settings) -> Path | None:
        """This run's labelled folder, else the platform's (None: nothing to learn from).

        Refuses the test split: it is for final measurement only.
        """
        if self.split == "test":
            raise ValueError("split 'test' is for final measurement only; label 'train' (or 'dev')")
        chosen = self.benchmark_path or settings.training.benchmark_path
        return Path(chosen).resolve() if chosen else None


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    code_version="1",
    output_required=False,
    **on_profile(CPU_LARGE),
)
def router_training_data(
    context: dg.AssetExecutionContext, config: LabelledDataConfig, platform: PlatformResource
):
    """Labelled queries for the router: each query's nDCG@10 under keyword, semantic and hybrid
    search, the best mode as its label, split by query into train and dev.

    Skips (and says why) without a train split or with too few dev queries; the test split is
    never used for training or for the gate.
    """
    from aiplatform_dagster.evaluation.beir import BeirDatasetError
    from aiplatform_dagster.evaluation.runner import open_benchmark
    from aiplatform_dagster.mlops.router import (
        label_counts,
        mode_means,
        score_modes,
        training_frame,
    )

    settings = platform.settings()
    benchmark = config.benchmark(settings)
    try:
        opened = open_benchmark(
            benchmark,
            config.split,
            lambda release: factory.build_query_engine(settings, release, registry_models=False),
            factory.build_embedder(settings),
            settings.paths.storage_dir / "benchmarks",
        )
    except (BeirDatasetError, FileNotFoundError) as error:
        context.log.warning(
            f"No router training data, so nothing is trained: {error}. Set "
            "AIPLATFORM_TRAINING_BENCHMARK_PATH (or this run's benchmark_path) to a BEIR folder "
            "with qrels/train.tsv (e.g. ../shared/datasets/scifact)."
        )
        return
    scores = score_modes(opened.engine, opened.queries, opened.qrels)
    frame = training_frame(opened.queries, scores, config.dev_fraction)
    dev = int((frame["split"] == "dev").sum())
    if dev < config.min_dev_queries:
        context.log.warning(
            f"{opened.name}/{config.split}: {dev} dev queries of {len(frame)} labelled, below "
            f"min_dev_queries={config.min_dev_queries}; a dev score would be noise, so nothing "
            "is trained. Label more queries or lower min_dev_queries."
        )
        return
    data = frame.to_parquet(index=False)
    version = hashlib.sha256(data).hexdigest()[:16]
    path = settings.paths.storage_dir / "training" / ROUTER / f"{version}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    counts = {split: label_counts(frame, split) for split in ("train", "dev")}
    means = mode_means(frame, "dev")
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            FRAME_PATH: dg.MetadataValue.path(str(path)),
            "benchmark": opened.name,
            "release_id": opened.engine.retriever.release_id or "",
            "dagster/row_count": len(frame),
            "train_queries": len(frame) - dev,
            "dev_queries": dev,
            "labels": markdown_table([{"split": s, **c} for s, c in counts.items()]),
            **{f"dev/{mode}/ndcg@10": round(value, 4) for mode, value in means.items()},
            "preview": markdown_table(
                frame[["query_id", "text", "split", "label", "weight"]].to_dict("records")
            ),
        },
    )


class RouterModelConfig(dg.Config):
    c: float = Field(default=1.0, gt=0, description="Inverse regularisation of the classifier.")


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"scikitlearn", "mlflow"},
    deps=[router_training_data],
    code_version="1",
    output_required=False,
    **on_profile(CPU_LARGE),  # a logistic regression: a GPU would only add start-up time
)
def query_router_model(
    context: dg.AssetExecutionContext, config: RouterModelConfig, mlflow: MlflowResource
):
    """A scikit-learn router trained on the labelled queries, logged to MLflow and registered
    as the ``challenger`` version of ``query_router``."""
    import pandas as pd

    from aiplatform_dagster.mlops.registry import SEMVER_TAG, Change, ModelRegistry
    from aiplatform_dagster.mlops.router import (
        FEATURES,
        TIE_MARGIN,
        TrainedRouter,
        mode_means,
        routed_score,
        save_router,
        train_router,
    )

    frame_path, dataset_version = latest_training_data(context.instance)
    if frame_path is None:
        context.log.warning("router_training_data has no data yet; nothing to train")
        return
    frame = pd.read_parquet(frame_path)
    with mlflow.run_for(context, dataset_version) as run:
        model = train_router(frame, config.c)
        router = TrainedRouter(model)
        dev = frame[frame["split"] == "dev"]
        train = frame[frame["split"] == "train"]
        metrics = {
            "train_accuracy": float(model.score(train[list(FEATURES)], train["label"])),
            "dev_routed_ndcg_at_10": routed_score(router, dev),
            **{f"dev_{mode}_ndcg_at_10": v for mode, v in mode_means(frame, "dev").items()},
        }
        run.log_params({"C": config.c, "features": ",".join(FEATURES), "tie_margin": TIE_MARGIN,
                        "train_queries": len(train), "dev_queries": len(dev),
                        "training_data": frame_path})  # fmt: skip
        run.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as scratch:
            source = run.log_folder(save_router(model, Path(scratch) / "model"), "model")
        registry = ModelRegistry(run.client)
        name = run.target.model_name(ROUTER)
        first = registry.version(name, "challenger") is None
        version = registry.register(
            name,
            source,
            run.run_id,
            Change.BASE_MODEL if first else Change.RETRAINED,
            base_model="sklearn LogisticRegression",
            description=f"Trained by Dagster run {context.run_id} on {dataset_version}",
        )
    yield dg.MaterializeResult(
        metadata={
            "model_version": version.version,
            "semver": version.tags.get(SEMVER_TAG, ""),
            "mlflow_run": dg.MetadataValue.url(run.url),
            "mlflow_model": dg.MetadataValue.url(run.target.model_url(name, version.version)),
            "dataset_version": dataset_version,
            **{key: round(value, 4) for key, value in metrics.items()},
        }
    )


class ValidationConfig(dg.Config):
    margin: float = Field(
        default=0.005,
        ge=0,
        description="The challenger must beat the baseline by more than this: dev nDCG@10 "
        "moves by a few thousandths between equally good models on a few hundred queries.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "mlflow"},
    deps=[query_router_model],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def query_router_validation(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The gate: the challenger router against the champion (or the rule router when there is
    none) on the dev split; promoted to ``champion`` only on a win."""
    import pandas as pd

    from aiplatform_dagster.mlops.gate import GateDecision
    from aiplatform_dagster.mlops.registry import ModelRegistry
    from aiplatform_dagster.mlops.router import routed_score
    from aiplatform_dagster.mlops.serving import load_registered_router

    frame_path, _ = latest_training_data(context.instance)
    target = mlflow.target()
    registry = ModelRegistry(target.client())
    name = target.model_name(ROUTER)
    if frame_path is None or registry.version(name, "challenger") is None:
        return dg.MaterializeResult(metadata={"decision": "not run: no challenger to validate"})
    dev = pd.read_parquet(frame_path).query("split == 'dev'")
    cache = factory.model_cache(platform.settings())
    candidate = load_registered_router(target, f"models:/{name}@challenger", cache)
    challenger = candidate.version  # the version loaded, even if the alias moved since
    if registry.version(name, "champion") is not None:
        baseline = load_registered_router(target, f"models:/{name}@champion", cache)
        baseline_name = f"champion v{baseline.version}"
    else:
        baseline = factory.rule_router(platform.settings())
        baseline_name = "the rule router"
    decision = GateDecision(
        "nDCG@10",
        routed_score(candidate, dev),
        routed_score(baseline, dev),
        baseline_name,
        config.margin,
    )
    context.log.info(f"challenger v{challenger}: {decision.reason}")
    if decision.promoted:
        registry.promote(name, challenger, decision.reason, f"dagster run {context.run_id}")
    registry.client.set_model_version_tag(name, challenger, GATE_TAG, decision.reason)
    return dg.MaterializeResult(
        metadata={
            "challenger_version": challenger,
            "baseline": baseline_name,
            "challenger_dev_ndcg@10": round(decision.candidate, 4),
            "baseline_dev_ndcg@10": round(decision.baseline, 4),
            "margin": decision.margin,
            "promoted": decision.promoted,
            "decision": decision.reason,
            "dev_queries": len(dev),
        }
    )


def latest_training_data(instance: dg.DagsterInstance) -> tuple[str | None, str | None]:
    """The frame the latest ``router_training_data`` materialisation wrote, and its version."""
    path = latest_metadata_value(instance, router_training_data.key, FRAME_PATH)
    return (path, Path(path).stem) if path else (None, None)
