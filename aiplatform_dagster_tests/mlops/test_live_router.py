"""A running query engine follows the router's champion alias, as it follows ``current``."""

import tempfile
from pathlib import Path

import pandas as pd

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.mlops.registry import Change, ModelRegistry
from aiplatform_dagster.mlops.router import save_router, train_router, training_frame
from aiplatform_dagster.mlops.tracking import MlflowTarget, mlflow_target, tracked_run
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.query.preprocess import prepare_query
from aiplatform_dagster_tests.conftest import SMALL_CORPUS
from aiplatform_dagster_tests.mlops.test_router import LONG, synthetic_labels
from aiplatform_dagster_tests.rag.test_factory import publish

NAME = "query_router"


def register(target: MlflowTarget, frame: pd.DataFrame) -> str:
    with tracked_run(target, "train", {}) as run, tempfile.TemporaryDirectory() as scratch:
        source = run.log_folder(save_router(train_router(frame), Path(scratch) / "m"), "model")
    registry = ModelRegistry(target.client())
    return registry.register(NAME, source, run.run_id, Change.RETRAINED, "tiny").version


def test_refresh_moves_to_the_version_the_champion_alias_names(tmp_path: Path, embedder) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    release = publish(storage, SMALL_CORPUS, embedder)
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_QUERY_ROUTER_MODEL": f"models:/{NAME}@champion",
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
        }
    )
    target = mlflow_target(settings)
    registry = ModelRegistry(target.client())
    queries, scores = synthetic_labels()
    frame = training_frame(queries, scores, dev_fraction=0.25)
    good = register(target, frame)
    registry.promote(NAME, good, "first", "test")
    live = factory.LiveQueryEngine(settings)
    assert live.versions.router == good
    assert live.refresh().moved is False

    swapped = frame.assign(label=frame["label"].map({"bm25": "hybrid", "hybrid": "bm25"}))
    worse = register(target, swapped)
    registry.promote(NAME, worse, "forced by hand", "test")
    in_flight = live.engine
    reload = live.refresh()
    assert (reload.moved, reload.release_id, reload.versions.router) == (True, release, worse)
    long_question = prepare_query(LONG.format("paging policy"))
    assert live.engine.route(long_question, live.engine.defaults).mode.value == "bm25"
    assert in_flight.route(long_question, in_flight.defaults).mode.value == "hybrid"

    registry.client.delete_registered_model_alias(NAME, "champion")
    broken = live.refresh()
    assert broken.moved is False and "no version" in broken.error
    assert live.versions.router == worse and live.engine.ask("When does a page escalate?").sources
