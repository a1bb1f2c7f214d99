"""The ONNX gate on the golden queries over the sample corpus: the fused float MiniLM ranks as
PyTorch does, the int8 MiniLM passes a realistic allowance, nothing passes a negative one, and a
broken int8 model is refused."""

from pathlib import Path

import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.evaluation.onnx_gate import OnnxGateReport, onnx_gate
from aiplatform_dagster.models.embedders import Embedder
from aiplatform_dagster.models.onnx_inference import INT8, ONNX, OnnxQueryEmbedder, OnnxReranker
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker, Reranker
from aiplatform_dagster_tests.onnx_models import INT8_COSINE_MEAN, INT8_COSINE_MIN

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
) -> OnnxGateReport:
    int8 = engine(
        sample_repository,
        tmp_path_factory.mktemp("int8"),
        OnnxQueryEmbedder.of(embedder, int8_cache),
        None,
    )
    return onnx_gate(float_engine, int8, INT8, ALLOWED)


def test_the_int8_minilm_passes_with_its_numbers_recorded(int8_report: OnnxGateReport) -> None:
    assert int8_report.passed and int8_report.inference == "onnx-int8", int8_report.decision
    assert int8_report.queries == 40 and int8_report.torch_score > 0.9
    assert int8_report.loss <= ALLOWED
    assert int8_report.cosine_mean > INT8_COSINE_MEAN and int8_report.cosine_min > INT8_COSINE_MIN
    assert int8_report.encoder_speedup > 1.0
    assert int8_report.decision.startswith("onnx-int8 pinned: routed ndcg@10")
    assert int8_report.as_dict()["passed"] is True


def test_the_float_onnx_minilm_ranks_exactly_as_pytorch(
    sample_repository: IndexRepository,
    tmp_path: Path,
    embedder,
    float_onnx_cache: Path,
    float_engine: QueryEngine,
) -> None:
    """The fused float graph is PyTorch's arithmetic: no loss even at a zero allowance."""
    onnx = OnnxQueryEmbedder.of(embedder, float_onnx_cache, ONNX)
    report = onnx_gate(float_engine, engine(sample_repository, tmp_path, onnx, None), ONNX, 0.0)
    assert report.passed and report.inference == "onnx", report.decision
    assert report.loss == 0.0 and report.cosine_min > 0.9999
    assert report.decision.startswith("onnx pinned: routed ndcg@10")


def test_a_negative_allowance_demands_a_gain_and_keeps_the_float_models(
    int8_report: OnnxGateReport,
) -> None:
    strict = OnnxGateReport(**{**int8_report.__dict__, "max_loss": -0.01})
    assert not strict.passed and strict.inference == "torch"
    assert strict.decision.startswith("PyTorch kept: ")


def test_a_broken_int8_model_is_refused(
    sample_repository: IndexRepository,
    tmp_path: Path,
    embedder,
    broken_int8_cache: Path,
    float_engine: QueryEngine,
) -> None:
    broken = OnnxQueryEmbedder.of(embedder, broken_int8_cache)
    report = onnx_gate(
        float_engine, engine(sample_repository, tmp_path, broken, None), INT8, ALLOWED
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
        OnnxQueryEmbedder.of(embedder, int8_cache),
        OnnxReranker(str(cross_encoder_dir), int8_cache),
    )
    report = onnx_gate(with_reranker, int8, INT8, ALLOWED)
    assert report.passed, report.decision
