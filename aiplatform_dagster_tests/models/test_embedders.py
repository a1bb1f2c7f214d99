"""Embedders: the packaged MiniLM and an OpenAI-compatible endpoint, both unit-length."""

import numpy as np
import pytest

from aiplatform_dagster.models.embedders import OpenAIEmbedder
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer, hash_vector


def test_minilm_gives_unit_vectors_that_rank_paraphrases_together(embedder) -> None:
    vectors = embedder.encode(
        [
            "How do I restore the vector index from a backup?",
            "Steps to recover the embedding index after data loss",
            "The cafeteria serves lunch at noon.",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert embedder.model_id == "sentence-transformers:all-MiniLM-L6-v2"
    assert embedder.max_tokens == 254


def test_order_is_kept_when_texts_are_sorted_by_length_for_batching(embedder) -> None:
    texts = ["short", "a considerably longer sentence about retrieval " * 5, "mid-sized text"]
    batch = embedder.encode(texts)
    one_by_one = np.stack([embedder.encode([text])[0] for text in texts])
    assert np.allclose(batch, one_by_one, atol=1e-5)


def test_openai_compatible_endpoint_in_batches_with_progress() -> None:
    texts = [f"document number {i}" for i in range(7)]
    seen: list[tuple[int, int]] = []
    with FakeOpenAIServer(embedding_dimension=16) as server:
        embedder = OpenAIEmbedder(
            model="text-embedding-3-small", dimension=16, base_url=server.base_url,
            api_key="test-key", batch_size=3,
        )  # fmt: skip
        vectors = embedder.encode(texts, progress=lambda done, total: seen.append((done, total)))
        requests = [r for r in server.requests if r.path.endswith("/embeddings")]

    assert [len(r.body["input"]) for r in requests] == [3, 3, 1]
    assert all(r.body["dimensions"] == 16 for r in requests)
    assert seen == [(3, 7), (6, 7), (7, 7)]
    expected = np.array([hash_vector(t, 16) for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-6)
    assert embedder.model_id == "openai:text-embedding-3-small:16"
    assert embedder.count_tokens(["two words"]) == [2]


def test_a_dimension_mismatch_says_what_to_fix() -> None:
    with FakeOpenAIServer(embedding_dimension=8, ignore_requested_dimensions=True) as server:
        embedder = OpenAIEmbedder(dimension=16, base_url=server.base_url, api_key="k")
        with pytest.raises(ValueError, match="configured dimension is 16"):
            embedder.encode(["text"])
