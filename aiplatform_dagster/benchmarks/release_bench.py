"""Index releases: switching, opening, and what a small change costs against a full build.

(d) A switch is one compare-and-swap pointer move under the writer lock; its baseline in the
    same process is opening the release the pointer names (what a reader does after a switch).
(e) Opening a release of ``open_chunks`` chunks (chunks, BM25 weights from the segments' term
    counts, memory-mapped vectors); its baseline is building the same BM25 index from the texts.
(f) A release with ``changed_share`` of the documents edited, built on the previous one, against
    a full build of the same corpus: wall time of ``pipeline.ingest`` and the bytes each adds.
"""

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiplatform_dagster.evaluation.beir import load_beir
from aiplatform_dagster.evaluation.retrieval_benchmark import beir_documents
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.rag.index.bm25 import BM25Index
from aiplatform_dagster.rag.index.releases import IndexRepository, Release
from aiplatform_dagster.rag.ingest.documents import Document
from aiplatform_dagster.rag.ingest.pipeline import ingest


def kept_repository(dataset: Path) -> IndexRepository:
    """The releases of ``dataset`` kept between benchmark runs, so only the first embeds it."""
    from aiplatform_dagster.config import load_settings

    return IndexRepository(
        load_settings().paths.storage_dir / "benchmarks" / f"{dataset.name}-releases"
    )


def release_bytes(release: Release, shared: set[str]) -> int:
    """Bytes of the release folder and of its segments that ``shared`` does not already hold."""
    folders = [release.folder] + [
        segment.folder for segment in release.segments if segment.segment_id not in shared
    ]
    return sum(path.stat().st_size for folder in folders for path in folder.rglob("*"))


def bench_switch_and_open(
    repository: IndexRepository, documents: list[Document], embedder: Embedder, switches: int = 100
) -> dict:
    """(d) and (e): pointer switches and release opens, with their baselines.

    ``repository`` is kept between runs (only the first embeds the corpus); the benchmark
    publishes the corpus and a copy with one document edited, and switches between the two.
    """
    first = ingest(repository, documents, embedder).release.release_id
    edited = [replace(documents[0], text=documents[0].text + " Edited."), *documents[1:]]
    second = ingest(repository, edited, embedder).release.release_id
    switch_ms, open_ms = [], []
    for number in range(switches):
        target, current = (first, second) if number % 2 == 0 else (second, first)
        started = time.perf_counter()
        repository.move_pointer(target, expected=current)
        switch_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        release = repository.open_pointer()
        open_ms.append((time.perf_counter() - started) * 1000)
    chunks = release.chunks
    started = time.perf_counter()
    BM25Index.build([c.chunk_id for c in chunks], [c.indexed_text for c in chunks])
    bm25_build_ms = (time.perf_counter() - started) * 1000
    switch_p50, open_p50 = statistics.median(switch_ms), statistics.median(open_ms)
    return {
        "chunks": len(chunks),
        "switch_p50_ms": switch_p50,
        "open_p50_ms": open_p50,
        "switch_vs_open": switch_p50 / open_p50,
        "bm25_build_from_text_ms": bm25_build_ms,
        "open_vs_bm25_build": open_p50 / bm25_build_ms,
    }


def bench_incremental(
    documents: list[Document], embedder: Embedder, changed_share: float = 0.01
) -> dict:
    """(f): time and new bytes of a release that edits ``changed_share`` of the documents."""
    changed = max(1, round(len(documents) * changed_share))
    picked = set(range(0, len(documents), len(documents) // changed)[:changed])
    edited = [
        replace(doc, text=f"{doc.text} (revised)", content_hash=f"{doc.content_hash}-revised")
        if number in picked
        else doc
        for number, doc in enumerate(documents)
    ]
    with tempfile.TemporaryDirectory(prefix="release-bench-") as scratch:
        repository = IndexRepository(Path(scratch))
        started = time.perf_counter()
        full = ingest(repository, documents, embedder).release
        full_s = time.perf_counter() - started
        full_bytes = release_bytes(full, set())
        shared = {segment.segment_id for segment in full.segments}
        started = time.perf_counter()
        small = ingest(repository, edited, embedder)
        small_s = time.perf_counter() - started
        small_bytes = release_bytes(small.release, shared)
        held = {chunk.doc_id for chunk in small.release.chunks}
        revised = {c.doc_id for c in small.release.chunks if c.text.endswith("(revised)")}
        reused = [s.segment_id in shared for s in small.release.segments]
    return {
        "documents": len(documents),
        "changed_documents": changed,
        "chunks": small.chunks,
        "embedded_again": small.embedding.computed,
        "all_documents_held": held == {doc.doc_id for doc in documents},
        "revised_documents_held": len(revised),
        "segments_shared": sum(reused),
        "segments_new": len(reused) - sum(reused),
        "full_s": full_s,
        "incremental_s": small_s,
        "time_ratio": small_s / full_s,
        "full_bytes": full_bytes,
        "incremental_bytes": small_bytes,
        "disk_ratio": small_bytes / full_bytes,
    }


def beir_sample(dataset: Path, n_docs: int) -> list[Document]:
    """The first ``n_docs`` documents of a BEIR corpus, as the platform ingests them."""
    loaded = load_beir(dataset)
    return beir_documents(loaded, dataset)[:n_docs]
