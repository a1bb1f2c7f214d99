"""The ONNX query encoder and reranker against the float models they copy: close vectors and
the same rankings, the cross-encoder's scores and blend, a cache that exports once and notices a
damaged file. Real exports of the packaged MiniLM and the session's trained cross-encoder."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.models.embedders import OpenAIEmbedder, SentenceTransformerEmbedder
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster.models.onnx_inference import (
    ONNX,
    OnnxInferenceError,
    OnnxQueryEmbedder,
    OnnxReranker,
    fuse_attention,
)
from aiplatform_dagster.rag import factory
from aiplatform_dagster.rag.ingest.chunking import Chunk
from aiplatform_dagster.rag.query.rerank import CrossEncoderReranker, Interpolation
from aiplatform_dagster.rag.query.retriever import RetrievedChunk
from aiplatform_dagster_tests.cross_encoder import TRIPLES

pytestmark = pytest.mark.slow

SENTENCES = [
    "How do I restore the vector index from a backup?",
    "Steps to recover the embedding index after data loss",
    "The cafeteria serves lunch at noon.",
    "AIP-4031",
    "Which Kubernetes cluster and Azure region host our production workloads, and which "
    "virtual machine sizes make up the ordinary autoscaling CPU nodes?",
    "Rotate the Redis password with the secrets job, then restart the API pods. " * 40,
]


@pytest.fixture(scope="module")
def int8(embedder: SentenceTransformerEmbedder, int8_cache: Path) -> OnnxQueryEmbedder:
    return OnnxQueryEmbedder.of(embedder, int8_cache)


def test_int8_query_vectors_are_the_float_models_within_rounding(
    embedder: SentenceTransformerEmbedder, int8: OnnxQueryEmbedder
) -> None:
    float_vectors, int8_vectors = embedder.encode(SENTENCES), int8.encode(SENTENCES)
    assert int8_vectors.shape == (len(SENTENCES), 384) and int8_vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(int8_vectors, axis=1), 1.0, atol=1e-5)
    assert (np.sum(float_vectors * int8_vectors, axis=1) > 0.98).all()
    # The last sentence is past the 256-token window: both truncate it the same way.
    # Rows come back in the caller's order. Batched rows differ a little from single ones:
    # activations are quantised per batch, so padding and neighbours move their scale.
    one_by_one = np.stack([int8.encode([text])[0] for text in SENTENCES])
    similarity = one_by_one @ int8_vectors.T
    assert (similarity.argmax(axis=1) == np.arange(len(SENTENCES))).all()
    assert (np.diag(similarity) > 0.98).all()
    assert int8.encode([]).shape == (0, 384)
    # Queries are searched against vectors the float model built: same model, same identity.
    assert (int8.model_id, embedder_identity(int8)) == (
        embedder.model_id,
        embedder_identity(embedder),
    )
    assert (int8.dimension, int8.max_tokens) == (embedder.dimension, embedder.max_tokens)


QUANTISED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "QAttention"}


def test_the_float_onnx_path_computes_pytorchs_vectors(
    embedder: SentenceTransformerEmbedder, float_onnx_cache: Path
) -> None:
    """The "onnx" path is the float model fused into one graph, not an approximation of it."""
    onnx = OnnxQueryEmbedder.of(embedder, float_onnx_cache, ONNX)
    vectors = onnx.encode(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    assert (np.sum(embedder.encode(SENTENCES) * vectors, axis=1) > 0.99999).all()
    assert embedder_identity(onnx) == embedder_identity(embedder)
    operators = _op_types(onnx.onnx_path)
    assert "Attention" in operators and QUANTISED_OPS.isdisjoint(operators)
    assert onnx.onnx_path.name.startswith("encoder-onnx-")


def test_a_servers_onnx_encoder_sleeps_between_calls(
    float_onnx_cache: Path, tmp_path: Path
) -> None:
    """Spinning onnxruntime threads took the cores the server's other threads needed (8 clients
    on 2 cores: 95 queries/s spinning, 120 sleeping); a lone caller keeps the faster spin."""
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)})
    shutil.copytree(float_onnx_cache, factory.onnx_cache(settings))
    served = factory.query_embedder(settings, None, ONNX).inner
    alone = factory.build_embedder(settings, None, ONNX)
    assert isinstance(served, OnnxQueryEmbedder) and isinstance(alone, OnnxQueryEmbedder)
    options = served.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(Exception, match="does not have configuration"):  # onnxruntime's default
        alone.session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning"
        )


def test_int8_ranks_a_small_corpus_as_the_float_model(
    embedder: SentenceTransformerEmbedder, int8: OnnxQueryEmbedder
) -> None:
    passages = [text for _, relevant, irrelevant in TRIPLES for text in (relevant, irrelevant)]
    queries = [query for query, _, _ in TRIPLES]
    index = embedder.encode(passages)  # the index keeps the float vectors

    def top3(vectors: np.ndarray) -> np.ndarray:
        return np.argsort(-(vectors @ index.T), axis=1)[:, :3]

    float_top, int8_top = top3(embedder.encode(queries)), top3(int8.encode(queries))
    assert (float_top[:, 0] == int8_top[:, 0]).all()
    overlap = [len(set(a) & set(b)) for a, b in zip(float_top, int8_top, strict=True)]
    assert np.mean(overlap) >= 2.8, overlap


@pytest.fixture(scope="module")
def reference(cross_encoder_dir: Path) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


def test_int8_reranker_scores_pairs_as_cross_encoder_predict(
    cross_encoder_dir: Path, int8_cache: Path, reference: Any
) -> None:
    pairs = [
        pair for q, relevant, irrelevant in TRIPLES for pair in ((q, relevant), (q, irrelevant))
    ]
    reranker = OnnxReranker(str(cross_encoder_dir), int8_cache, batch_size=16)
    expected, scores = reference.predict(pairs), np.asarray(reranker.scores(pairs))
    assert scores.shape == (len(pairs),)
    assert np.abs(scores - expected).max() < 0.05  # predict's sigmoid is in the graph
    assert spearmanr(scores, expected).statistic > 0.95
    assert ((scores[0::2] - scores[1::2]) > 0).all()  # every relevant passage still wins
    assert reranker.model_id == CrossEncoderReranker(str(cross_encoder_dir)).model_id


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_the_exported_graphs_run_onnxruntimes_fused_attention(
    cross_encoder_dir: Path, int8: OnnxQueryEmbedder, int8_cache: Path
) -> None:
    """Unfused (exported from SDPA) the int8 reranker was slower than PyTorch on long pairs."""
    reranker = OnnxReranker(str(cross_encoder_dir), int8_cache)
    assert "QAttention" in _op_types(reranker.onnx_path)  # int8 attention projections
    encoder_ops = _op_types(int8.onnx_path)
    assert "Attention" in encoder_ops and "QAttention" not in encoder_ops  # float, few tokens
    assert {"Softmax", "Erf"}.isdisjoint(encoder_ops)  # no unfused attention or GELU left


def test_a_graph_without_attention_is_left_unfused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    source, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    onnx.save(helper.make_model(graph), str(source))
    assert not fuse_attention(source, fused, None)
    assert not fused.exists()


def _candidates() -> list[RetrievedChunk]:
    texts = [irrelevant for _, _, irrelevant in TRIPLES[1:10]] + [TRIPLES[0][1]]
    return [
        RetrievedChunk(
            Chunk(f"c{i}", f"d{i}", "Runbook", f"docs/{i}.md", 0, 0, len(t), len(t.split()), t),
            score=1.0 - i / 10,
        )
        for i, t in enumerate(texts)
    ]


def test_int8_rerank_blends_with_the_first_stage_as_the_folder_says(
    cross_encoder_dir: Path, int8_cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "blended"
    shutil.copytree(cross_encoder_dir, folder)
    Interpolation(0.5).save(folder)
    candidates = _candidates()
    query = TRIPLES[0][0]
    expected = CrossEncoderReranker(str(folder)).rerank(query, candidates, 5)
    reranker = OnnxReranker(str(folder), int8_cache)
    reranked = reranker.rerank(query, candidates, 5)
    assert reranker.interpolation == Interpolation(0.5)
    assert [c.chunk.chunk_id for c in reranked] == [c.chunk.chunk_id for c in expected]
    assert np.allclose([c.score for c in reranked], [c.score for c in expected], atol=0.05)


def _int8_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("encoder-onnx-int8-*.onnx"))


def test_a_second_load_reads_the_cached_file_without_exporting(
    embedder: SentenceTransformerEmbedder, int8: OnnxQueryEmbedder, int8_cache: Path
) -> None:
    before = int8.onnx_path.stat()
    again = OnnxQueryEmbedder.of(embedder, int8_cache)
    assert again.onnx_path == int8.onnx_path
    after = again.onnx_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _int8_files(int8_cache) == [int8.onnx_path]
    assert not list(int8_cache.glob(".export-*"))  # no scratch left behind


def test_a_truncated_cached_file_is_exported_again(
    embedder: SentenceTransformerEmbedder, int8: OnnxQueryEmbedder, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    damaged = cache / int8.onnx_path.name
    damaged.write_bytes(int8.onnx_path.read_bytes()[:1_000_000])  # an export killed midway
    inode = damaged.stat().st_ino

    fresh = OnnxQueryEmbedder.of(embedder, cache)
    vectors = fresh.encode(SENTENCES[:3])
    assert (np.sum(embedder.encode(SENTENCES[:3]) * vectors, axis=1) > 0.98).all()
    [path] = _int8_files(cache)
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stem.endswith(content[:16]) and path.stat().st_size > 1_000_000
    assert not (damaged.exists() and damaged.stat().st_ino == inode)


def test_models_the_onnx_paths_cannot_serve_say_so(tmp_path: Path) -> None:
    with pytest.raises(OnnxInferenceError, match="runs elsewhere"):
        OnnxQueryEmbedder.of(OpenAIEmbedder(dimension=16, api_key="k"), tmp_path)
    with pytest.raises(OnnxInferenceError, match="not one"):
        OnnxReranker("cross-encoder/ms-marco-MiniLM-L6-v2", tmp_path)
    with pytest.raises(OnnxInferenceError, match="not one"):
        OnnxQueryEmbedder("sentence-transformers/all-mpnet-base-v2", tmp_path)


def test_importing_the_onnx_paths_loads_neither_torch_nor_onnxruntime() -> None:
    """Dagster imports the code location in every process; the runtimes load on first use."""
    code = (
        "import sys, aiplatform_dagster.models.onnx_inference, aiplatform_dagster.rag.factory; "
        "print(sorted({'torch', 'onnxruntime', 'onnx'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
