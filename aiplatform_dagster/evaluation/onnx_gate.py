"""The ONNX gate: may a serving release answer with the ONNX query encoder and reranker?

It scores what the smoke test scores, on the same judged queries: routed nDCG@10 (what ``ask``
retrieves, reranking included), once with the PyTorch models and once with their ONNX copies
(the fused float graph, or its int8 quantisation), over the same index release. The ONNX path
passes when it loses at most ``max_loss``. The cosine between PyTorch and ONNX query vectors and
the encoder's speed-up are recorded beside the score, so a release says what it traded; the
decision is the score alone. The float graph computes what PyTorch does (cosine 1.0 to float
rounding), so it passes unless its export went wrong; int8 trades a little ranking for speed.
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
from aiplatform_dagster.models.onnx_inference import TORCH, Inference, OnnxInference
from aiplatform_dagster.rag.query.engine import QueryEngine


@dataclass(frozen=True)
class OnnxGateReport:
    candidate: OnnxInference
    """The ONNX path measured."""
    max_loss: float
    torch_score: float | None = None
    """Routed nDCG@10 with the PyTorch models."""
    onnx_score: float | None = None
    queries: int = 0
    cosine_mean: float | None = None
    """Cosine between the PyTorch and the ONNX vector of each query, averaged."""
    cosine_min: float | None = None
    encoder_speedup: float | None = None
    """p50 of encoding one query (as serving does) with PyTorch over the ONNX path."""
    error: str | None = None
    """Why the ONNX path could not be measured (then it is not used)."""

    @property
    def loss(self) -> float | None:
        if self.torch_score is None or self.onnx_score is None:
            return None
        return round(self.torch_score - self.onnx_score, 4)

    @property
    def passed(self) -> bool:
        return self.error is None and self.loss is not None and self.loss <= self.max_loss

    @property
    def inference(self) -> Inference:
        """The path a release measured by this gate pins."""
        return self.candidate if self.passed else TORCH

    @property
    def decision(self) -> str:
        """One sentence for the asset's metadata, the CLI and the manifest."""
        if self.error is not None:
            return f"PyTorch kept: the {self.candidate} path could not be measured ({self.error})"
        verdict = f"{self.candidate} pinned" if self.passed else "PyTorch kept"
        return (
            f"{verdict}: routed {SCORE} {self.onnx_score:.4f} with {self.candidate} vs "
            f"{self.torch_score:.4f} with PyTorch on {self.queries} queries (loss "
            f"{self.loss:.4f}, allowed {self.max_loss}); query cosine mean "
            f"{self.cosine_mean:.4f}, min {self.cosine_min:.4f}; encoder "
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


def onnx_gate(
    torch_engine: QueryEngine,
    onnx_engine: QueryEngine,
    candidate: OnnxInference,
    max_loss: float,
    golden: Path = GOLDEN_DIR,
) -> OnnxGateReport:
    """Compare two engines over one index release that differ only in their inference path:
    ``onnx_engine`` runs the ``candidate`` path."""
    queries, qrels = load_judged_queries(golden)
    torch_score, _, count = routed_ndcg(torch_engine, queries, qrels)
    onnx_score, _, _ = routed_ndcg(onnx_engine, queries, qrels)
    texts = list(queries.values())
    torch_embedder, onnx_embedder = torch_engine.retriever.embedder, onnx_engine.retriever.embedder
    cosines = np.sum(torch_embedder.encode(texts) * onnx_embedder.encode(texts), axis=1)
    speedup = _p50_ms(torch_embedder, texts) / _p50_ms(onnx_embedder, texts)
    return OnnxGateReport(
        candidate=candidate,
        max_loss=max_loss,
        torch_score=round(torch_score, 4),
        onnx_score=round(onnx_score, 4),
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
