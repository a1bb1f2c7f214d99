"""The quantisation gate on the golden queries over the sample corpus: the int8 MiniLM passes a
realistic allowance, nothing passes a negative one, and a broken int8 model is refused."""

from pathlib import Path

import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.evaluation.quantization_gate import QuantizationReport, quantization_gate
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.models.onnx_int8 import Int8QueryEmbedder, Int8Reranker
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker, Reranker
from aiplatform_dagster_tests.onnx_int8 import INT8_COSINE_MEAN, INT8_COSINE_MIN

pytestmark = pytest.mark.slow

ALLOWED = 0.03
"""A top-1 swap among the 40 golden queries costs about 0.009; the int8 MiniLM makes one."""


def engine(
    repository: IndexRepository, storage: Path, embedder: Embedder, reranker: Reranker | None
) -> QueryEngine:
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(storage)})
    return factory.build_query_engine(
        settings, repository.open_pointer(), embedder, registry_models=False, reranker=reranker
    )


@pytest.fixture(scope="module")
def float_engine(sample_repository: IndexRepository, tmp_path_factory, embedder) -> QueryEngine:
    return engine(sample_repository, tmp_path_factory.mktemp("float"), embedder, None)


@pytest.fixture(scope="module")
def int8_report(
    sample_repository: IndexRepository, tmp_path_factory, embedder, int8_cache: Path, float_engine
) -> QuantizationReport:
    int8 = engine(
        sample_repository,
        tmp_path_factory.mktemp("int8"),
        Int8QueryEmbedder.of(embedder, int8_cache),
        None,
    )
    return quantization_gate(float_engine, int8, ALLOWED)


def test_the_int8_minilm_passes_with_its_numbers_recorded(int8_report: QuantizationReport) -> None:
    assert int8_report.passed and int8_report.inference == "onnx-int8", int8_report.decision
    assert int8_report.queries == 40 and int8_report.float_score > 0.9
    assert int8_report.loss <= ALLOWED
    assert int8_report.cosine_mean > INT8_COSINE_MEAN and int8_report.cosine_min > INT8_COSINE_MIN
    assert int8_report.encoder_speedup > 1.0
    assert int8_report.decision.startswith("int8 models pinned: routed ndcg@10")
    assert int8_report.as_dict()["passed"] is True


def test_a_negative_allowance_demands_a_gain_and_keeps_the_float_models(
    int8_report: QuantizationReport,
) -> None:
    strict = QuantizationReport(**{**int8_report.__dict__, "max_loss": -0.01})
    assert not strict.passed and strict.inference == "torch"
    assert strict.decision.startswith("float models kept: ")


def test_a_broken_int8_model_is_refused(
    sample_repository: IndexRepository,
    tmp_path: Path,
    embedder,
    broken_int8_cache: Path,
    float_engine: QueryEngine,
) -> None:
    broken = Int8QueryEmbedder.of(embedder, broken_int8_cache)
    report = quantization_gate(
        float_engine, engine(sample_repository, tmp_path, broken, None), ALLOWED
    )
    assert not report.passed and report.loss > ALLOWED, report.decision
    assert report.cosine_min < 0.9


def test_the_gate_scores_the_int8_reranker_with_the_encoder(
    sample_repository: IndexRepository,
    tmp_path: Path,
    embedder,
    int8_cache: Path,
    cross_encoder_dir: Path,
) -> None:
    """Routed ranking reranks, so the reranker's int8 scores are in the score the gate reads."""
    with_reranker = engine(
        sample_repository, tmp_path / "f", embedder, CrossEncoderReranker(str(cross_encoder_dir))
    )
    int8 = engine(
        sample_repository,
        tmp_path / "q",
        Int8QueryEmbedder.of(embedder, int8_cache),
        Int8Reranker(str(cross_encoder_dir), int8_cache),
    )
    report = quantization_gate(with_reranker, int8, ALLOWED)
    assert report.passed, report.decision
