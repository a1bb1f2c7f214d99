"""The ``aiplatform`` command as a user runs it."""

import json
import shutil
import uuid
from pathlib import Path

import pytest

from aiplatform_dagster.cli import main
from aiplatform_dagster.config import SAMPLE_CORPUS_DIR
from aiplatform_dagster.evaluation.beir import BeirDoc, write_beir
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster_tests.conftest import REDIS_URL
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

TINY_CORPUS = [
    BeirDoc("d1", "Vector backups", "The vector index is backed up nightly and kept 30 days."),
    BeirDoc("d2", "Paging", "Unacknowledged pages escalate to the secondary after 15 minutes."),
    BeirDoc("d3", "GPU pool", "GPU nodes scale from zero to four and carry a GPU taint."),
    BeirDoc("d4", "Drift", "A PSI above 0.2 raises a drift alert and triggers retraining."),
]
TINY_QUERIES = {
    "q1": "how long are vector index backups kept",
    "q2": "when does a page go to the secondary on-call",
    "q3": "how many GPU nodes can the pool scale to",
    "q4": "what PSI value counts as drift",
}
TINY_QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}


@pytest.fixture
def on_sample(sample_repository: IndexRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(sample_repository.root.parent))
    for variable in ("OPENAI_API_KEY", "AIPLATFORM_LLM_BASE_URL", "AIPLATFORM_RERANKER_MODEL"):
        monkeypatch.delenv(variable, raising=False)


def test_search_prints_ranked_chunks_with_title_score_and_source(on_sample, capsys) -> None:
    assert main(["search", "When does the on-call rotation hand over?", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(" 1. [") and "On-Call Runbook" in lines[0]
    assert lines[1].strip().endswith("(chunk 0)") or "on_call_runbook.md" in lines[1]
    assert sum(line[:3].strip().rstrip(".").isdigit() for line in lines) == 3


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_json_in_every_mode(on_sample, capsys, mode: str) -> None:
    assert main(["search", "AIP-4031 embedding dimension mismatch", "--mode", mode, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["doc_id"] == "operations/troubleshooting.txt"
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    assert rows == sorted(rows, key=lambda row: -row["score"])


def test_ask_prints_answer_citations_route_and_timings(on_sample, capsys) -> None:
    assert main(["ask", "How long are vector index backups kept?"]) == 0
    out = capsys.readouterr().out
    assert "[1] " in out and "backup_and_restore.txt" in out
    assert "answer: extractive" in out
    assert "route: " in out and "timings: preprocess" in out
    assert "note: reranking skipped" in out


def test_ask_json_has_the_whole_answer(on_sample, capsys) -> None:
    assert main(["ask", "What is the PSI drift alert threshold?", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "extractive"
    assert answer["citations"][0]["doc_id"] == "mlops/drift_monitoring.md"
    assert answer["route"]["mode"] in {"bm25", "dense", "hybrid"} and answer["route"]["reason"]
    assert set(answer["timings_ms"]) >= {"retrieve", "context"}


def test_eval_retrieval_on_a_beir_folder_ends_with_one_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.delenv("AIPLATFORM_RERANKER_MODEL", raising=False)
    write_beir(tmp_path / "tiny", TINY_CORPUS, TINY_QUERIES, TINY_QRELS)
    argv = ["eval", "retrieval", "--dataset", str(tmp_path / "tiny"), "--json"]

    assert main(argv) == 0
    out = capsys.readouterr().out
    scores = json.loads(out.strip().splitlines()[-1])
    assert set(scores) == {"bm25", "dense", "hybrid", "routed"}
    assert "rerank" in out and "skipped" in out
    for mode, values in scores.items():
        assert values["recall@100"] == 1.0, mode
        assert {"ndcg@10", "precision@10", "mrr@10", "p50_ms", "p95_ms", "p99_ms"} <= set(values)
    assert scores["hybrid"]["ndcg@10"] == 1.0

    [folder] = (tmp_path / "storage" / "benchmarks").glob("tiny-*")  # one per embedder
    release = IndexRepository(folder).open_pointer()
    assert {c.doc_id for c in release.chunks} == {"d1", "d2", "d3", "d4"}
    assert f"release {release.release_id}" in out


def test_bad_input_exits_2_with_a_message(
    on_sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert main(["ask", "   "]) == 2
    assert "empty" in capsys.readouterr().err.lower()
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path / "never-ingested"))
    assert main(["search", "anything"]) == 2
    assert "materialise" in capsys.readouterr().err
    assert main(["eval", "retrieval", "--dataset", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_ask_with_an_llm_and_redis_reports_cost_and_cache_hit_rate(
    sample_repository: IndexRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import redis

    prefix = f"aiplatform-test:{uuid.uuid4().hex}:"
    storage = tmp_path / "storage"
    shutil.copytree(sample_repository.root, storage / "ingestion")
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(storage))
    monkeypatch.setenv("AIPLATFORM_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("AIPLATFORM_REDIS_PREFIX", prefix)
    monkeypatch.delenv("AIPLATFORM_RERANKER_MODEL", raising=False)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with FakeOpenAIServer() as server:
            monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", server.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", "test-key")
            assert main(["ask", "What is the PSI drift alert threshold?"]) == 0
            first = capsys.readouterr().out
            assert main(["ask", "What is the PSI drift alert threshold?", "--json"]) == 0
            second = json.loads(capsys.readouterr().out)
            assert len(server.chat_requests()) == 1
        assert client.exists(f"{prefix}hits") and client.exists(f"{prefix}misses")
    finally:
        client.delete(*client.keys(f"{prefix}*") or [f"{prefix}none"])
    assert "answer: generated by gpt-4o-mini" in first
    assert "cache: 0% hit rate over 1 LLM lookups" in first
    assert "cost $0.0000" in first and "(cache hit)" not in first
    assert second["kind"] == "cached" and second["usage"]["cached"]
    assert second["cache"] == {"hits": 1, "misses": 1, "hit_rate": 0.5}


def test_an_unreachable_redis_never_stops_search_or_ask(
    on_sample, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("AIPLATFORM_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["search", "AIP-4031", "-k", "1"]) == 0
    assert "troubleshooting" in capsys.readouterr().out
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("AIPLATFORM_LLM_BASE_URL", server.base_url)
        assert main(["ask", "What does error AIP-4031 mean?"]) == 0
    out = capsys.readouterr().out
    assert "answer: generated" in out and "without the response cache" in out


def test_bad_counts_are_refused_not_replaced_by_defaults(on_sample, capsys) -> None:
    for argv in (
        ["ask", "q", "--top-n", "0"],
        ["ask", "q", "--candidates", "-1"],
        ["search", "q", "-k", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "must be at least 1" in capsys.readouterr().err
    assert main(["search", "  "]) == 2
    assert "search needs a query" in capsys.readouterr().err


def test_index_list_show_and_rollback(
    sample_repository: IndexRepository,
    embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    storage = tmp_path / "storage"
    shutil.copytree(sample_repository.root, storage / "ingestion")
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(storage))
    repository = IndexRepository(storage / "ingestion")
    first = repository.pointer()
    assert main(["index", "rollback"]) == 2
    assert "has no predecessor" in capsys.readouterr().err
    assert main(["index", "list"]) == 0
    assert first in capsys.readouterr().out
    assert main(["index", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["release_id"] == first
    documents, _ = load_documents(SAMPLE_CORPUS_DIR)
    second = ingest(repository, documents[:-1], embedder).release.release_id
    assert main(["index", "rollback"]) == 0
    assert f"current: {second} -> {first}" in capsys.readouterr().out
    assert repository.pointer() == first
