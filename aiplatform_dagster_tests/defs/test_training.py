"""The training group against a real MLflow server: train, track, register, gate, promote,
refuse a worse challenger, report every alias move, load the champion into the query path, roll
back from the command line."""

import uuid
from pathlib import Path

import dagster as dg

from aiplatform_dagster import cli
from aiplatform_dagster.config import load_settings
from aiplatform_dagster.defs.training.assets import (
    FRAME_PATH,
    GATE_TAG,
    query_router_model,
    query_router_validation,
    router_training_data,
)
from aiplatform_dagster.defs.training.checks import router_training_data_is_valid
from aiplatform_dagster.defs.training.registry import model_registry_sensor
from aiplatform_dagster.evaluation.beir import BeirDoc, write_beir
from aiplatform_dagster.mlops.registry import CHALLENGER, CHAMPION, ModelRegistry
from aiplatform_dagster.mlops.router import training_frame
from aiplatform_dagster.rag import factory
from aiplatform_dagster_tests.defs.results import values
from aiplatform_dagster_tests.mlops.test_router import synthetic_labels


def labelled(instance: dg.DagsterInstance, folder: Path, swap: bool = False) -> str:
    """Record a router_training_data materialisation of synthetic labels (or swapped ones,
    which teach a router the opposite of what the scores say)."""
    queries, scores = synthetic_labels()
    frame = training_frame(queries, scores, dev_fraction=0.25)
    if swap:
        frame["label"] = frame["label"].map({"bm25": "hybrid", "hybrid": "bm25", "dense": "dense"})
    path = folder / f"{uuid.uuid4().hex}.parquet"
    frame.to_parquet(path, index=False)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            router_training_data.key, metadata={FRAME_PATH: dg.MetadataValue.path(str(path))}
        )
    )
    return path.stem


def train_and_gate(instance: dg.DagsterInstance, resources: dict) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [query_router_model, query_router_validation], instance=instance, resources=resources
    )
    assert result.success
    return result


def test_train_gate_promote_refuse_report_and_roll_back(
    instance: dg.DagsterInstance, resources: dict, env: dict, tmp_path: Path
) -> None:
    target = resources["mlflow"].target()
    name = target.model_name("query_router")
    registry = ModelRegistry(target.client())

    dataset_version = labelled(instance, tmp_path)
    first = train_and_gate(instance, resources)
    model = values(first, query_router_model)
    assert (model["model_version"], model["semver"]) == ("1", "1.0.0")
    run = target.client().get_run(model["mlflow_run"].rsplit("/", 1)[-1])
    assert run.data.tags["dagster/asset_key"] == "query_router_model"
    assert run.data.tags["dagster/run_id"] == first.run_id
    assert run.data.tags["aiplatform/dataset_version"] == dataset_version
    assert int(run.data.params["train_queries"]) + int(run.data.params["dev_queries"]) == 120
    artifacts = target.client().list_artifacts(run.info.run_id, "model")
    assert "model/MLmodel" in {artifact.path for artifact in artifacts}
    gate = values(first, query_router_validation)
    assert gate["baseline"] == "the rule router" and gate["promoted"] is True
    assert gate["challenger_dev_ndcg@10"] > gate["baseline_dev_ndcg@10"]
    assert registry.version(name, CHAMPION).version == "1"

    labelled(instance, tmp_path, swap=True)
    second = train_and_gate(instance, resources)
    refused = values(second, query_router_validation)
    assert refused["promoted"] is False and refused["baseline"] == "champion v1"
    assert refused["challenger_dev_ndcg@10"] < refused["baseline_dev_ndcg@10"]
    assert registry.version(name, CHALLENGER).version == "2"
    assert registry.version(name, CHAMPION).version == "1"
    assert target.client().get_model_version(name, "2").tags[GATE_TAG].startswith("refused")

    sensor_resources = {"mlflow": resources["mlflow"]}
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
        reported = model_registry_sensor(context)
    moves = [(e.metadata["alias"].value, e.metadata["to_version"].value)
             for e in reported.asset_events]  # fmt: skip
    assert moves == [("challenger", "1"), ("staging", "1"), ("champion", "1"),
                     ("production", "1"), ("challenger", "2")]  # fmt: skip
    champion_move = reported.asset_events[2]
    assert champion_move.metadata["reason"].value.startswith("promoted: dev nDCG@10")
    with dg.build_sensor_context(
        instance=instance, cursor=reported.cursor, resources=sensor_resources
    ) as context:
        assert isinstance(model_registry_sensor(context), dg.SkipReason)

    settings = load_settings().replace(query={"router_model": f"models:/{name}@champion"})
    assert "v1 (@champion)" in factory.build_router(settings).name

    assert cli.main(["model", "rollback", name, "--reason", "test"]) == 2  # v1 was the first
    assert cli.main(["model", "promote", name, "2", "--reason", "try it in staging"]) == 0
    assert cli.main(["model", "rollback", name, "--reason", "worse answers"]) == 0
    assert registry.version(name, CHAMPION).version == "1"
    assert [m.kind.value for m in registry.moves(name) if m.alias == CHAMPION] == [
        "promote",
        "promote",
        "rollback",
    ]


def test_labelled_data_from_a_train_split_and_a_skip_without_one(
    instance: dg.DagsterInstance, resources: dict, tmp_path: Path
) -> None:
    """A tiny BEIR set with a train split is labelled by real retrieval and passes its check;
    the golden set, which has no train split, trains nothing (and says so)."""
    folder = tmp_path / "tiny"
    text = "Error AIP-{code} means disk {i} is full; rotate the logs of service {i} and restart."
    docs = [BeirDoc(f"d{i}", f"Runbook {i}", text.format(code=4000 + i, i=i)) for i in range(40)]
    queries = {
        f"q{i}": f"AIP-{4000 + i}" if i % 2 else f"which service fills disk {i} with logs"
        for i in range(40)
    }
    write_beir(folder, docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(40)}, split="train")
    config = {"benchmark_path": str(folder), "min_dev_queries": 3}
    result = dg.materialize(
        [router_training_data, router_training_data_is_valid],
        instance=instance,
        resources=resources,
        run_config={"ops": {"router_training_data": {"config": config}}},
    )
    assert result.success
    data = values(result, router_training_data)
    assert data["dagster/row_count"] == 40 and data["benchmark"] == "tiny"
    assert data["train_queries"] + data["dev_queries"] == 40
    [check] = result.get_asset_check_evaluations()
    assert check.passed, check.description

    skipped = dg.materialize([router_training_data], instance=instance, resources=resources)
    assert skipped.success
    assert skipped.asset_materializations_for_node("router_training_data") == []
