"""``make bench``: ingestion, BM25, vector search, index releases, the trained router, the
trained reranker, the fine-tuned embedder, agent orchestration, the serving API under load and
the ONNX query models, each against a baseline measured in the same process on the same
data or calls. Numbers are for the machine it runs on; compare ratios."""

import argparse
from pathlib import Path

from aiplatform_dagster.benchmarks.bm25_bench import bench_bm25
from aiplatform_dagster.benchmarks.ingestion_bench import bench_ingestion
from aiplatform_dagster.benchmarks.release_bench import (
    beir_sample,
    bench_incremental,
    bench_switch_and_open,
    kept_repository,
)
from aiplatform_dagster.benchmarks.vector_bench import bench_vector_search

DEFAULT_DATASET = Path("../shared/datasets/scifact")
PARTS = [
    "ingestion", "bm25", "vector", "releases", "approximate", "incremental", "router", "reranker",
    "embedder",
    "agents", "serving", "onnx", "shards",
]  # fmt: skip
PUBLISHED_GPU_CHUNKS_PER_S = 14_200
"""all-MiniLM-L6-v2 on one V100, as sbert.net's table of pretrained models lists it (sentences
per second): the embedding throughput of one GPU shard in the 10M-chunk estimate, an upper
bound for chunks of 240 tokens (the default), which are longer than those sentences."""


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


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
        "--open-docs", type=int, default=5183,
        help="documents of the release switched and opened (kept in storage/benchmarks)",
    )  # fmt: skip
    parser.add_argument("--changed-share", type=float, default=0.01)
    parser.add_argument(
        "--reranker-steps", type=int, default=40,
        help="optimiser steps of the reranker (32 pairs each; about 3 pairs/s on 2 CPU cores)",
    )  # fmt: skip
    parser.add_argument(
        "--agent-runs", type=int, default=200,
        help="agent workflows timed per checkpoint backend (SQLite, PostgreSQL)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres-dsn",
        help="admin DSN of the PostgreSQL server on which the agent benchmark creates and drops "
        "a throwaway database bench_agents_<random> (default: host=127.0.0.1 port=5432 "
        "user=postgres dbname=postgres)",
    )  # fmt: skip
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent API clients of the serving benchmark"
    )
    parser.add_argument("--shards", type=int, default=4, help="shards of the scale-out part")
    parser.add_argument(
        "--gpu-chunks-per-s", type=float, default=PUBLISHED_GPU_CHUNKS_PER_S,
        help="one GPU shard's embedding throughput for the 10M-chunk estimate (default: "
        "sbert.net's published all-MiniLM-L6-v2 speed on a V100)",
    )  # fmt: skip
    parser.add_argument("--gpu-nodes", type=int, default=16, help="GPU shards of the estimate")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only these parts (repeatable)"
    )
    args = parser.parse_args()
    parts = args.only or PARTS
    has_corpus = (args.dataset / "corpus.jsonl").is_file()

    if "ingestion" in parts:
        if not has_corpus:
            print(f"(a) ingestion: skipped, no BEIR corpus at {args.dataset} (pass --dataset)")
        else:
            r = bench_ingestion(args.dataset, args.docs)
            print(
                f"(a) ingestion, {r['documents']} docs -> {r['chunks']} chunks: "
                f"pipeline {r['pipeline_chunks_per_s']:.1f} chunks/s, raw encode "
                f"{r['encode_chunks_per_s']:.1f} chunks/s, ratio {r['ratio']:.2f} (goal >= 0.9: "
                f"{verdict(r['ratio'] >= 0.9)})"
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
    # (j) needs no corpus, so it runs before the parts that stop without one.
    if "agents" in parts:
        from aiplatform_dagster.benchmarks.agents_bench import DEFAULT_POSTGRES_DSN, bench_agents

        dsn = args.postgres_dsn or DEFAULT_POSTGRES_DSN
        print_agents(bench_agents(args.agent_runs, postgres_dsn=dsn))
    if "serving" in parts:
        from aiplatform_dagster.benchmarks.serving_bench import bench_serving

        print_serving(bench_serving(args.clients))
    if "onnx" in parts:
        from aiplatform_dagster.benchmarks.onnx_bench import bench_onnx

        print_onnx(bench_onnx())
    if {"releases", "approximate", "incremental"} & set(parts) and not has_corpus:
        print(f"(d-f) releases: skipped, no BEIR corpus at {args.dataset} (pass --dataset)")
        return
    from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    if "releases" in parts:
        documents = beir_sample(args.dataset, args.open_docs)
        r = bench_switch_and_open(kept_repository(args.dataset), documents, embedder)
        print(
            f"(d) switch the current release: p50 {r['switch_p50_ms']:.2f} ms, "
            f"{r['switch_vs_open']:.3f}x the time to open the release it names"
        )
        print(
            f"(e) open a release of {r['chunks']:,} chunks: p50 {r['open_p50_ms']:.0f} ms, "
            f"{r['open_vs_bm25_build']:.2f}x building its BM25 from the texts "
            f"({r['bm25_build_from_text_ms']:.0f} ms)"
        )
    if "approximate" in parts:
        from aiplatform_dagster.benchmarks.vector_bench import (
            bench_approximate_search,
            real_embeddings,
        )

        seeds, questions, queries = real_embeddings(args.dataset, args.open_docs, embedder)
        r = bench_approximate_search(seeds, questions, queries, args.vectors)
        ivf = (
            f"IVF nprobe {r['nprobe']}/{r['nlist']} (tuned on {len(questions)} train questions: "
            f"recall@10 {r['build_recall']:.3f}; built in {r['ivf_build_s']:.0f} s, exact "
            f"{r['exact_build_s']:.0f} s)"
            if r["used"]
            else "IVF refused: the exact scan was kept"
        )
        print(
            f"(c2) vector top-10 over {r['n']:,} x {r['dim']} drawn around SciFact's "
            f"{len(seeds):,} chunk vectors, {r['queries']} real test questions: {ivf}: p50 "
            f"{r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms vs exact p95 {r['exact_p95_ms']:.1f} "
            f"ms ({r['speedup_p95']:.0f}x), recall@10 vs exact {r['recall_at_k_vs_exact']:.3f} "
            f"(goal p95 <= 10 ms at recall >= 0.95: "
            f"{verdict(r['p95_ms'] <= 10 and r['recall_at_k_vs_exact'] >= 0.95)})"
        )
    if "shards" in parts:
        from aiplatform_dagster.benchmarks.shards_bench import bench_shards, estimate

        r = bench_shards(args.dataset, embedder, args.docs, args.shards)
        print(
            f"(m) scale-out ingestion, {r['documents']} docs -> {r['chunks']} chunks in "
            f"{r['shards']} shards: shards embed at {r['cpu_chunks_per_s']:.1f} chunks/s on this "
            f"CPU, {r['sharding_overhead']:.3f}x the one-machine embedding "
            f"({r['one_machine_embed_s']:.1f} s); serial per 1k chunks: plan "
            f"{r['plan_ms_per_1k']:.0f} ms, take shards {r['gather_ms_per_1k']:.0f} ms, BM25 "
            f"terms {r['terms_ms_per_1k']:.0f} ms, release {r['assemble_ms_per_1k']:.0f} ms"
        )
        e = estimate(r, 10_000_000, args.gpu_chunks_per_s, args.gpu_nodes)
        print(
            f"    10M chunks on {args.gpu_nodes} GPU shards at {args.gpu_chunks_per_s:,.0f} "
            f"chunks/s each: embedding {e['embed_h']:.2f} h ({e['gpu_node_h']:.1f} GPU node-hours)"
            f", serial phases {e['serial_h']:.2f} h at this CPU's per-chunk cost"
        )
    if "incremental" in parts:
        r = bench_incremental(beir_sample(args.dataset, args.docs), embedder, args.changed_share)
        print(
            f"(f) {r['changed_documents']} of {r['documents']} documents changed: "
            f"{r['incremental_s']:.1f} s and {r['incremental_bytes'] / 1e6:.2f} MB against a full "
            f"build's {r['full_s']:.1f} s and {r['full_bytes'] / 1e6:.2f} MB -> time "
            f"{r['time_ratio']:.1%} (goal <= 5%: {verdict(r['time_ratio'] <= 0.05)}), disk "
            f"{r['disk_ratio']:.1%} (goal <= 10%: {verdict(r['disk_ratio'] <= 0.10)}); "
            f"{r['embedded_again']} chunks embedded again, {r['segments_shared']} segment(s) "
            f"shared and {r['segments_new']} new"
        )

    if "router" in parts:
        from aiplatform_dagster.benchmarks.router_bench import bench_router

        r = bench_router(args.dataset)
        print(
            f"(g) query router, trained on {r['train_queries']} {args.dataset.name} train queries "
            f"(labels {r['train_labels']}, {r['train_seconds']:.1f} s): test nDCG@10 over "
            f"{r['test_queries']} queries: trained {r['test_trained']:.3f} vs rules "
            f"{r['test_rules']:.3f} ({r['test_trained'] - r['test_rules']:+.3f}); always "
            f"hybrid {r['test_hybrid']:.3f}, bm25 {r['test_bm25']:.3f}, dense "
            f"{r['test_dense']:.3f}, oracle {r['test_oracle']:.3f}; dev (the gate's split): "
            f"trained {r['dev_trained']:.3f} vs rules {r['dev_rules']:.3f}"
            + (f" (not trained: {r['note']})" if r["note"] else "")
        )

    if "reranker" in parts and not has_corpus:
        print(f"(h) reranker: skipped, no BEIR corpus at {args.dataset} (pass --dataset)")
    elif "reranker" in parts:
        from aiplatform_dagster.benchmarks.reranker_bench import bench_reranker
        from aiplatform_dagster.mlops.reranker_training import RerankerBudget

        r = bench_reranker(args.dataset, budget=RerankerBudget(max_steps=args.reranker_steps))
        stats, dev, test = r["stats"], r["dev"], r["test"]
        print(
            f"(h) cross-encoder reranker, trained on {stats.train_queries} {args.dataset.name} "
            f"train queries ({stats.steps} steps, {stats.pairs_per_second:.1f} pairs/s on "
            f"{stats.device}, {stats.seconds:.0f} s; first-stage weight "
            f"{stats.first_stage_weight:.1f} chosen on {stats.holdout_queries} held-out train "
            f"queries, where the model alone scores {stats.holdout['w=0.0']:.3f} against hybrid "
            f"{stats.holdout['hybrid']:.3f}): dev nDCG@10 over {dev.queries} queries: hybrid "
            f"{dev.hybrid:.3f} -> "
            f"reranked {dev.reranked:.3f} ({dev.gain:+.3f}); test over {test.queries}: hybrid "
            f"{test.hybrid:.3f} -> reranked {test.reranked:.3f} ({test.gain:+.3f}); rerank of "
            f"the top 10 on CPU p50 {r['rerank_ms']['p50_ms']:.0f} ms, p95 "
            f"{r['rerank_ms']['p95_ms']:.0f} ms = {r['rerank_vs_hybrid_p50']:.1f}x hybrid "
            f"retrieval's p50 {r['hybrid_ms']['p50_ms']:.1f} ms"
        )

    if "embedder" in parts and not has_corpus:
        print(f"(i) embedder: skipped, no BEIR corpus at {args.dataset} (pass --dataset)")
    elif "embedder" in parts:
        from aiplatform_dagster.benchmarks.embedder_bench import bench_embedder

        r = bench_embedder(args.dataset)
        gain = r["test_tuned"] - r["test_packaged"]
        print(
            f"(i) fine-tuned embedder, {r['train_pairs']} {args.dataset.name} train pairs "
            f"({r['steps']} steps, {r['train_pairs_per_s']:.2f} pairs/s = "
            f"{r['train_pairs_per_s'] / r['encode_pairs_per_s']:.2f}x encoding the same pairs, "
            f"{r['train_seconds']:.0f} s): hybrid nDCG@10 dev over {r['dev_queries']} queries "
            f"(the gate's split) {r['dev_packaged']:.3f} -> {r['dev_tuned']:.3f}; test over "
            f"{r['test_queries']}: packaged {r['test_packaged']:.3f} -> tuned "
            f"{r['test_tuned']:.3f} ({gain:+.3f}; goal >= +0.015: {verdict(gain >= 0.015)})"
        )


def print_serving(r: dict) -> None:
    cold, torch, warm, replay = r["cold"], r["cold_torch"], r["warm"], r["replay"]
    saved = 1 - replay["cost_usd"] / replay["cost_without_cache_usd"]
    print(
        f"(k) /v1/query, {r['clients']} concurrent clients, sample corpus, no reranker, instant "
        f"local LLM; floor (GET /healthz) p50 "
        f"{r['floor']['p50_ms']:.2f} / p95 {r['floor']['p95_ms']:.2f} ms; cold with the ONNX "
        f"float encoder {cold['throughput_rps']:.1f} req/s, p50 {cold['p50_ms']:.0f} / p95 "
        f"{cold['p95_ms']:.0f} / p99 {cold['p99_ms']:.0f} ms, {cold['errors']} errors (goal p95 "
        f"<= 100 ms: {verdict(cold['p95_ms'] <= 100)}), with PyTorch "
        f"{torch['throughput_rps']:.1f} req/s, p50 {torch['p50_ms']:.0f} / p95 "
        f"{torch['p95_ms']:.0f} / p99 {torch['p99_ms']:.0f} ms, {torch['errors']} errors "
        f"(ONNX serves {cold['throughput_rps'] / torch['throughput_rps']:.2f}x PyTorch's "
        f"throughput); cache warm {warm['throughput_rps']:.1f} req/s, p50 "
        f"{warm['p50_ms']:.1f} / p95 {warm['p95_ms']:.1f} ms, {warm['errors']} errors "
        f"(goal p95 <= 10 ms: {verdict(warm['p95_ms'] <= 10)}); replaying {replay['requests']} "
        f"queries ({replay['distinct']} distinct, {replay['repeat_share']:.0%} repeats, Zipf) "
        f"the cache saved {saved:.0%} of the LLM cost (${replay['cost_usd']:.4f} instead of "
        f"${replay['cost_without_cache_usd']:.4f}; the design claims 40%), {replay['errors']} "
        "errors"
    )


def print_onnx(r: dict) -> None:
    single, batch, rerank, gate = r["single"], r["batch"], r["rerank"], r["gate"]
    onnx = r["onnx_single"]
    print(
        f"(l) ONNX int8 vs PyTorch float32 on CPU, {r['queries']} golden queries: query encoder "
        f"one query p50 {single['onnx_ms']:.2f} vs {single['torch_ms']:.2f} ms = "
        f"{single['speedup']:.2f}x (goal >= 1.5x: {verdict(single['speedup'] >= 1.5)}), all "
        f"{r['queries']} as one batch {batch['onnx_ms']:.0f} vs {batch['torch_ms']:.0f} ms = "
        f"{batch['speedup']:.2f}x ({verdict(batch['speedup'] >= 1.5)}), cosine mean "
        f"{gate.cosine_mean:.4f}, min {gate.cosine_min:.4f}; reranker ({r['reranker_steps']} "
        f"training steps on the golden queries) top 10 p50 {rerank['onnx_ms']:.0f} vs "
        f"{rerank['torch_ms']:.0f} ms = {rerank['speedup']:.2f}x "
        f"({verdict(rerank['speedup'] >= 1.5)}), same top 3 on {r['same_top3']:.0%} of queries; "
        f"gate: {gate.decision} (first int8 load {r['load_s']:.1f} s, an export when not cached). "
        f"The fused float graph (the 'onnx' path): one query p50 {onnx['onnx_ms']:.2f} vs "
        f"{onnx['torch_ms']:.2f} ms = {onnx['speedup']:.2f}x, cosine min "
        f"{r['onnx_cosine_min']:.6f}"
    )


def print_agents(r: dict) -> None:
    sqlite, postgres = r["sqlite"], r["postgres"]

    def writes(b: dict) -> str:
        return f"p50 {b['write_p50_ms']:.2f} ms, p95 {b['write_p95_ms']:.2f} ms"

    if "skipped" in postgres:
        on_postgres = f"PostgreSQL half skipped: {postgres['skipped']}"
    else:
        on_postgres = (
            f"PostgreSQL p50 {postgres['p50_ms']:.1f} ms = {postgres['ratio']:.0f}x direct, "
            f"+{postgres['overhead_per_step_ms']:.2f} ms per step (checkpoint writes "
            f"{postgres['write_share']:.0%} of it: {writes(postgres)}, "
            f"{postgres['writes_per_workflow']:g} writes per workflow)"
        )
    print(
        f"(j) agent orchestration, {r['runs']} sequential {r['agent']} workflows per backend "
        f"({sqlite['steps']} steps, {sqlite['llm_calls']} model calls, {sqlite['tool_calls']} "
        f"tool call{'s' if sqlite['tool_calls'] != 1 else ''}; model replies instant, "
        f"in-process): direct p50 {r['direct_p50_ms']:.3f} ms; orchestrated SQLite p50 "
        f"{sqlite['p50_ms']:.1f} ms = {sqlite['ratio']:.0f}x direct, "
        f"+{sqlite['overhead_per_step_ms']:.2f} ms per step (checkpoint writes "
        f"{sqlite['write_share']:.0%} of it: {writes(sqlite)}, "
        f"{sqlite['writes_per_workflow']:g} writes per workflow); {on_postgres}; governance "
        f"checks p50 {r['governance_p50_us']:.1f} µs per tool call; trace event p50 "
        f"{r['trace_event_p50_us']:.1f} µs"
    )


if __name__ == "__main__":
    main()
