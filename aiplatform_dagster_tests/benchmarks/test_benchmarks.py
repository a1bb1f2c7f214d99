"""Each benchmark at a tiny size: what it reports must follow from what it measured.

``HashEmbedder`` (stand_ins.py) replaces the model: these check the benchmarks' bookkeeping,
not speed; `make bench` runs them at full size with the real model.
"""

from pathlib import Path

import pytest

from aiplatform_dagster.benchmarks.bm25_bench import bench_bm25
from aiplatform_dagster.benchmarks.release_bench import bench_incremental, bench_switch_and_open
from aiplatform_dagster.benchmarks.vector_bench import bench_vector_search
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
    assert 1 <= result["embedded_again"] <= 4
    assert result["incremental_bytes"] < result["full_bytes"]
    assert result["disk_ratio"] == result["incremental_bytes"] / result["full_bytes"]
