"""A running query engine follows the reranker's champion alias: the version the alias names is
downloaded once and swapped in on refresh; one that cannot load leaves the last good one."""

from pathlib import Path

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.mlops.registry import Change, ModelRegistry
from aiplatform_dagster.mlops.tracking import mlflow_target, tracked_run
from aiplatform_dagster.rag import factory
from aiplatform_dagster_tests.conftest import SMALL_CORPUS
from aiplatform_dagster_tests.rag.test_factory import publish

NAME = "reranker"


def test_refresh_swaps_in_the_reranker_version_the_champion_alias_names(
    tmp_path: Path, embedder, cross_encoder_dir: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    release = publish(storage, SMALL_CORPUS, embedder)
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_RERANKER_MODEL": f"models:/{NAME}@champion",
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        }
    )
    target = mlflow_target(settings)
    registry = ModelRegistry(target.client())

    def register(folder: Path) -> str:
        with tracked_run(target, "reranker_model", {}) as run:
            source = run.log_folder(folder, "reranker")
        return str(registry.register(NAME, source, run.run_id, Change.RETRAINED, "tiny").version)

    first = register(cross_encoder_dir)
    registry.promote(NAME, first, "first", "test")
    live = factory.LiveQueryEngine(settings)
    assert live.versions.reranker == first
    reranked = live.engine.ask("When does a page escalate?")
    assert reranked.sources and live.engine.reranker is not None
    assert live.refresh().moved is False

    second = register(cross_encoder_dir)
    registry.promote(NAME, second, "retrained", "test")
    reload = live.refresh()
    assert (reload.moved, reload.release_id, reload.versions.reranker) == (True, release, second)
    assert (storage / "models" / NAME / str(second) / "config.json").is_file()  # downloaded once

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "README.md").write_text("no weights here")
    broken = register(empty)
    registry.promote(NAME, broken, "a bad upload", "test")
    failed = live.refresh()
    assert failed.moved is False and "config.json" in failed.error
    assert live.versions.reranker == second and live.engine.ask("Who is paged first?").sources
