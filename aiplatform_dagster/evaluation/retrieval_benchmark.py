"""Run labelled queries through several retrieval modes and score each mode.

Retrieval returns chunks; judgements are per document. A document ranks where its best
chunk ranks, which is what a reader of the results sees.
"""

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from aiplatform_dagster.evaluation.beir import BeirDataset
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.metrics import DEFAULT_METRICS, Qrels, evaluate
from aiplatform_dagster.rag.ingest.documents import Document
from aiplatform_dagster.rag.query.engine import (
    NO_RERANKER_NOTE,
    QueryEngine,
    QueryOptions,
    documents_of,
)
from aiplatform_dagster.rag.query.retriever import SearchMode

DocumentRanker = Callable[[str], list[str]]
"""Query text -> document ids, best first."""

Progress = Callable[[str, int, int], None]
"""Called with (mode, queries done, queries total)."""


@dataclass(frozen=True)
class ModeReport:
    """Quality and latency of one retrieval mode over one labelled query set."""

    mode: str
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    queries: int

    def as_dict(self) -> dict[str, float]:
        return {**self.metrics, **self.latency_ms}


def evaluate_modes(
    rankers: Mapping[str, DocumentRanker],
    queries: Mapping[str, str],
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    progress: Progress | None = None,
) -> dict[str, ModeReport]:
    """Score every mode on the same queries; latency is wall time per query, end to end.

    Each ranker first answers one query untimed, so loading its models (seconds in a cold
    process) is not counted as query latency.
    """
    reports = {}
    for mode, rank in rankers.items():
        if queries:
            rank(next(iter(queries.values())))
        run: dict[str, list[str]] = {}
        timings: list[float] = []
        for done, (query_id, text) in enumerate(queries.items(), start=1):
            started = time.perf_counter()
            run[query_id] = rank(text)
            timings.append((time.perf_counter() - started) * 1000)
            if progress:
                progress(mode, done, len(queries))
        reports[mode] = ModeReport(
            mode=mode,
            metrics=evaluate(run, qrels, metrics),
            latency_ms=percentiles(timings),
            queries=len(queries),
        )
    return reports


class EvalMode(StrEnum):
    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"
    RERANK = "rerank"
    """Hybrid candidates reordered by the cross-encoder."""
    ROUTED = "routed"
    """What users get: the router's mode, exact terms first, reranked when a model is set."""


CHUNKS_PER_DOCUMENT_DEPTH = 3
"""Chunks fetched per document wanted, so deep metrics (recall@100) see enough documents."""


def document_rankers(
    engine: QueryEngine,
    modes: Sequence[EvalMode],
    depth: int = 100,
    options: QueryOptions | None = None,
) -> tuple[dict[str, DocumentRanker], dict[str, str]]:
    """A document ranker per mode over ``engine``'s indexes, and the modes that cannot run.

    ``rerank`` reorders the top ``options.candidates`` hybrid chunks with the cross-encoder
    and keeps the hybrid order below them, as a production reranking stage would; ``routed``
    ranks each query the way ``ask`` retrieves for it (``QueryEngine.rank``).
    """
    options = options or QueryOptions()
    chunk_depth = depth * CHUNKS_PER_DOCUMENT_DEPTH
    retriever = engine.retriever

    def ranker(mode: SearchMode) -> DocumentRanker:
        return lambda query: documents_of(
            retriever.search(query, mode, chunk_depth, options.hybrid)
        )[:depth]

    def reranked(query: str) -> list[str]:
        fused = retriever.search(query, SearchMode.HYBRID, chunk_depth, options.hybrid)
        head = engine.reranker.rerank(query, fused[: options.candidates], options.candidates)
        return documents_of([*head, *fused[options.candidates :]])[:depth]

    rankers: dict[str, DocumentRanker] = {}
    skipped: dict[str, str] = {}
    for mode in modes:
        if mode is EvalMode.ROUTED:
            rankers[mode.value] = lambda query: documents_of(
                engine.rank(query, chunk_depth, options)
            )[:depth]
        elif mode is EvalMode.RERANK:
            if engine.reranker is None:
                skipped[mode.value] = NO_RERANKER_NOTE
            else:
                rankers[mode.value] = reranked
        else:
            rankers[mode.value] = ranker(SearchMode(mode.value))
    return rankers, skipped


def beir_documents(dataset: BeirDataset, folder: Path) -> list[Document]:
    """A BEIR corpus as platform documents (title kept apart, as the chunker expects)."""
    source = str(Path(folder) / "corpus.jsonl")
    epoch = datetime.fromtimestamp(0, tz=UTC)
    return [
        Document(
            doc_id=doc.doc_id,
            title=doc.title,
            source_path=source,
            content_hash=hashlib.sha256(f"{doc.title}\x00{doc.text}".encode()).hexdigest(),
            modified_at=epoch,
            text=doc.text,
        )
        for doc in dataset.corpus.values()
        if doc.text.strip()
    ]
