"""The cross-encoder reranker must order candidates by the model's own scores, whichever way
the model is loaded (folder or MLflow), and explain a bad model setting.

No cross-encoder weights exist offline, so the session builds one (see
``aiplatform_dagster_tests.cross_encoder``).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.embedders import packaged_minilm_path
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.rerank import (
    CrossEncoderReranker,
    Reranker,
    RerankerError,
    load_reranker,
)
from aiplatform_dagster.rag.query.retriever import RetrievedChunk
from aiplatform_dagster_tests.cross_encoder import TRIPLES

pytestmark = pytest.mark.slow

HELD_OUT = [
    ("how can I change the password for redis", TRIPLES[0][1], TRIPLES[8][2]),
    ("what port is the database on", TRIPLES[16][1], TRIPLES[7][2]),
    ("lunch hours", TRIPLES[12][1], TRIPLES[9][1]),
]
QUERY = "how do I rotate the redis password"


@pytest.fixture(scope="session")
def reference(cross_encoder_dir: Path) -> Any:
    """The saved model loaded directly with sentence-transformers, to score independently."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


def _chunk(index: int, title: str, text: str) -> Chunk:
    return Chunk(
        chunk_id=f"chunk-{index}",
        doc_id=f"doc-{index}",
        title=title,
        source_path=f"docs/{index}.md",
        position=0,
        char_start=0,
        char_end=len(text),
        token_count=len(text.split()),
        text=text,
    )


@pytest.fixture(scope="session")
def candidates() -> list[RetrievedChunk]:
    """Ten first-stage results, the relevant one deliberately ranked last."""
    texts = [irrelevant for _, _, irrelevant in TRIPLES[1:10]] + [TRIPLES[0][1]]
    return [
        RetrievedChunk(_chunk(i, f"Runbook {i}", text), score=1.0 - i / 10)
        for i, text in enumerate(texts)
    ]


def _margins(model: Any, triples: list[tuple[str, str, str]]) -> np.ndarray:
    scores = model.predict([pair for q, r, i in triples for pair in ((q, r), (q, i))])
    return scores[0::2] - scores[1::2]


def test_the_fine_tuned_cross_encoder_prefers_relevant_passages(reference: Any) -> None:
    assert (_margins(reference, TRIPLES) > 0).all()
    assert (_margins(reference, HELD_OUT) > 0).all()


def test_rerank_keeps_top_n_ordered_by_the_cross_encoder_scores(
    cross_encoder_dir: Path, reference: Any, candidates: list[RetrievedChunk]
) -> None:
    reranker: Reranker = CrossEncoderReranker(str(cross_encoder_dir))
    expected = reference.predict([(QUERY, f"{c.chunk.title}\n{c.chunk.text}") for c in candidates])
    expected_order = [candidates[i].chunk.chunk_id for i in np.argsort(-expected, kind="stable")]

    reranked = reranker.rerank(QUERY, candidates, top_n=3)

    assert [r.chunk.chunk_id for r in reranked] == expected_order[:3]
    assert [r.score for r in reranked] == pytest.approx(
        sorted(expected, reverse=True)[:3], abs=1e-5
    )
    assert reranked[0].chunk.text == TRIPLES[0][1]
    assert reranker.model_id == f"cross-encoder:{cross_encoder_dir}"


def test_rerank_handles_edge_sizes(
    cross_encoder_dir: Path, candidates: list[RetrievedChunk]
) -> None:
    reranker = CrossEncoderReranker(str(cross_encoder_dir))

    assert len(reranker.rerank(QUERY, candidates, top_n=50)) == len(candidates)
    assert reranker.rerank(QUERY, [], top_n=5) == []
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, candidates, top_n=0)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local MLflow tracking store; returns the id of an experiment storing in a tmp dir."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        yield mlflow.create_experiment("reranker", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_tracking_uri(None)


def test_a_model_logged_to_mlflow_gives_the_same_scores_as_its_folder(
    cross_encoder_dir: Path, mlflow_store: str, candidates: list[RetrievedChunk]
) -> None:
    import mlflow

    with mlflow.start_run(experiment_id=mlflow_store) as run:
        mlflow.log_artifacts(str(cross_encoder_dir), "reranker")

    from_mlflow = load_reranker(f"runs:/{run.info.run_id}/reranker")
    from_folder = load_reranker(str(cross_encoder_dir))

    assert from_mlflow is not None and from_folder is not None
    via_mlflow = from_mlflow.rerank(QUERY, candidates, top_n=5)
    via_folder = from_folder.rerank(QUERY, candidates, top_n=5)
    assert [r.chunk.chunk_id for r in via_mlflow] == [r.chunk.chunk_id for r in via_folder]
    assert [r.score for r in via_mlflow] == pytest.approx([r.score for r in via_folder])


def test_an_mlflow_artifact_without_a_model_folder_says_what_to_log(
    tmp_path: Path, mlflow_store: str, candidates: list[RetrievedChunk]
) -> None:
    import mlflow

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("not a model")
    with mlflow.start_run(experiment_id=mlflow_store) as run:
        mlflow.log_artifacts(str(notes), "reranker")

    reranker = CrossEncoderReranker(f"runs:/{run.info.run_id}/reranker")
    with pytest.raises(RerankerError, match=r"no config\.json"):
        reranker.rerank(QUERY, candidates, top_n=1)


def test_an_unknown_mlflow_run_names_the_tracking_server(
    mlflow_store: str, candidates: list[RetrievedChunk]
) -> None:
    uri = "runs:/0123456789abcdef/reranker"
    reranker = load_reranker(uri)
    assert reranker is not None

    with pytest.raises(PlatformError, match="MLFLOW_TRACKING_URI") as error:
        reranker.rerank(QUERY, candidates, top_n=1)

    assert isinstance(error.value, RerankerError)
    assert uri in str(error.value) and "AIPLATFORM_RERANKER_MODEL" in str(error.value)


def test_a_hub_name_that_is_not_cached_names_the_model_and_the_variable(
    candidates: list[RetrievedChunk], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reranker = load_reranker("no-such-org/no-such-reranker")
    assert reranker is not None

    with pytest.raises(RerankerError, match="no-such-org/no-such-reranker") as error:
        reranker.rerank(QUERY, candidates, top_n=1)

    assert "AIPLATFORM_RERANKER_MODEL" in str(error.value)


def test_no_model_configured_means_no_reranker() -> None:
    assert load_reranker(None) is None
    assert load_reranker("  ") is None


def test_a_missing_folder_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "rerankers" / "v3"

    with pytest.raises(PlatformError, match="does not exist") as error:
        load_reranker(str(missing))

    assert isinstance(error.value, RerankerError)
    assert str(missing) in str(error.value) and "AIPLATFORM_RERANKER_MODEL" in str(error.value)


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RerankerError, match=r"no config\.json.*AIPLATFORM_RERANKER_MODEL"):
        load_reranker(str(tmp_path))


def test_an_embedding_model_folder_is_refused() -> None:
    with pytest.raises(RerankerError, match="not a cross-encoder"):
        load_reranker(packaged_minilm_path())


def test_a_run_uri_is_read_from_the_platform_s_mlflow_not_mlflow_s_default(
    cross_encoder_dir: Path,
    mlflow_store: str,
    candidates: list[RetrievedChunk],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pod sets AIPLATFORM_MLFLOW_TRACKING_URI (k8s values), not MLflow's own variable."""
    import mlflow

    from aiplatform_dagster.config import load_settings
    from aiplatform_dagster.rag.factory import build_reranker

    with mlflow.start_run(experiment_id=mlflow_store) as run:
        mlflow.log_artifacts(str(cross_encoder_dir), "reranker")
    platform_store = mlflow.get_tracking_uri()
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    mlflow.set_tracking_uri(elsewhere)  # MLflow's own default now names an empty store
    settings = load_settings(
        {
            "AIPLATFORM_RERANKER_MODEL": f"runs:/{run.info.run_id}/reranker",
            "AIPLATFORM_MLFLOW_TRACKING_URI": platform_store,
            "AIPLATFORM_STORAGE_DIR": str(tmp_path / "storage"),
        }
    )
    try:
        reranker = build_reranker(settings)
        assert reranker is not None
        assert len(reranker.rerank(QUERY, candidates, top_n=3)) == 3
    finally:
        mlflow.set_tracking_uri(platform_store)
