"""Run labelled queries through several retrieval modes and score each mode.

Retrieval returns chunks; judgements are per document. A document ranks where its best
chunk ranks, which is what a reader of the results sees.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.metrics import DEFAULT_METRICS, Qrels, evaluate

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


def unique_documents(chunk_doc_ids: Sequence[str]) -> list[str]:
    """Document ids in order of their first (best) chunk, each once."""
    return list(dict.fromkeys(chunk_doc_ids))


def evaluate_modes(
    rankers: Mapping[str, DocumentRanker],
    queries: Mapping[str, str],
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    progress: Progress | None = None,
) -> dict[str, ModeReport]:
    """Score every mode on the same queries; latency is wall time per query, end to end."""
    reports = {}
    for mode, rank in rankers.items():
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
