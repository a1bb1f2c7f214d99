"""retrieval_eval and answer_eval, materialised with the real definitions."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.evaluation.answer_eval import load_golden_answers
from aiplatform_dagster.evaluation.judge import JUDGE_SYSTEM_PROMPT
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster_tests.defs.test_ingestion_job import materialization_metadata
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.slow


def materialize(asset: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    job = load_definitions().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(asset_selection=[dg.AssetKey(asset)], run_config=run_config or {})


@pytest.fixture
def platform_on_sample(sample_repository: IndexRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the code location at the session's ingested sample corpus."""
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(sample_repository.root.parent))
    for variable in (
        "OPENAI_API_KEY",
        "AIPLATFORM_LLM_BASE_URL",
        "OPENAI_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "AIPLATFORM_RERANKER_MODEL",
    ):
        monkeypatch.delenv(variable, raising=False)


def test_retrieval_eval_scores_every_mode_on_the_golden_queries(
    platform_on_sample,
    sample_repository: IndexRepository,
    monkeypatch: pytest.MonkeyPatch,
    cross_encoder_dir: Path,
) -> None:
    monkeypatch.setenv("AIPLATFORM_RERANKER_MODEL", str(cross_encoder_dir))
    metadata = materialization_metadata(materialize("retrieval_eval"), "retrieval_eval")

    assert metadata["benchmark"] == "golden" and metadata["queries"] == 40
    assert metadata["release_id"] == sample_repository.pointer()
    assert metadata["embedder"].startswith("sentence-transformers:all-MiniLM-L6-v2@sha256:")
    for mode in ("bm25", "dense", "hybrid", "rerank", "routed"):
        for metric in ("ndcg@10", "recall@100", "precision@10", "mrr@10", "p50_ms", "p99_ms"):
            assert f"golden/{mode}/{metric}" in metadata
    assert metadata["golden/hybrid/ndcg@10"] >= 0.9
    assert metadata["golden/hybrid/ndcg@10"] > metadata["golden/dense/ndcg@10"]
    assert metadata["golden/hybrid/recall@100"] == 1.0
    assert metadata["skipped_modes"] == {}


def test_rerank_mode_without_a_model_is_skipped_with_the_reason(platform_on_sample) -> None:
    metadata = materialization_metadata(
        materialize(
            "retrieval_eval", {"ops": {"retrieval_eval": {"config": {"modes": ["bm25", "rerank"]}}}}
        ),
        "retrieval_eval",
    )
    assert "golden/rerank/ndcg@10" not in metadata
    assert "AIPLATFORM_RERANKER_MODEL" in metadata["skipped_modes"]["rerank"]
    assert metadata["golden/bm25/ndcg@10"] > 0


def test_answer_eval_without_an_llm_says_why_and_scores_nothing(platform_on_sample) -> None:
    metadata = materialization_metadata(materialize("answer_eval"), "answer_eval")
    assert metadata["status"] == "not run"
    assert "No LLM configured" in metadata["reason"]
    assert not any(key in metadata for key in ("correctness", "faithfulness"))


def judge_or_answer(messages: list[dict]) -> str:
    """Scripted model: the judge always grades 4/5 correct and 5/5 faithful."""
    if messages[0]["content"] == JUDGE_SYSTEM_PROMPT:
        return json.dumps({"correctness": 4, "faithfulness": 5, "reasoning": "supported"})
    return "The answer is in the first source [1]."


def test_answer_eval_judges_every_golden_question(
    platform_on_sample, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample_repository
) -> None:
    shutil.copytree(sample_repository.root, tmp_path / "ingestion")  # the judge cache goes here
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path))
    golden = load_golden_answers()
    with FakeOpenAIServer(chat_reply=judge_or_answer) as server:
        monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        metadata = materialization_metadata(materialize("answer_eval"), "answer_eval")
        requests = server.chat_requests()

    assert len(requests) == (1 + 3) * len(golden)  # each answered once, judged three times
    assert (metadata["judge_repeats"], metadata["judge_prompt_version"]) == (3, "judge-v1")
    assert metadata["correctness_std"] == 0 and metadata["judge_failures"] == 0
    assert metadata["status"] == "evaluated" and metadata["questions"] == len(golden)
    assert metadata["correctness"] == pytest.approx(0.8)
    assert metadata["faithfulness"] == pytest.approx(1.0)
    assert metadata["failed_questions"] == 0
    assert metadata["expected_document_cited"] >= 0.6
    assert metadata["eval_cost_usd"] > metadata["cost_per_query_usd"] > 0
    assert metadata["cache_hit_rate"] == 0


def test_answer_eval_with_the_cache_on_reports_hits_and_costs_nothing_the_second_time(
    platform_on_sample, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample_repository
) -> None:
    shutil.copytree(sample_repository.root, tmp_path / "ingestion")
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path))
    golden = load_golden_answers()
    cached = {"ops": {"answer_eval": {"config": {"use_cache": True}}}}
    with FakeOpenAIServer(chat_reply=judge_or_answer) as server:
        monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        first = materialization_metadata(materialize("answer_eval", cached), "answer_eval")
        second = materialization_metadata(materialize("answer_eval", cached), "answer_eval")
        requests = server.chat_requests()

    assert len(requests) == (1 + 3) * len(golden)  # the rerun's answers and verdicts: cached
    assert second["eval_cost_usd"] == 0 < first["eval_cost_usd"]
    assert first["cache_hit_rate"] == 0 and second["cache_hit_rate"] == 1.0
    assert second["cost_per_query_usd"] == 0 < first["cost_per_query_usd"]
    assert second["response_cache/hits"] == len(golden)
    assert second["response_cache/misses"] == len(golden)
    assert second["response_cache/hit_rate"] == 0.5
