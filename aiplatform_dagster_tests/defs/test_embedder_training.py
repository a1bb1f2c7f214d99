"""The embedder loop as a data scientist runs it, against a real MLflow server: labelled pairs,
a fine-tuned embedder, a candidate release beside the live one, the gate promoting model and
release together, a deliberately worse challenger refused, and a rollback from the command line
that moves both back. The task (codenames, see mlops/codenames.py) is one the packaged MiniLM
cannot do and a few seconds of fine-tuning can."""

import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from aiplatform_dagster import cli
from aiplatform_dagster.config import load_settings
from aiplatform_dagster.defs.training.assets import GATE_TAG
from aiplatform_dagster.defs.training.checks import retrieval_training_pairs_are_valid
from aiplatform_dagster.defs.training.embedder import (
    PAIRS_PATH,
    candidate_release,
    embedder_model,
    embedder_validation,
    retrieval_training_pairs,
)
from aiplatform_dagster.mlops.registry import CHALLENGER, CHAMPION, ModelRegistry
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import CANDIDATE, CURRENT
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.retriever import SearchMode
from aiplatform_dagster_tests.defs.results import values
from aiplatform_dagster_tests.mlops.codenames import write_codename_benchmark, write_guides

pytestmark = pytest.mark.slow

TRAINING = {"epochs": 4, "batch_size": 12, "learning_rate": 1e-4}


@pytest.fixture
def guides(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The platform's documents: the codename guides; the embedder follows the registry."""
    folder = write_guides(tmp_path / "guides")
    monkeypatch.setenv("AIPLATFORM_DOCUMENTS_DIR", str(folder))
    prefix = env["AIPLATFORM_MLFLOW_MODEL_PREFIX"]
    monkeypatch.setenv("AIPLATFORM_EMBEDDING_MODEL", f"models:/{prefix}embedder@champion")
    return folder


def train_and_gate(instance: dg.DagsterInstance, resources: dict) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [embedder_model, candidate_release, embedder_validation],
        instance=instance,
        resources=resources,
        run_config={"ops": {"embedder_model": {"config": TRAINING}}},
    )
    assert result.success
    return result


def top_document(question: str) -> str:
    engine = factory.build_query_engine(load_settings())
    return engine.retriever.search(question, SearchMode.DENSE, 1)[0].chunk.doc_id


def test_fine_tune_gate_promote_refuse_and_roll_back_with_the_release(
    instance: dg.DagsterInstance,
    resources: dict,
    guides: Path,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    repository = factory.open_repository(settings)
    documents, _ = load_documents(guides)
    original = ingest(repository, documents, embedder).release.release_id
    target = resources["mlflow"].target()
    name = target.model_name("embedder")
    registry = ModelRegistry(target.client())
    benchmark = write_codename_benchmark(tmp_path / "codenames")
    monkeypatch.setenv("AIPLATFORM_TRAINING_BENCHMARK_PATH", str(benchmark))  # as sensors run it
    pairs_config = {"dev_fraction": 0.3, "min_dev_queries": 5}

    labelled = dg.materialize(
        [retrieval_training_pairs, retrieval_training_pairs_are_valid],
        instance=instance,
        resources=resources,
        run_config={"ops": {"retrieval_training_pairs": {"config": pairs_config}}},
    )
    assert labelled.success
    pairs = pd.read_parquet(values(labelled, retrieval_training_pairs)[PAIRS_PATH])
    dev = pairs[pairs["split"] == "dev"]
    assert len(pairs) == 60 and 5 <= len(dev) < 30
    assert set(dev["query_id"]).isdisjoint(pairs.loc[pairs["split"] == "train", "query_id"])
    question = dev.iloc[0]
    assert top_document(question["query"]) != f"{question['doc_id']}.md"  # MiniLM cannot

    first = train_and_gate(instance, resources)
    model = values(first, embedder_model)
    assert (model["model_version"], model["semver"]) == ("2", "1.1.0")  # v1: the serving MiniLM
    assert model["last_loss"] < model["first_loss"] and model["device"] == "cpu"
    run = target.client().get_run(model["mlflow_run"].rsplit("/", 1)[-1])
    assert run.data.tags["dagster/asset_key"] == "embedder_model"
    assert run.data.tags["dagster/run_id"] == first.run_id
    assert run.data.tags["aiplatform/dataset_version"] == Path(pairs_path(labelled)).stem
    assert run.data.params["epochs"] == "4" and float(run.data.metrics["pairs_per_second"]) > 0
    artifacts = {a.path for a in target.client().list_artifacts(run.info.run_id, "embedder")}
    assert "embedder/model.safetensors" in artifacts
    built = values(first, candidate_release)
    assert built["reembedded_from"] == original
    assert repository.pointer(CANDIDATE) == built["release_id"]
    gate = values(first, embedder_validation)
    assert gate["promoted"] is True and gate["baseline"] == "champion v1"
    assert gate["challenger_dev_ndcg@10"] > gate["baseline_dev_ndcg@10"] + 0.2
    assert repository.pointer(CURRENT) == built["release_id"]
    assert registry.version(name, CHAMPION).version == "2"
    assert top_document(question["query"]) == f"{question['doc_id']}.md"  # the user sees it

    swap_passages(instance, labelled)  # teaches every codename the wrong guide
    second = train_and_gate(instance, resources)
    refused = values(second, embedder_validation)
    assert refused["promoted"] is False and refused["baseline"] == "champion v2"
    assert refused["challenger_dev_ndcg@10"] < refused["baseline_dev_ndcg@10"]
    assert registry.version(name, CHALLENGER).version == "3"
    assert registry.version(name, CHAMPION).version == "2"
    assert repository.pointer(CURRENT) == built["release_id"]
    assert target.client().get_model_version(name, "3").tags[GATE_TAG].startswith("refused")

    assert cli.main(["model", "promote", name, "3", "--reason", "skip the gate"]) == 2
    assert cli.main(["model", "rollback", name, "--reason", "answers got worse"]) == 0
    assert repository.pointer(CURRENT) == original
    assert registry.version(name, CHAMPION).version == "1"
    assert factory.build_query_engine(load_settings()).retriever.embedder_identity == (
        embedder_identity(embedder)
    )


def pairs_path(result: dg.ExecuteInProcessResult) -> str:
    return values(result, retrieval_training_pairs)[PAIRS_PATH]


def swap_passages(instance: dg.DagsterInstance, labelled: dg.ExecuteInProcessResult) -> None:
    """Record a pairs table in which every query's passage is another guide's."""
    pairs = pd.read_parquet(pairs_path(labelled))
    guides = sorted(pairs["doc_id"].unique())
    wrong = dict(zip(guides, guides[1:] + guides[:1], strict=True))
    passages = pairs.drop_duplicates("doc_id").set_index("doc_id")["passage"]
    pairs["passage"] = pairs["doc_id"].map(lambda doc_id: passages[wrong[doc_id]])
    path = Path(pairs_path(labelled)).with_name(f"swapped-{uuid.uuid4().hex[:8]}.parquet")
    pairs.to_parquet(path, index=False)
    metadata = dict(values(labelled, retrieval_training_pairs))
    metadata[PAIRS_PATH] = dg.MetadataValue.path(str(path))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(retrieval_training_pairs.key, metadata=metadata)
    )
