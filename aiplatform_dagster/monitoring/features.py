"""What the query log keeps of each query: features the query path already computed.

The question text itself is not kept (it may hold personal data); its length, script and the
embedding are enough to see the questions change. Scores are those of the sources the answer
used (reranker scores when reranked, retrieval scores otherwise), so a shift in the route mix
shows in them too.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from aiplatform_dagster.rag.query.engine import Answer
from aiplatform_dagster.rag.query.preprocess import detect_script, word_count

TIMESTAMP = "ts"
NUMERIC_FEATURES = ("question_words", "question_chars", "top_score", "score_margin")
"""Features of the questions and of what retrieval found: drift here means new traffic."""
OPERATIONAL_FEATURES = ("latency_ms",)
"""Reported with the rest, but never a reason to retrain: load and hardware move them."""
CATEGORICAL_FEATURES = ("script", "route")
EMBEDDING = "embedding"
COLUMNS = (
    TIMESTAMP,
    *NUMERIC_FEATURES,
    *OPERATIONAL_FEATURES,
    *CATEGORICAL_FEATURES,
    EMBEDDING,
)

Embed = Callable[[Sequence[str]], np.ndarray]
"""Questions -> one embedding row each (an ``Embedder.encode``)."""


@dataclass(frozen=True)
class QueryRecord:
    """One query as the drift statistics see it."""

    ts: datetime
    """When the query was answered, timezone-aware UTC."""
    question_words: int
    question_chars: int
    top_score: float
    """Score of the best source; NaN when nothing was found."""
    score_margin: float
    """Best minus second-best source score; NaN with fewer than two sources."""
    latency_ms: float
    script: str
    route: str
    embedding: np.ndarray
    """The question's float32 embedding; empty when it could not be computed."""

    def as_row(self) -> dict[str, object]:
        return {column: getattr(self, column) for column in COLUMNS}


def features_of(answer: Answer, embedding: np.ndarray | None, ts: datetime) -> QueryRecord:
    """The record of ``answer`` (its question is the normalised one the engine searched)."""
    scores = sorted((float(source["score"]) for source in answer.sources), reverse=True)
    return QueryRecord(
        ts=ts,
        question_words=word_count(answer.question),
        question_chars=len(answer.question),
        top_score=scores[0] if scores else math.nan,
        score_margin=scores[0] - scores[1] if len(scores) > 1 else math.nan,
        latency_ms=float(answer.total_ms),
        script=detect_script(answer.question).value,
        route=answer.route.mode.value,
        embedding=as_vector(embedding),
    )


def as_vector(embedding: np.ndarray | Sequence[float] | None) -> np.ndarray:
    """A flat float32 vector (empty for None), whatever shape the embedder returned."""
    if embedding is None:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(embedding, dtype=np.float32).reshape(-1)
