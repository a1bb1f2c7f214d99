"""One retrieval evaluation, as the CLI and the ``retrieval_eval`` asset both run it.

Without a benchmark folder it scores the platform's current index release on the shipped golden
queries; with a BEIR folder it ingests that corpus into a release repository of its own (rows and
vectors are reused across runs, so a rerun costs only the queries) and scores that release.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiplatform_dagster.config import Settings
from aiplatform_dagster.evaluation.beir import load_beir, load_judged_queries
from aiplatform_dagster.evaluation.metrics import DEFAULT_METRICS
from aiplatform_dagster.evaluation.retrieval_benchmark import (
    EvalMode,
    ModeReport,
    Progress,
    beir_documents,
    document_rankers,
    evaluate_modes,
)
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.models.embedders import Progress as EmbedProgress
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.rag.index.releases import IndexRepository, Release
from aiplatform_dagster.rag.ingest.chunking import ChunkingConfig
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def judged_questions_dir(settings: Settings) -> Path:
    """The judged questions serving releases are smoke-tested on, and IVF indexes tuned on."""
    return settings.serving.smoke_queries or GOLDEN_DIR


def judged_questions(settings: Settings) -> list[str]:
    return list(load_judged_queries(judged_questions_dir(settings))[0].values())


EngineFactory = Callable[[Release | None], QueryEngine]
"""Builds the query engine: over the platform's current release (None) or over a benchmark's."""


@dataclass(frozen=True)
class RetrievalEvalRequest:
    benchmark: Path | None = None
    """A BEIR folder; None evaluates the platform's indexes on the golden queries."""
    split: str = "test"
    modes: Sequence[EvalMode] = tuple(EvalMode)
    metrics: Sequence[str] = DEFAULT_METRICS
    depth: int = 100
    options: QueryOptions = field(default_factory=QueryOptions)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)


@dataclass(frozen=True)
class RetrievalEvalResult:
    benchmark: str
    queries: int
    reports: dict[str, ModeReport]
    skipped: dict[str, str]
    release_id: str
    embedder: str
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{"mode": {"ndcg@10": ..., "p50_ms": ..., ...}, ...}: what --json prints."""
        return {mode: report.as_dict() for mode, report in self.reports.items()}


@dataclass(frozen=True)
class OpenBenchmark:
    """Labelled queries of one split and the engine over the release they are judged on."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    engine: QueryEngine
    warnings: tuple[str, ...] = ()


def open_benchmark(
    benchmark: Path | None,
    split: str,
    make_engine: EngineFactory,
    embedder: Embedder,
    benchmarks_root: Path,
    chunking: ChunkingConfig | None = None,
    embed_progress: EmbedProgress | None = None,
) -> OpenBenchmark:
    """The golden queries over the platform's current release (``benchmark`` None), or a BEIR
    folder's split over that corpus's own release (ingested, or brought up to date)."""
    if benchmark is None:
        queries, qrels = load_judged_queries(GOLDEN_DIR, split)
        return OpenBenchmark("golden", queries, qrels, make_engine(None))
    folder = Path(benchmark)
    dataset = load_beir(folder, split)
    summary = ingest(
        benchmark_repository(benchmarks_root, folder, embedder),
        beir_documents(dataset, folder),
        embedder,
        config=chunking or ChunkingConfig(),
        progress=embed_progress,
    )
    return OpenBenchmark(
        folder.name,
        dataset.queries,
        dataset.qrels,
        make_engine(summary.release),
        tuple(dataset.warnings),
    )


def benchmark_repository(
    benchmarks_root: Path, folder: Path, embedder: Embedder
) -> IndexRepository:
    """One repository per corpus and embedder: comparing two embedders re-embeds neither."""
    digest = hashlib.sha256(embedder_identity(embedder).encode()).hexdigest()[:12]
    return IndexRepository(Path(benchmarks_root) / f"{Path(folder).name}-{digest}")


def run_retrieval_eval(
    request: RetrievalEvalRequest,
    make_engine: EngineFactory,
    embedder: Embedder,
    benchmarks_root: Path,
    embed_progress: EmbedProgress | None = None,
    query_progress: Progress | None = None,
) -> RetrievalEvalResult:
    opened = open_benchmark(
        request.benchmark,
        request.split,
        make_engine,
        embedder,
        benchmarks_root,
        request.chunking,
        embed_progress,
    )
    engine = opened.engine
    rankers, skipped = document_rankers(engine, request.modes, request.depth, request.options)
    reports = evaluate_modes(rankers, opened.queries, opened.qrels, request.metrics, query_progress)
    return RetrievalEvalResult(
        opened.name,
        len(opened.queries),
        reports,
        skipped,
        release_id=engine.retriever.release_id or "",
        embedder=engine.retriever.embedder_identity,
        warnings=opened.warnings,
    )
