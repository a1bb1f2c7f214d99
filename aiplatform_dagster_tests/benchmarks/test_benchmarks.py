"""Each benchmark at a tiny size: what it reports must follow from what it measured.

``HashEmbedder`` (stand_ins.py) replaces the model in the release benchmarks: they check the
bookkeeping, not speed; `make bench` runs them at full size with the real model. The ingestion
benchmark runs for real (MiniLM and the Dagster job) on a five-document BEIR folder.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from aiplatform_dagster.benchmarks.bm25_bench import bench_bm25
from aiplatform_dagster.benchmarks.ingestion_bench import bench_ingestion
from aiplatform_dagster.benchmarks.release_bench import bench_incremental, bench_switch_and_open
from aiplatform_dagster.benchmarks.vector_bench import (
    bench_approximate_search,
    bench_vector_search,
    embedding_like_rows,
)
from aiplatform_dagster.evaluation.beir import BeirDoc, write_beir
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster_tests.stand_ins import HashEmbedder, documents_of


def corpus(n: int) -> dict[str, str]:
    return {f"doc-{i}": f"document {i} about topic {i % 7}. " * 20 for i in range(n)}


def test_vector_search_finds_the_exact_neighbours_at_a_small_size() -> None:
    result = bench_vector_search(n=3000, dim=32, n_queries=20)
    assert result["recall_at_k_vs_exact"] == 1.0
    assert result["speedup_vs_numpy"] == pytest.approx(
        result["numpy_baseline_p50_ms"] / result["p50_ms"]
    )


def test_the_approximate_benchmark_tunes_on_questions_and_measures_on_others() -> None:
    rng = np.random.default_rng(0)
    seeds = rng.standard_normal((400, 32)).astype(np.float32)
    seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
    questions, queries = embedding_like_rows(rng, seeds, 100), embedding_like_rows(rng, seeds, 50)
    result = bench_approximate_search(seeds, questions, queries, n=20_000)
    assert result["used"] and result["build_recall"] >= 0.95
    assert result["recall_at_k_vs_exact"] >= 0.9 and result["queries"] == 50
    assert result["speedup_p95"] == pytest.approx(result["exact_p95_ms"] / result["p95_ms"])


def test_bm25_benchmark_reports_both_sides() -> None:
    result = bench_bm25(2000)
    assert result["n_docs"] == 2000
    assert result["speedup"] == pytest.approx(result["rank_bm25_p50_ms"] / result["ours_p50_ms"])


def test_switch_and_open_leave_the_repository_usable(tmp_path: Path) -> None:
    repository = IndexRepository(tmp_path)
    documents = documents_of(corpus(40))
    result = bench_switch_and_open(repository, documents, HashEmbedder(), switches=10)
    assert result["chunks"] == len(repository.open_pointer().chunks) >= 40
    assert result["switch_vs_open"] == pytest.approx(
        result["switch_p50_ms"] / result["open_p50_ms"]
    )
    again = bench_switch_and_open(repository, documents, HashEmbedder(), switches=2)
    assert again["chunks"] == result["chunks"]


def test_the_incremental_release_holds_every_document_and_embeds_only_the_changed() -> None:
    result = bench_incremental(documents_of(corpus(200)), HashEmbedder(), changed_share=0.01)
    assert result["changed_documents"] == 2 and result["all_documents_held"]
    assert result["revised_documents_held"] == 2
    assert result["segments_shared"] >= 1 and result["segments_new"] == 1
    assert 1 <= result["embedded_again"] <= 4
    assert result["incremental_bytes"] < result["full_bytes"]
    assert result["disk_ratio"] == result["incremental_bytes"] / result["full_bytes"]
    assert result["time_ratio"] == result["incremental_s"] / result["full_s"]


@pytest.mark.slow
def test_ingestion_benchmark_times_the_job_and_encode_on_the_same_chunks(tmp_path: Path) -> None:
    docs = [
        BeirDoc(f"d{i}", f"Title {i}", f"Sentence {i} about retrieval. " * 30) for i in range(5)
    ]
    write_beir(tmp_path, docs, {"q1": "retrieval"}, {"q1": {"d0": 1}})
    before = {
        name: os.environ.get(name)
        for name in ("AIPLATFORM_DOCUMENTS_DIR", "AIPLATFORM_STORAGE_DIR")
    }

    result = bench_ingestion(tmp_path, n_docs=4, repeats=1)

    assert result["documents"] == 4 and result["chunks"] >= 4
    assert result["ratio"] == pytest.approx(
        result["pipeline_chunks_per_s"] / result["encode_chunks_per_s"]
    )
    assert {name: os.environ.get(name) for name in before} == before


def test_the_router_benchmark_trains_on_train_and_measures_on_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codes that keyword search finds and questions that it does not, in both splits."""
    from aiplatform_dagster.benchmarks.router_bench import bench_router

    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(tmp_path / "storage"))
    text = "Error AIP-{code} means disk {i} is full; rotate the logs of service {i} and restart."
    docs = [BeirDoc(f"d{i}", f"Runbook {i}", text.format(code=4000 + i, i=i)) for i in range(60)]
    queries = {f"q{i}": f"AIP-{4000 + i}" if i % 2 else f"which service fills disk {i} with logs"
               for i in range(60)}  # fmt: skip
    folder = tmp_path / "tiny"
    write_beir(folder, docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(40)}, split="train")
    write_beir(folder, docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(40, 60)}, "test")
    result = bench_router(folder)
    assert (result["train_queries"], result["test_queries"]) == (
        sum(1 for i in range(40) if not _dev(f"q{i}")),
        20,
    )
    assert sum(result["train_labels"].values()) == result["train_queries"]
    if result["train_labels"]["hybrid"] == result["train_queries"]:  # ties all go to hybrid
        assert "nothing to learn" in result["note"]
        assert result["test_trained"] == result["test_rules"]


def _dev(query_id: str) -> bool:
    from aiplatform_dagster.mlops.router import in_dev_split

    return in_dev_split(query_id, 0.2)


def _bench_databases() -> set[str]:
    import psycopg2

    from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN

    connection = psycopg2.connect(POSTGRES_ADMIN_DSN)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_agents_%'")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


def test_the_agent_benchmark_compares_orchestrated_runs_with_direct_calls_on_both_stores(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aiplatform_dagster.benchmarks.__main__ import print_agents
    from aiplatform_dagster.benchmarks.agents_bench import bench_agents
    from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN

    before = _bench_databases()
    result = bench_agents(5, warmup=1, postgres_dsn=POSTGRES_ADMIN_DSN, progress=False)

    assert _bench_databases() <= before  # the throwaway database is dropped
    assert (result["direct_llm_calls"], result["direct_tool_calls"]) == (3, 1)
    sqlite, postgres = result["sqlite"], result["postgres"]
    assert "skipped" not in postgres, postgres.get("skipped")
    for backend in (sqlite, postgres):
        assert backend["completed"] == backend["runs"] == 5
        assert (backend["steps"], backend["llm_calls"], backend["tool_calls"]) == (5, 3, 1)
        assert backend["writes"] == 5 * backend["writes_per_workflow"]
        assert backend["ratio"] == pytest.approx(backend["p50_ms"] / result["direct_p50_ms"])
        assert backend["overhead_per_step_ms"] == pytest.approx(
            (backend["p50_ms"] - result["direct_p50_ms"]) / 5
        )
        assert backend["write_share"] == pytest.approx(
            backend["write_ms_per_workflow_p50"] / backend["overhead_ms"]
        )
        assert backend["write_p50_ms"] <= backend["write_p95_ms"]
    assert sqlite["writes_per_workflow"] == postgres["writes_per_workflow"] > 0
    assert result["governance_p50_us"] > 0 and result["trace_event_p50_us"] > 0

    print_agents(result)
    line = capsys.readouterr().out
    assert line.startswith("(j) agent orchestration") and "PostgreSQL p50" in line


def test_the_agent_benchmark_says_why_it_skips_an_unreachable_postgresql() -> None:
    from aiplatform_dagster.benchmarks.agents_bench import bench_agents

    result = bench_agents(
        1, warmup=0, postgres_dsn="host=127.0.0.1 port=1 user=postgres dbname=postgres",
        progress=False,
    )  # fmt: skip
    assert result["sqlite"]["completed"] == 1
    assert result["postgres"]["skipped"].startswith("cannot connect to 127.0.0.1:1")
