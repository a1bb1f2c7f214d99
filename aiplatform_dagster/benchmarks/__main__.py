"""``make bench``: ingestion, BM25 and vector search, each as a ratio to a baseline measured in
the same process on the same data. Numbers are for the machine it runs on; compare ratios."""

import argparse
from pathlib import Path

from aiplatform_dagster.benchmarks.bm25_bench import bench_bm25
from aiplatform_dagster.benchmarks.ingestion_bench import bench_ingestion
from aiplatform_dagster.benchmarks.vector_bench import bench_vector_search

DEFAULT_DATASET = Path("../shared/datasets/scifact")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m aiplatform_dagster.benchmarks")
    parser.add_argument(
        "--dataset", type=Path, default=DEFAULT_DATASET,
        help="BEIR folder whose corpus feeds the ingestion benchmark",
    )  # fmt: skip
    parser.add_argument("--docs", type=int, default=1000, help="documents to ingest")
    parser.add_argument("--bm25-docs", type=int, default=100_000)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument(
        "--only", choices=["ingestion", "bm25", "vector"], action="append",
        help="run only these parts (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    parts = args.only or ["ingestion", "bm25", "vector"]

    if "ingestion" in parts:
        if not (args.dataset / "corpus.jsonl").is_file():
            print(f"(a) ingestion: skipped, no BEIR corpus at {args.dataset} (pass --dataset)")
        else:
            r = bench_ingestion(args.dataset, args.docs)
            print(
                f"(a) ingestion, {r['documents']} docs -> {r['chunks']} chunks: "
                f"pipeline {r['pipeline_chunks_per_s']:.1f} chunks/s, raw encode "
                f"{r['encode_chunks_per_s']:.1f} chunks/s, ratio {r['ratio']:.2f} (goal >= 0.9)"
            )
    if "bm25" in parts:
        r = bench_bm25(args.bm25_docs)
        print(
            f"(b) BM25 top-10 over {r['n_docs']:,} chunks: p50 {r['ours_p50_ms']:.2f} ms vs "
            f"rank-bm25 {r['rank_bm25_p50_ms']:.1f} ms, {r['speedup']:.0f}x faster "
            f"(build {r['build_s']:.1f} s)"
        )
    if "vector" in parts:
        r = bench_vector_search(args.vectors)
        print(
            f"(c) vector top-10 over {r['n']:,} x {r['dim']}: p50 {r['p50_ms']:.1f} ms, "
            f"p95 {r['p95_ms']:.1f} ms vs numpy float32 p50 {r['numpy_baseline_p50_ms']:.1f} ms "
            f"({r['speedup_vs_numpy']:.1f}x), recall@10 vs exact {r['recall_at_k_vs_exact']:.3f}"
        )


if __name__ == "__main__":
    main()
