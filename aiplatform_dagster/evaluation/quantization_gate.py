"""The quantisation gate: may a serving release answer with the int8 query encoder and reranker?

It scores what the smoke test scores, on the same judged queries: routed nDCG@10 (what ``ask``
retrieves, reranking included), once with the float models and once with their int8 copies,
over the same index release. The int8 path passes when it loses at most ``max_loss``. The
cosine between float and int8 query vectors and the encoder's speed-up are recorded beside the
score, so a release says what it traded; the decision is the score alone.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.evaluation.runner import GOLDEN_DIR
from aiplatform_dagster.evaluation.smoke import SCORE, routed_ndcg
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.models.onnx_int8 import INT8, TORCH, Inference
from aiplatform_dagster.rag.query.engine import QueryEngine


@dataclass(frozen=True)
class QuantizationReport:
    max_loss: float
    float_score: float | None = None
    """Routed nDCG@10 with the float models."""
    int8_score: float | None = None
    queries: int = 0
    cosine_mean: float | None = None
    """Cosine between the float and the int8 vector of each query, averaged."""
    cosine_min: float | None = None
    encoder_speedup: float | None = None
    """p50 of encoding one query (as serving does) with the float model over the int8 one."""
    error: str | None = None
    """Why the int8 path could not be measured (then it is not used)."""

    @property
    def loss(self) -> float | None:
        if self.float_score is None or self.int8_score is None:
            return None
        return round(self.float_score - self.int8_score, 4)

    @property
    def passed(self) -> bool:
        return self.error is None and self.loss is not None and self.loss <= self.max_loss

    @property
    def inference(self) -> Inference:
        """The path a release measured by this gate pins."""
        return INT8 if self.passed else TORCH

    @property
    def decision(self) -> str:
        """One sentence for the asset's metadata, the CLI and the manifest."""
        if self.error is not None:
            return f"float models kept: the int8 path could not be measured ({self.error})"
        verdict = "int8 models pinned" if self.passed else "float models kept"
        return (
            f"{verdict}: routed {SCORE} {self.int8_score:.4f} with int8 vs {self.float_score:.4f} "
            f"float on {self.queries} queries (loss {self.loss:.4f}, allowed {self.max_loss}); "
            f"query cosine mean {self.cosine_mean:.4f}, min {self.cosine_min:.4f}; encoder "
            f"{self.encoder_speedup:.2f}x faster"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "loss": self.loss,
            "passed": self.passed,
            "inference": self.inference,
            "decision": self.decision,
        }


def quantization_gate(
    float_engine: QueryEngine,
    int8_engine: QueryEngine,
    max_loss: float,
    golden: Path = GOLDEN_DIR,
) -> QuantizationReport:
    """Compare two engines over one index release that differ only in their inference path."""
    queries, qrels = load_judged_queries(golden)
    float_score, _, count = routed_ndcg(float_engine, queries, qrels)
    int8_score, _, _ = routed_ndcg(int8_engine, queries, qrels)
    texts = list(queries.values())
    float_embedder, int8_embedder = float_engine.retriever.embedder, int8_engine.retriever.embedder
    cosines = np.sum(float_embedder.encode(texts) * int8_embedder.encode(texts), axis=1)
    speedup = _p50_ms(float_embedder, texts) / _p50_ms(int8_embedder, texts)
    return QuantizationReport(
        max_loss=max_loss,
        float_score=round(float_score, 4),
        int8_score=round(int8_score, 4),
        queries=count,
        cosine_mean=round(float(cosines.mean()), 4),
        cosine_min=round(float(cosines.min()), 4),
        encoder_speedup=round(speedup, 2),
    )


def _p50_ms(embedder: Embedder, texts: list[str]) -> float:
    """Median milliseconds to encode one text, each on its own, as serving encodes a query."""
    samples = []
    for text in texts:
        started = time.perf_counter()
        embedder.encode([text])
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples, (50,))["p50_ms"]
