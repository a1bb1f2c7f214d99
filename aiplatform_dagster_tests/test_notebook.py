"""The reranker notebook runs top to bottom in the project's own kernel (nbclient) on a tiny
budget and a tiny BEIR folder, and its run lands in a real MLflow server with its metrics and
a model folder the query path can load."""

import re
import uuid
from pathlib import Path

import pytest

from aiplatform_dagster_tests.mlops.test_reranker_training import write_synthetic_beir

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_reranker.ipynb"

pytestmark = pytest.mark.slow


def test_the_reranker_notebook_trains_evaluates_and_logs_to_mlflow(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from mlflow import MlflowClient
    from nbclient import NotebookClient

    experiment = f"test-{uuid.uuid4().hex[:8]}"
    settings = {
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        "AIPLATFORM_MLFLOW_TRACKING_URI": mlflow_server,
        "AIPLATFORM_MLFLOW_EXPERIMENT": experiment,
        "RERANKER_DATASET": str(write_synthetic_beir(tmp_path / "triples")),
        "RERANKER_DEV_FRACTION": "0.3",
        "RERANKER_MAX_STEPS": "2",
        "RERANKER_GROUP_SIZE": "4",
        "RERANKER_CANDIDATES": "8",
        "RERANKER_MAX_LENGTH": "64",
        "RERANKER_HOLDOUT_FRACTION": "0.3",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["source"] == "notebook"
    assert run.data.params["max_steps"] == "2"
    metrics = run.data.metrics
    assert metrics["pairs_per_second"] > 0
    assert metrics["dev_ndcg10_gain"] == pytest.approx(
        metrics["dev_ndcg10_reranked"] - metrics["dev_ndcg10_hybrid"]
    )
    files = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "reranker")}
    assert {"config.json", "interpolation.json"} <= files
    printed = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    shown = re.search(r"dev nDCG@10 over \d+ queries: hybrid ([\d.]+), reranked ([\d.]+)", printed)
    assert shown, printed  # the run records the scores the notebook showed its reader
    assert f"{metrics['dev_ndcg10_hybrid']:.3f}" == shown[1]
    assert f"{metrics['dev_ndcg10_reranked']:.3f}" == shown[2]
    assert f"runs:/{run.info.run_id}/reranker" in printed
