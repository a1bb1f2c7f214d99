"""(m) Scale-out ingestion, measured per shard, and the 10M-chunk estimate it supports.

On ``n_docs`` documents of a BEIR corpus: the plan (chunking and planning against no release),
each of ``shards`` shards embedded in turn with the packaged MiniLM (what each shard's Job does,
here on this CPU), then the release run's serial part (taking the shards' vectors, BM25 term
counts, writing the release). The baseline, in the same process on the same plan, is the whole
build embedded by one machine (``embed_build`` with no shards). The per-chunk cost of each
serial phase is what the README's estimate multiplies by 10M; the embedding itself is scaled by
a GPU throughput given on the command line (its source is named where it is printed).
"""

import tempfile
import time
from pathlib import Path

from aiplatform_dagster.benchmarks.release_bench import beir_sample
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.build import (
    Build,
    assemble_release,
    count_build_terms,
    plan_build,
)
from aiplatform_dagster.rag.index.embedding import Shard, embed_build, embed_shard
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig
from aiplatform_dagster.rag.ingest.pipeline import chunk_for


def bench_shards(dataset: Path, embedder: Embedder, n_docs: int = 1000, shards: int = 4) -> dict:
    """Seconds of each phase of a sharded build and of the one-machine baseline."""
    documents = beir_sample(dataset, n_docs)
    identity = embedder_identity(embedder)
    config = ChunkingConfig()
    with tempfile.TemporaryDirectory() as scratch:
        repository = IndexRepository(Path(scratch))
        started = time.perf_counter()
        build = Build(repository, "plan")
        build.write_documents(documents)
        chunks = chunk_for(documents, embedder, config).chunks
        plan_build(build, chunks, identity, embedder.model_id, config)
        plan_s = time.perf_counter() - started

        baseline = Build(repository, "one-machine")
        baseline.folder.mkdir()
        for name in ("documents.parquet", "chunks.parquet", "plan.json"):
            (baseline.folder / name).write_bytes((build.folder / name).read_bytes())
        one_machine = embed_build(baseline, embedder, identity)

        shard_s = []
        for index in range(shards):
            report = embed_shard(build, Shard(index, shards), embedder, identity)
            shard_s.append(report.seconds)
        started = time.perf_counter()
        gathered = embed_build(build, embedder, identity)
        gather_s = time.perf_counter() - started
        started = time.perf_counter()
        count_build_terms(build)
        terms_s = time.perf_counter() - started
        started = time.perf_counter()
        assemble_release(build)
        assemble_s = time.perf_counter() - started
    assert gathered.computed == 0 and gathered.from_shards == len(chunks)
    return {
        "documents": len(documents),
        "chunks": len(chunks),
        "shards": shards,
        "one_machine_embed_s": one_machine.seconds,
        "shard_embed_s": shard_s,
        "sharding_overhead": sum(shard_s) / one_machine.seconds,
        "cpu_chunks_per_s": len(chunks) / sum(shard_s),
        "plan_ms_per_1k": 1000 * plan_s / len(chunks) * 1000,
        "gather_ms_per_1k": 1000 * gather_s / len(chunks) * 1000,
        "terms_ms_per_1k": 1000 * terms_s / len(chunks) * 1000,
        "assemble_ms_per_1k": 1000 * assemble_s / len(chunks) * 1000,
    }


def estimate(measured: dict, chunks: int, gpu_chunks_per_s: float, nodes: int) -> dict:
    """Hours for ``chunks`` with ``nodes`` GPU shards at ``gpu_chunks_per_s`` each, the serial
    phases at the per-chunk cost measured here (one core's worth, as they run here)."""
    serial_ms_per_1k = sum(
        measured[key]
        for key in ("plan_ms_per_1k", "gather_ms_per_1k", "terms_ms_per_1k", "assemble_ms_per_1k")
    )
    embed_h = chunks / (gpu_chunks_per_s * nodes) / 3600
    serial_h = serial_ms_per_1k * chunks / 1000 / 1000 / 3600
    return {"embed_h": embed_h, "serial_h": serial_h, "gpu_node_h": embed_h * nodes}
