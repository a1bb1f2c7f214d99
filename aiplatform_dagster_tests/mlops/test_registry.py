"""Tracking and the registry against a real MLflow server (PostgreSQL backend store)."""

import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.mlops.registry import (
    CHALLENGER,
    CHAMPION,
    PRODUCTION,
    SEMVER_TAG,
    STAGING,
    Change,
    ModelRegistry,
    RegistryError,
    next_semver,
)
from aiplatform_dagster.mlops.tracking import MlflowTarget, mlflow_target, tracked_run


@pytest.fixture
def target(mlflow_server: str, tmp_path: Path) -> MlflowTarget:
    """The test server, in an experiment of this test's own."""
    settings = load_settings(
        {
            "AIPLATFORM_STORAGE_DIR": str(tmp_path),
            "AIPLATFORM_MLFLOW_TRACKING_URI": mlflow_server,
            "AIPLATFORM_MLFLOW_EXPERIMENT": f"test-{uuid.uuid4().hex[:8]}",
        }
    )
    return mlflow_target(settings)


def train(target: MlflowTarget, tmp_path: Path, registry: ModelRegistry, name: str, change: Change):
    """A tracked run that logs a one-file model folder and registers it."""
    model = tmp_path / uuid.uuid4().hex
    model.mkdir()
    (model / "weights.txt").write_text("0.1 0.2")
    with tracked_run(target, "train", {"aiplatform.asset": name}) as run:
        run.log_metrics({"dev_ndcg": 0.5})
        source = run.log_folder(model, "model")
    return registry.register(name, source, run.run_id, change, base_model="tiny")


def test_a_run_ends_finished_with_its_tags_or_failed_with_the_error(target: MlflowTarget) -> None:
    client = target.client()
    with tracked_run(target, "ok", {"dagster/run_id": "abc"}) as run:
        run.log_params({"lr": 2e-5})
        run.log_metrics({"loss": 0.25})
        run.log_dict({"w": 0.8}, "interpolation.json")  # at the root: no folder
        run.log_dict({"hybrid": 0.7}, "evaluation/holdout.json")
    assert {a.path for a in client.list_artifacts(run.run_id)} == {
        "interpolation.json",
        "evaluation",
    }
    assert [a.path for a in client.list_artifacts(run.run_id, "evaluation")] == [
        "evaluation/holdout.json"
    ]
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["dagster/run_id"] == "abc"
    assert stored.data.params == {"lr": "2e-05"} and stored.data.metrics == {"loss": 0.25}
    assert run.url == f"{target.ui_url}/#/experiments/{run.experiment_id}/runs/{run.run_id}"

    with pytest.raises(RuntimeError, match="diverged"), tracked_run(target, "bad", {}) as failed:
        raise RuntimeError("loss diverged")
    assert client.get_run(failed.run_id).info.status == "FAILED"


def test_versions_get_semantic_versions_and_the_challenger_alias(
    target: MlflowTarget, tmp_path: Path
) -> None:
    registry = ModelRegistry(target.client())
    name = f"router-{uuid.uuid4().hex[:6]}"
    first = train(target, tmp_path, registry, name, Change.RETRAINED)
    second = train(target, tmp_path, registry, name, Change.RETRAINED)
    third = train(target, tmp_path, registry, name, Change.BASE_MODEL)
    fourth = train(target, tmp_path, registry, name, Change.CONFIGURATION)
    semvers = [target.client().get_model_version(name, v.version).tags[SEMVER_TAG]
               for v in (first, second, third, fourth)]  # fmt: skip
    assert semvers == ["1.0.0", "1.1.0", "2.0.0", "2.0.1"]
    assert registry.version(name, CHALLENGER).version == fourth.version
    assert registry.version(name, CHAMPION) is None
    assert registry.version("no-such-model", CHAMPION) is None


def test_promote_and_rollback_move_aliases_and_keep_their_history(
    target: MlflowTarget, tmp_path: Path
) -> None:
    registry = ModelRegistry(target.client())
    name = f"router-{uuid.uuid4().hex[:6]}"
    first = train(target, tmp_path, registry, name, Change.RETRAINED)
    registry.promote(name, first.version, "gate: 0.71 > 0.70", "test")
    second = train(target, tmp_path, registry, name, Change.RETRAINED)
    registry.promote(name, second.version, "gate: 0.74 > 0.71", "test")
    for alias in (STAGING, CHAMPION, PRODUCTION):
        assert registry.version(name, alias).version == second.version

    registry.rollback(name, "bad answers in production", "on-call")
    assert registry.version(name, CHAMPION).version == first.version
    assert registry.version(name, PRODUCTION).version == first.version
    assert registry.models()[name][CHAMPION] == first.version
    champion_moves = [(m.from_version, m.to_version, m.reason)
                      for m in registry.moves(name) if m.alias == CHAMPION]  # fmt: skip
    assert champion_moves == [
        (None, first.version, "gate: 0.71 > 0.70"),
        (first.version, second.version, "gate: 0.74 > 0.71"),
        (second.version, first.version, "bad answers in production"),
    ]
    with pytest.raises(RegistryError, match="first champion"):
        registry.rollback(name, "again", "on-call")


def test_the_default_target_is_sqlite_and_a_folder_in_the_storage_folder(tmp_path: Path) -> None:
    target = mlflow_target(load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)}))
    assert target.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert target.artifact_root == (tmp_path / "mlflow" / "artifacts").as_uri()
    assert target.ui_url == "http://127.0.0.1:5000"
    with tracked_run(target, "local", {}) as run:
        run.log_metrics({"x": 1.0})
    assert MlflowClient(target.tracking_uri).get_run(run.run_id).data.metrics == {"x": 1.0}


@pytest.mark.parametrize(
    ("latest", "change", "expected"),
    [(None, Change.CONFIGURATION, "1.0.0"), ("1.4.2", Change.RETRAINED, "1.5.0"),
     ("1.4.2", Change.BASE_MODEL, "2.0.0"), ("1.9.9", Change.CONFIGURATION, "1.9.10")],
)  # fmt: skip
def test_next_semver(latest: str | None, change: Change, expected: str) -> None:
    assert next_semver(latest, change) == expected
