"""Embedder versions in the registry, each tagged with the identity its vectors carry, so a
release (which records that identity) names the exact version that can read it."""

from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

from aiplatform_dagster.mlops.registry import (
    CHALLENGER,
    CHAMPION,
    IDENTITY_TAG,
    MODEL_ID_TAG,
    Change,
    ModelRegistry,
)
from aiplatform_dagster.mlops.tracking import TrackedRun
from aiplatform_dagster.models.embedders import Embedder, SentenceTransformerEmbedder
from aiplatform_dagster.models.identity import embedder_identity


def ensure_serving_version(
    run: TrackedRun, name: str, serving: Embedder, by: str
) -> ModelVersion | None:
    """Register the embedder that built the current release, once, and make it champion when
    there is none: the baseline a challenger must beat and a rollback returns to. Returns the new
    version, or None when it was registered already or has no local weights (an API model)."""
    registry = ModelRegistry(run.client)
    identity = embedder_identity(serving)
    if not isinstance(serving, SentenceTransformerEmbedder):
        return None
    if registry.tagged(name, IDENTITY_TAG, identity) is not None:
        return None
    source = run.log_folder(Path(serving.model_path), "serving_embedder")
    version = registry.register(
        name,
        source,
        run.run_id,
        Change.BASE_MODEL,
        base_model=serving.model_id,
        description="The embedder that built the current index release, registered as the "
        "baseline of the first fine-tuned one",
        challenger=False,
        tags={IDENTITY_TAG: identity, MODEL_ID_TAG: serving.name},
    )
    if registry.version(name, CHAMPION) is None:
        registry.promote(name, version.version, "baseline: it built the current release", by)
    return version


def register_embedder(
    run: TrackedRun, name: str, folder: Path, base_model: str, dagster_run_id: str
) -> ModelVersion:
    """Log a fine-tuned embedder's folder and register it as the ``challenger`` version."""
    registry = ModelRegistry(run.client)
    model_id = f"{name}@{run.run_id[:12]}"
    identity = embedder_identity(SentenceTransformerEmbedder(str(folder), name=model_id))
    source = run.log_folder(folder, "embedder")
    first = registry.version(name, CHALLENGER) is None and registry.version(name, CHAMPION) is None
    return registry.register(
        name,
        source,
        run.run_id,
        Change.BASE_MODEL if first else Change.RETRAINED,
        base_model=base_model,
        description=f"Fine-tuned by Dagster run {dagster_run_id}",
        tags={IDENTITY_TAG: identity, MODEL_ID_TAG: model_id},
    )
