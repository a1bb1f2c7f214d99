"""MLflow tracking through an explicit client: one MLflow run per unit of work, never the global
"active run" that the fluent API keeps per process (two assets in one process would share it,
which is how dagster-mlflow's op-level resource loses runs: dagster-io/dagster#21872).
"""

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from aiplatform_dagster.config import Settings

DEFAULT_UI_URL = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class MlflowTarget:
    """Where runs and models go, and where a person reads them."""

    tracking_uri: str
    artifact_root: str
    experiment: str
    ui_url: str
    model_prefix: str = ""

    def model_name(self, name: str) -> str:
        """The registered name of the platform's model ``name`` in this environment."""
        return f"{self.model_prefix}{name}"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_url(self, name: str, version: str) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"


def mlflow_target(settings: Settings) -> MlflowTarget:
    """The configured MLflow, or SQLite and a folder under the storage folder by default."""
    configured = settings.mlflow
    home = settings.paths.storage_dir.resolve() / "mlflow"
    tracking_uri = configured.tracking_uri or f"sqlite:///{home / 'mlflow.db'}"
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    ui_url = configured.ui_url or (
        tracking_uri if urlparse(tracking_uri).scheme in {"http", "https"} else DEFAULT_UI_URL
    )
    return MlflowTarget(
        tracking_uri=tracking_uri,
        artifact_root=configured.artifact_root or (home / "artifacts").as_uri(),
        experiment=configured.experiment,
        ui_url=ui_url.rstrip("/"),
        model_prefix=configured.model_prefix,
    )


@dataclass
class TrackedRun:
    """An open MLflow run: what a training step logs into."""

    client: MlflowClient
    target: MlflowTarget
    experiment_id: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.target.run_url(self.experiment_id, self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            self.client.log_param(self.run_id, key, value)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step)
            self.metrics[key] = float(value)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_dict(self, data: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / Path(artifact_file).name
            path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
            folder = Path(artifact_file).parent
            where = None if folder == Path() else str(folder)  # MLflow refuses "." as a folder
            self.client.log_artifact(self.run_id, str(path), where)

    def log_folder(self, folder: Path, artifact_path: str) -> str:
        """Upload ``folder`` as ``artifact_path``; return its ``runs:/`` URI."""
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)
        return f"runs:/{self.run_id}/{artifact_path}"


@contextmanager
def tracked_run(target: MlflowTarget, name: str, tags: Mapping[str, Any]) -> Iterator[TrackedRun]:
    """Open one MLflow run in the platform's experiment; it ends FINISHED, or FAILED if the
    block raises (and the error propagates)."""
    client = target.client()
    experiment_id = ensure_experiment(client, target)
    run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    tracked = TrackedRun(client, target, experiment_id, run.info.run_id)
    try:
        yield tracked
    except BaseException:
        client.set_terminated(tracked.run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(tracked.run_id, RunStatus.to_string(RunStatus.FINISHED))


def ensure_experiment(client: MlflowClient, target: MlflowTarget) -> str:
    """The experiment's id, creating it with the configured artifact root the first time."""
    experiment = client.get_experiment_by_name(target.experiment)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(target.experiment, artifact_location=target.artifact_root)
