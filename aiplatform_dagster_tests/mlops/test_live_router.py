"""A running query engine follows the router's champion alias, as it follows ``current``."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster.mlops.registry import Change, ModelRegistry
from aiplatform_dagster.mlops.router import save_router, train_router, training_frame
from aiplatform_dagster.mlops.tracking import MlflowTarget, mlflow_target, tracked_run
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.preprocess import prepare_query
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster.serving.release import follow_live
from aiplatform_dagster_tests.conftest import SMALL_CORPUS
from aiplatform_dagster_tests.mlops.test_router import LONG, synthetic_labels
from aiplatform_dagster_tests.rag.test_factory import publish

NAME = "query_router"


def register(target: MlflowTarget, frame: pd.DataFrame) -> str:
    with tracked_run(target, "train", {}) as run, tempfile.TemporaryDirectory() as scratch:
        source = run.log_folder(save_router(train_router(frame), Path(scratch) / "m"), "model")
    registry = ModelRegistry(target.client())
    return str(registry.register(NAME, source, run.run_id, Change.RETRAINED, "tiny").version)


@dataclass
class Routers:
    """A release, a promoted router, and the frame to train another one from."""

    settings: Settings
    release: str
    registry: ModelRegistry
    target: MlflowTarget
    frame: pd.DataFrame
    good: str

    def promote_swapped(self) -> str:
        """Register and promote a router trained on swapped labels (it routes long questions to
        BM25, the good one to hybrid)."""
        labels = {"bm25": "hybrid", "hybrid": "bm25"}
        worse = register(self.target, self.frame.assign(label=self.frame["label"].map(labels)))
        self.registry.promote(NAME, worse, "forced by hand", "test")
        return worse


def routers(tmp_path: Path, embedder, environ: dict[str, str] | None = None) -> Routers:
    storage = tmp_path / "storage"
    storage.mkdir()
    release = publish(storage, SMALL_CORPUS, embedder)
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(storage),
            "AIPLATFORM_QUERY_ROUTER_MODEL": f"models:/{NAME}@champion",
            "AIPLATFORM_MONITORING_QUERY_LOG": "false",
            **(environ or {}),
        }
    )
    target = mlflow_target(settings)
    registry = ModelRegistry(target.client())
    queries, scores = synthetic_labels()
    frame = training_frame(queries, scores, dev_fraction=0.25)
    good = register(target, frame)
    registry.promote(NAME, good, "first", "test")
    return Routers(settings, release, registry, target, frame, good)


def routed(engine: QueryEngine) -> str:
    return engine.route(prepare_query(LONG.format("paging policy")), engine.defaults).mode.value


def test_refresh_moves_to_the_version_the_champion_alias_names(tmp_path: Path, embedder) -> None:
    setup = routers(tmp_path, embedder)
    settings, release, good = setup.settings, setup.release, setup.good
    live = factory.LiveQueryEngine(settings)
    assert live.versions.router == good
    assert live.refresh().moved is False

    worse = setup.promote_swapped()
    in_flight = live.engine
    reload = live.refresh()
    assert (reload.moved, reload.release_id, reload.versions.router) == (True, release, worse)
    assert routed(live.engine) == "bm25"
    assert routed(in_flight) == "hybrid"

    setup.registry.client.delete_registered_model_alias(NAME, "champion")
    broken = live.refresh()
    assert broken.moved is False and "no version" in broken.error
    assert live.versions.router == worse and live.engine.ask("When does a page escalate?").sources


def test_a_serving_release_keeps_the_router_version_it_pinned_until_the_next_release(
    tmp_path: Path, embedder
) -> None:
    """The champion alias moves; the live serving release does not, until one is published
    that pins the new version."""
    setup = routers(tmp_path, embedder, {"AIPLATFORM_SERVING_SMOKE_MAX_NDCG_DROP": "1"})
    first = publish_serving_release(setup.settings, "test").manifest
    assert first.router == f"models:/{NAME}/{setup.good}"
    assert first.query["router_model"] == first.router
    live = factory.LiveQueryEngine(setup.settings, follow_live(setup.settings))

    worse = setup.promote_swapped()
    assert live.refresh().moved is False
    assert live.versions.router == setup.good and routed(live.engine) == "hybrid"

    second = publish_serving_release(setup.settings, "test")
    assert second.flip is not None, second.decision
    assert second.manifest.router == f"models:/{NAME}/{worse}"
    reload = live.refresh()
    assert (reload.moved, reload.name, reload.versions.router) == (
        True,
        second.manifest.release_id,
        worse,
    )
    assert routed(live.engine) == "bm25"
