"""The one result type every retriever returns, so fusion and reranking compose freely."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk id with the score the retriever gave it (higher is better)."""

    chunk_id: str
    score: float
