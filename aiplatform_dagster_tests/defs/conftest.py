"""Fixtures the Dagster tests share: their own storage, experiment and model names on the
session's MLflow server (set in the process environment too, for the command line), the two
resources, and an ephemeral Dagster instance. A test module's own fixture of the same name wins."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.defs.resources import MlflowResource, PlatformResource


@pytest.fixture
def env(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        "AIPLATFORM_MLFLOW_TRACKING_URI": mlflow_server,
        "AIPLATFORM_MLFLOW_EXPERIMENT": f"test-{uuid.uuid4().hex[:8]}",
        "AIPLATFORM_MLFLOW_MODEL_PREFIX": f"t{uuid.uuid4().hex[:8]}_",
        "AIPLATFORM_MONITORING_QUERY_LOG": "false",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture
def resources(env: dict[str, str]) -> dict[str, dg.ConfigurableResource]:
    platform = PlatformResource()
    return {"platform": platform, "mlflow": MlflowResource(platform=platform)}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance
