"""The code location as Dagster tooling and the web UI see it."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.compute import POOL_TAG
from aiplatform_dagster_tests.dagster_dev import BIN, PROJECT_ROOT, dagster_dev, instance_home

INGESTION_ASSETS = {
    "source_documents",
    "document_chunks",
    "chunk_embeddings",
    "bm25_index",
    "index_release",
    "current_release",
}
EVALUATION_ASSETS = {"retrieval_eval", "answer_eval", "labelling_queue"}
TRAINING_ASSETS = {
    "router_training_data",
    "query_router_model",
    "query_router_validation",
    "retrieval_training_pairs",
    "embedder_model",
    "candidate_release",
    "embedder_validation",
    "reranker_model",
    "reranker_validation",
    "model_registry",
}
HEAVY_MODULES = (
    "torch", "sentence_transformers", "transformers", "great_expectations", "faiss",
    "mlflow", "openai", "redis", "weaviate",
)  # fmt: skip


def test_definitions_hold_the_groups_checks_and_automation() -> None:
    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {k for k, g in groups.items() if g == "ingestion"} == INGESTION_ASSETS
    assert {k for k, g in groups.items() if g == "evaluation"} == EVALUATION_ASSETS
    assert {k for k, g in groups.items() if g == "training"} == TRAINING_ASSETS
    assert {k for k, g in groups.items() if g == "monitoring"} == {"query_drift_report"}
    assert {k for k, g in groups.items() if g == "serving"} == {"serving_release"}
    assert {k for k, g in groups.items() if g == "agents"} == {
        "agent_registry", "agent_eval", "agent_escalations", "checkpoint_retention"
    }  # fmt: skip
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:ml-platform"], key
        assert node.description, key
        assert node.kinds, f"{key} has no kind tags"
        if not node.is_executable:  # model_registry: materialised by the sensor that sees moves
            continue
        assert node.code_version, f"{key} has no code version: the UI cannot say it changed"
        assert node.pools <= {"cpu", "gpu"} and node.pools, f"{key} runs on no compute pool"
    assert {c.name for c in graph.asset_check_keys} == {
        "chunks_are_valid",
        "embeddings_are_valid",
        "release_is_consistent",
        "router_training_data_is_valid",
        "retrieval_training_pairs_are_valid",
        "agent_registry_is_consistent",
    }
    assert graph.get(dg.AssetKey("retrieval_eval")).parent_keys == {dg.AssetKey("current_release")}
    assert defs.resolve_sensor_def("new_documents_sensor").job_name == "ingestion_job"
    automation = defs.resolve_sensor_def("evaluation_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("nightly_full_refresh").job_name == "ingestion_job"
    assert defs.resolve_job_def("ingestion_job")
    assert defs.resolve_sensor_def("drift_retrain_sensor").job_name == "training_job"
    assert defs.resolve_schedule_def("weekly_retrain").job_name == "training_job"
    assert defs.resolve_sensor_def("model_registry_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
    escalations = defs.resolve_sensor_def("agent_escalations_sensor")
    assert escalations.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("daily_checkpoint_retention").job_name == (
        "checkpoint_retention_job"
    )
    assert defs.resolve_job_def("migrate_agent_store") and defs.resolve_job_def(
        "resume_agent_thread"
    )
    assert graph.get(dg.AssetKey("serving_release")).parent_keys == {
        dg.AssetKey("current_release"), dg.AssetKey("model_registry")
    }  # fmt: skip
    assert graph.get(dg.AssetKey("serving_release")).automation_condition is not None
    assert defs.resolve_job_def("rollback_serving_release")
    labelling = defs.resolve_sensor_def("labelling_queue_sensor")
    assert labelling.default_status == dg.DefaultSensorStatus.RUNNING
    serving = defs.resolve_sensor_def("serving_automation")
    assert serving.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("serving_flips_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )


def test_kind_tags_name_the_technology_each_asset_uses() -> None:
    graph = load_definitions().resolve_asset_graph()
    kinds = {key.to_user_string(): graph.get(key).kinds for key in graph.get_all_asset_keys()}
    assert "pytorch" in kinds["chunk_embeddings"]
    assert "parquet" in kinds["document_chunks"]
    assert "openai" in kinds["answer_eval"]


def test_embedding_and_training_run_on_the_gpu_pool_everything_else_on_cpu() -> None:
    job = load_definitions().resolve_implicit_global_asset_job_def()
    pools = {node.name: node.definition.tags[POOL_TAG] for node in job.graph.node_dict.values()}
    on_gpu = {name for name, pool in pools.items() if pool == "gpu"}
    assert on_gpu == {
        "chunk_embeddings", "embedding_shards", "embedder_model", "candidate_release",
        "reranker_model",
    }  # fmt: skip
    assert {pools[name] for name in pools.keys() - on_gpu} == {"cpu"}
    tag = job.graph.node_named("chunk_embeddings").definition.tags["dagster-k8s/config"]
    gpu_config = json.loads(tag) if isinstance(tag, str) else tag
    limits = gpu_config["container_config"]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_loading_the_code_location_imports_no_heavy_library() -> None:
    """Dagster loads the location in every process; model libraries must load lazily."""
    script = (
        "import sys, json\n"
        "from aiplatform_dagster.definitions import load_definitions\n"
        "load_definitions().resolve_asset_graph()\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True,
        cwd=PROJECT_ROOT,
    ).stdout  # fmt: skip
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_dagster_definitions_validate_passes(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [BIN / "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


ASSETS_QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    location { name }
    assetNodes { assetKey { path } groupName }
    sensors { name sensorState { status } }
    schedules { name }
} } } }
"""


@pytest.mark.slow
def test_dagster_dev_serves_the_asset_graph_sensor_and_schedule(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(instance_home(tmp_path / "home")),
        "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
    }
    with dagster_dev(["-w", "workspace.yaml"], env) as port:
        repository = _wait_for_repository(port, deadline=time.monotonic() + 180)
    assert repository["location"]["name"] == "aiplatform_dagster"
    assets = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in repository["assetNodes"]}
    assert {k for k, group in assets.items() if group == "ingestion"} == INGESTION_ASSETS
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors["new_documents_sensor"] == "RUNNING"
    assert sensors["evaluation_automation"] == "RUNNING"
    assert "nightly_full_refresh" in {s["name"] for s in repository["schedules"]}


def _wait_for_repository(port: int, deadline: float) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": ASSETS_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                nodes = json.load(response)["data"]["repositoriesOrError"]["nodes"]
                if nodes:
                    return nodes[0]
        except (OSError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("dagster dev did not serve the code location within 180 s")
        time.sleep(2)
