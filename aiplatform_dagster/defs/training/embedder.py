"""The embedder loop: labelled pairs -> a fine-tuned embedder (MLflow run, registered version,
alias ``challenger``) -> a candidate index release built with it beside the live one -> the gate,
which promotes model and release together only when hybrid search gets better on the dev split.

Heavy libraries load inside the steps; the training and re-embedding steps run on the GPU pool
when there is one and say which device they used.
"""

import hashlib
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field

from aiplatform_dagster.defs.compute import CPU_LARGE, GPU_T4, on_profile
from aiplatform_dagster.defs.metadata import latest_metadata_value, markdown_table
from aiplatform_dagster.defs.resources import MlflowResource, PlatformResource
from aiplatform_dagster.defs.training.assets import (
    GATE_TAG,
    GROUP,
    OWNERS,
    LabelledDataConfig,
    ValidationConfig,
)
from aiplatform_dagster.mlops.names import EMBEDDER
from aiplatform_dagster.rag import factory

PAIRS_PATH = "pairs_path"
BENCHMARK_PATH = "benchmark_path"
SPLIT = "split"


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    code_version="1",
    output_required=False,
    **on_profile(CPU_LARGE),
)
def retrieval_training_pairs(
    context: dg.AssetExecutionContext, config: LabelledDataConfig, platform: PlatformResource
):
    """(query, relevant passage) pairs from a labelled benchmark's qrels, split by query into
    train and dev (the router's split, so every gate reads the same dev queries).

    Skips (and says why) without a train split or with too few dev queries.
    """
    from aiplatform_dagster.evaluation.beir import BeirDatasetError, load_beir
    from aiplatform_dagster.mlops.embedder_training import training_pairs

    settings = platform.settings()
    folder = config.benchmark(settings)
    if folder is None:
        context.log.warning(
            "No labelled data: the golden set has only a test split, so nothing is trained. Set "
            "AIPLATFORM_TRAINING_BENCHMARK_PATH (or this run's benchmark_path) to a BEIR folder "
            "with qrels/train.tsv (e.g. ../shared/datasets/scifact)."
        )
        return
    try:
        dataset = load_beir(folder, config.split)
    except (BeirDatasetError, FileNotFoundError) as error:
        context.log.warning(f"No training pairs, so nothing is trained: {error}")
        return
    pairs = training_pairs(dataset, config.dev_fraction)
    dev_queries = pairs.loc[pairs["split"] == "dev", "query_id"].nunique()
    if dev_queries < config.min_dev_queries:
        context.log.warning(
            f"{folder.name}/{config.split}: {dev_queries} dev queries, below min_dev_queries="
            f"{config.min_dev_queries}; a dev score would be noise, so nothing is trained."
        )
        return
    data = pairs.to_parquet(index=False)
    version = hashlib.sha256(data).hexdigest()[:16]
    path = settings.paths.storage_dir / "training" / "retrieval_pairs"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{version}.parquet").write_bytes(data)
    by_split = pairs.groupby("split").agg(pairs=("doc_id", "size"), queries=("query_id", "nunique"))
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            PAIRS_PATH: dg.MetadataValue.path(str(path / f"{version}.parquet")),
            BENCHMARK_PATH: dg.MetadataValue.path(str(folder)),
            SPLIT: config.split,
            "dagster/row_count": len(pairs),
            "splits": markdown_table(by_split.reset_index().to_dict("records")),
            "preview": markdown_table(
                pairs[["query_id", "split", "query", "passage"]].to_dict("records")
            ),
        },
    )


class EmbedderTrainingConfig(dg.Config):
    base_model: str | None = Field(
        default=None,
        description="sentence-transformers folder to start from (unset: the embedder that built "
        "the current release, the packaged all-MiniLM-L6-v2 on a new platform).",
    )
    epochs: int = Field(default=3, gt=0)
    batch_size: int = Field(
        default=32,
        gt=1,
        description="Pairs per step; each is a negative for the others.",
    )
    learning_rate: float = Field(default=5e-5, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="Stop early (a budget).")
    max_seq_length: int = Field(default=256, gt=8, description="Tokens read per text.")


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    deps=[retrieval_training_pairs],
    code_version="1",
    output_required=False,
    **on_profile(GPU_T4),
)
def embedder_model(
    context: dg.AssetExecutionContext,
    config: EmbedderTrainingConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
):
    """The embedder fine-tuned on the train pairs with in-batch negatives, logged to MLflow and
    registered as the ``challenger`` version of ``embedder``.

    The first time, the embedder that built the current release is registered too and made
    champion: it is what the challenger must beat, and what a rollback returns to.
    """
    import pandas as pd

    from aiplatform_dagster.mlops.embedder_registry import ensure_serving_version, register_embedder
    from aiplatform_dagster.mlops.embedder_training import EmbedderBudget, fine_tune_embedder
    from aiplatform_dagster.mlops.registry import SEMVER_TAG

    pairs_path = latest_metadata_value(context.instance, retrieval_training_pairs.key, PAIRS_PATH)
    if pairs_path is None:
        context.log.warning("retrieval_training_pairs has no data yet; nothing to train")
        return
    pairs = pd.read_parquet(pairs_path)
    serving = platform.embedder()
    budget = EmbedderBudget(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        max_seq_length=config.max_seq_length,
    )

    def report(step: int, total: int, loss: float) -> None:
        if step == total or step % 10 == 0:
            context.log.info(f"Step {step}/{total}: loss {loss:.4f}")

    with mlflow.run_for(context, Path(pairs_path).stem) as run:
        name = run.target.model_name(EMBEDDER)
        baseline = ensure_serving_version(run, name, serving, f"dagster run {context.run_id}")
        if baseline is not None:
            context.log.info(f"Registered the serving embedder as {name} v{baseline.version}")
        base = config.base_model or getattr(serving, "model_path", None)
        if base is None:
            raise ValueError(
                f"the serving embedder {serving.model_id} has no local weights to fine-tune: set "
                "base_model to a sentence-transformers folder"
            )
        run.log_params({**budget.__dict__, "base_model": base, "training_pairs": pairs_path})
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "embedder"
            stats = fine_tune_embedder(base, pairs, budget, folder, progress=report)
            metrics = {
                "pairs_per_second": stats.pairs_per_second,
                "train_seconds": stats.seconds,
                "first_loss": stats.first_loss,
                "last_loss": stats.last_loss,
            }
            run.log_metrics(metrics)
            version = register_embedder(run, name, folder, base, context.run_id)
    yield dg.MaterializeResult(
        metadata={
            "model_version": version.version,
            "semver": version.tags.get(SEMVER_TAG, ""),
            "device": stats.device,
            "pairs": stats.pairs,
            "steps": stats.steps,
            "mlflow_run": dg.MetadataValue.url(run.url),
            "mlflow_model": dg.MetadataValue.url(run.target.model_url(name, version.version)),
            **{key: round(value, 4) for key, value in metrics.items()},
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "numpy"},
    deps=[embedder_model, dg.AssetKey("current_release")],
    code_version="1",
    output_required=False,
    **on_profile(GPU_T4),
)
def candidate_release(
    context: dg.AssetExecutionContext, platform: PlatformResource, mlflow: MlflowResource
):
    """The current release's chunks re-embedded by the challenger embedder, named by the
    ``candidate`` pointer: queries never see it unless the gate promotes it."""
    from aiplatform_dagster.mlops.registry import CHALLENGER
    from aiplatform_dagster.mlops.serving import registered_embedder
    from aiplatform_dagster.models.identity import embedder_identity
    from aiplatform_dagster.rag.index.build import reembed_release
    from aiplatform_dagster.rag.index.releases import CANDIDATE

    settings = platform.settings()
    target = mlflow.target()
    uri = f"models:/{target.model_name(EMBEDDER)}@{CHALLENGER}"
    repository = platform.repository()
    source = repository.open_pointer()
    embedder = registered_embedder(
        target, uri, factory.model_cache(settings), settings.embedding.device
    )
    identity = embedder_identity(embedder)
    if identity == source.embedder_identity:
        context.log.info(f"{uri} already built the current release {source.release_id}")
        return

    def report(done: int, total: int) -> None:
        context.log.info(f"Re-embedded {done}/{total} chunks")

    provenance = {"dagster_run_id": context.run_id, "embedder_uri": uri}
    release, embedding = reembed_release(repository, source, embedder, identity, report, provenance)
    backend = platform.vector_backend()
    backend.prepare(release)
    repository.move_pointer(release.release_id, repository.pointer(CANDIDATE), name=CANDIDATE)
    backend.point(CANDIDATE, release.release_id)
    yield dg.MaterializeResult(
        metadata={
            "release_id": release.release_id,
            "reembedded_from": source.release_id,
            "embedder": identity,
            "dagster/row_count": embedding.computed,
            "seconds": round(embedding.seconds, 2),
            "chunks_per_second": round(embedding.computed / embedding.seconds, 1)
            if embedding.seconds
            else 0.0,
            "path": dg.MetadataValue.path(str(release.folder)),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "mlflow"},
    deps=[candidate_release],
    code_version="1",
    **on_profile(CPU_LARGE),
)
def embedder_validation(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The gate: hybrid nDCG@10 on the dev queries with the challenger embedder against the
    serving one; on a win the candidate release becomes current and the challenger champion,
    in that order (see ``mlops/embedder_release.py`` for why a crash between them is safe)."""
    import pandas as pd

    from aiplatform_dagster.mlops.embedder_gate import score_embedders
    from aiplatform_dagster.mlops.embedder_release import promote_with_release, reconcile_champion
    from aiplatform_dagster.mlops.gate import GateDecision
    from aiplatform_dagster.mlops.registry import CHALLENGER, CHAMPION, ModelRegistry
    from aiplatform_dagster.mlops.serving import registered_embedder
    from aiplatform_dagster.models.identity import embedder_identity
    from aiplatform_dagster.rag.index.releases import CANDIDATE

    settings = platform.settings()
    target = mlflow.target()
    registry = ModelRegistry(target.client())
    repository = platform.repository()
    name = target.model_name(EMBEDDER)
    by = f"dagster run {context.run_id}"
    for move in reconcile_champion(repository, registry, name, by):
        context.log.warning(f"{move.model}@{move.alias} -> v{move.to_version}: {move.reason}")
    pairs_key = retrieval_training_pairs.key
    pairs_path = latest_metadata_value(context.instance, pairs_key, PAIRS_PATH)
    benchmark = latest_metadata_value(context.instance, pairs_key, BENCHMARK_PATH)
    split = latest_metadata_value(context.instance, pairs_key, SPLIT)
    challenger_version = registry.version(name, CHALLENGER)
    candidate_id = repository.pointer(CANDIDATE)
    if pairs_path is None or challenger_version is None or candidate_id is None:
        return dg.MaterializeResult(
            metadata={"decision": "not run: no challenger embedder and candidate release yet"}
        )
    cache = factory.model_cache(settings)
    challenger = registered_embedder(target, f"models:/{name}@{CHALLENGER}", cache)
    candidate = repository.open(candidate_id)
    if embedder_identity(challenger) != candidate.embedder_identity:
        return dg.MaterializeResult(
            metadata={
                "decision": f"not run: candidate {candidate_id} was not built by challenger "
                f"v{challenger_version.version}; materialise candidate_release first"
            }
        )
    serving = platform.embedder()
    champion = registry.version(name, CHAMPION)
    baseline_name = f"champion v{champion.version}" if champion else serving.model_id
    dev = pd.read_parquet(pairs_path).query("split == 'dev'")
    scores = score_embedders(
        settings,
        Path(benchmark),
        split,
        set(dev["query_id"]),
        {"challenger": challenger, "baseline": serving},
        log=context.log.info,
    )
    decision = GateDecision(
        "hybrid nDCG@10",
        scores.ndcg["challenger"],
        scores.ndcg["baseline"],
        baseline_name,
        config.margin,
    )
    follows_registry = settings.embedding.model == f"models:/{name}@{CHAMPION}"
    outcome = decision.reason
    if decision.promoted and follows_registry:
        moved = promote_with_release(
            repository,
            platform.vector_backend(),
            registry,
            name,
            challenger_version.version,
            candidate_id,
            decision.reason,
            by,
        )
        outcome = f"{decision.reason}; current {moved.replaced_release} -> {moved.release_id}"
    elif decision.promoted:
        outcome = (
            f"won but not promoted: {decision.reason}. The query path reads the embedder "
            f"configured in AIPLATFORM_EMBEDDING_MODEL; set it to models:/{name}@{CHAMPION} "
            "so promotions reach it"
        )
    context.log.info(f"challenger v{challenger_version.version}: {outcome}")
    registry.client.set_model_version_tag(name, challenger_version.version, GATE_TAG, outcome)
    return dg.MaterializeResult(
        metadata={
            "challenger_version": challenger_version.version,
            "baseline": baseline_name,
            "challenger_dev_ndcg@10": round(decision.candidate, 4),
            "baseline_dev_ndcg@10": round(decision.baseline, 4),
            "margin": decision.margin,
            "promoted": decision.promoted and follows_registry,
            "decision": outcome,
            "dev_queries": scores.queries,
            "candidate_release": candidate_id,
            "current_release": repository.pointer() or "none",
        }
    )
