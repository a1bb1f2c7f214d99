"""Embedder and index release move together, against a real MLflow server: promotion, a process
killed between the pointer move and the alias move, the repair, rollback, and a stale candidate.

The embedders here are the packaged MiniLM registered under other model ids: same weights,
different identities, which is all that pointer and alias consistency depends on (training is
covered in defs/test_embedder_training.py).
"""

import multiprocessing
import os
import uuid
from pathlib import Path

import pytest

from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster.mlops.embedder_registry import ensure_serving_version, register_embedder
from aiplatform_dagster.mlops.embedder_release import (
    promote_with_release,
    reconcile_champion,
    rollback_with_release,
)
from aiplatform_dagster.mlops.registry import (
    CHALLENGER,
    CHAMPION,
    PRODUCTION,
    Change,
    ModelRegistry,
    MoveKind,
    RegistryError,
)
from aiplatform_dagster.mlops.serving import registered_embedder
from aiplatform_dagster.mlops.tracking import mlflow_target, tracked_run
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder, packaged_minilm_path
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.build import reembed_release
from aiplatform_dagster.rag.index.releases import CANDIDATE, CURRENT, ROLLBACK, ReleaseError
from aiplatform_dagster.rag.index.vector_backends import EmbeddedBackend
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.retriever import SearchMode
from aiplatform_dagster_tests.conftest import SMALL_CORPUS, write_corpus


@pytest.fixture
def settings(mlflow_server: str, tmp_path: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    return load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
            "AIPLATFORM_MLFLOW_TRACKING_URI": mlflow_server,
            "AIPLATFORM_MLFLOW_EXPERIMENT": f"test-{uuid.uuid4().hex[:8]}",
            "AIPLATFORM_MLFLOW_MODEL_PREFIX": prefix,
            "AIPLATFORM_EMBEDDING_MODEL": f"models:/{prefix}embedder@champion",
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        }
    )


def name_of(settings: Settings) -> str:
    return mlflow_target(settings).model_name("embedder")


def live_release(settings: Settings, tmp_path: Path, embedder: SentenceTransformerEmbedder) -> str:
    documents, _ = load_documents(write_corpus(tmp_path / "docs", SMALL_CORPUS))
    return ingest(factory.open_repository(settings), documents, embedder).release.release_id


def register_versions(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    """The serving MiniLM as champion v1, and 'a fine-tuned one' (same weights) as challenger v2."""
    target = mlflow_target(settings)
    with tracked_run(target, "embedder_model", {}) as run:
        ensure_serving_version(run, name_of(settings), embedder, "test")
        register_embedder(run, name_of(settings), Path(packaged_minilm_path()), "minilm", "run-1")


def build_candidate(settings: Settings) -> str:
    repository = factory.open_repository(settings)
    challenger = registered_embedder(
        mlflow_target(settings),
        f"models:/{name_of(settings)}@{CHALLENGER}",
        settings.paths.storage_dir / "models",
    )
    release, _ = reembed_release(
        repository, repository.open_pointer(), challenger, embedder_identity(challenger)
    )
    repository.move_pointer(release.release_id, repository.pointer(CANDIDATE), name=CANDIDATE)
    return release.release_id


def served_identity(settings: Settings) -> str:
    """The identity of the embedder the query path builds over ``current``; building the
    engine fails if it does not match the release's vectors."""
    engine = factory.build_query_engine(settings)
    assert engine.retriever.search("When does a page escalate?", SearchMode.HYBRID, 1)
    return engine.retriever.embedder_identity


def champion(settings: Settings, registry: ModelRegistry, alias: str = CHAMPION) -> str:
    return registry.version(name_of(settings), alias).version


def _promote_and_die(settings: Settings, candidate_id: str) -> None:
    """Promote in a process that is killed right after the pointer moved."""

    def killed(*_args: object, **_kwargs: object) -> None:
        os._exit(9)

    registry = ModelRegistry(mlflow_target(settings).client())
    registry.promote = killed  # type: ignore[method-assign]
    promote_with_release(
        factory.open_repository(settings),
        EmbeddedBackend(),
        registry,
        name_of(settings),
        "2",
        candidate_id,
        "gate won",
        "test",
    )


def test_a_kill_between_pointer_and_alias_serves_consistently_and_the_gate_repairs_it(
    settings: Settings, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    original = live_release(settings, tmp_path, embedder)
    register_versions(settings, embedder)
    registry = ModelRegistry(mlflow_target(settings).client())
    assert champion(settings, registry) == "1"
    assert served_identity(settings) == embedder_identity(embedder)
    candidate_id = build_candidate(settings)
    candidate = factory.open_repository(settings).open(candidate_id)

    child = multiprocessing.get_context("fork").Process(
        target=_promote_and_die, args=(settings, candidate_id)
    )
    child.start()
    child.join(120)
    assert child.exitcode == 9

    repository = factory.open_repository(settings)
    assert repository.pointer(CURRENT) == candidate_id
    assert repository.pointer(ROLLBACK) == original
    assert champion(settings, registry) == "1"  # the alias move never happened
    assert served_identity(settings) == candidate.embedder_identity  # yet queries are consistent

    repaired = reconcile_champion(repository, registry, name_of(settings), "gate")
    assert [(m.alias, m.to_version, m.kind) for m in repaired] == [
        (CHAMPION, "2", MoveKind.REPAIR),
        (PRODUCTION, "2", MoveKind.REPAIR),
    ]
    assert reconcile_champion(repository, registry, name_of(settings), "gate") == []

    moved = rollback_with_release(
        repository, EmbeddedBackend(), registry, name_of(settings), "worse answers", "test"
    )
    assert (moved.release_id, moved.replaced_release) == (original, candidate_id)
    assert repository.pointer(CURRENT) == original and repository.pointer(ROLLBACK) is None
    assert champion(settings, registry) == "1" and champion(settings, registry, PRODUCTION) == "1"
    assert served_identity(settings) == embedder_identity(embedder)
    with pytest.raises(RegistryError, match="no release to roll"):
        rollback_with_release(repository, EmbeddedBackend(), registry, name_of(settings), "", "")


def test_promotion_moves_both_and_a_stale_candidate_is_refused(
    settings: Settings, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    original = live_release(settings, tmp_path, embedder)
    register_versions(settings, embedder)
    registry = ModelRegistry(mlflow_target(settings).client())
    repository = factory.open_repository(settings)
    stale = build_candidate(settings)
    documents, _ = load_documents(write_corpus(tmp_path / "more", {"new.md": "# New\n\nNews."}))
    newer = ingest(repository, documents, embedder).release.release_id

    with pytest.raises(ReleaseError, match=f"built from {original}, but current is now {newer}"):
        promote_with_release(
            repository, EmbeddedBackend(), registry, name_of(settings), "2", stale, "won", "t"
        )
    assert repository.pointer(CURRENT) == newer and champion(settings, registry) == "1"

    fresh = build_candidate(settings)
    moved = promote_with_release(
        repository, EmbeddedBackend(), registry, name_of(settings), "2", fresh, "won", "t"
    )
    assert (moved.release_id, moved.replaced_release) == (fresh, newer)
    assert repository.pointer(CURRENT) == fresh and champion(settings, registry) == "2"
    assert served_identity(settings) == repository.open(fresh).embedder_identity


def test_before_any_training_the_registry_embedder_is_the_base_then_an_alias_is_required(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> None:
    assert embedder_identity(factory.build_embedder(settings)) == embedder_identity(embedder)
    target = mlflow_target(settings)
    with tracked_run(target, "embedder_model", {}) as run:
        source = run.log_folder(Path(packaged_minilm_path()), "embedder")
        ModelRegistry(run.client).register(
            name_of(settings), source, run.run_id, Change.BASE_MODEL, "minilm", challenger=False
        )
    with pytest.raises(RegistryError, match=r"has the alias 'champion'.*materialise embedder_val"):
        factory.build_embedder(settings)
