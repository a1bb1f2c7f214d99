"""Embedders: the packaged MiniLM and an OpenAI-compatible endpoint, both unit-length."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.embedders import EmbeddingError, OpenAIEmbedder
from aiplatform_dagster_tests.fake_openai import (
    FakeOpenAIServer,
    closed_port_url,
    hash_vector,
    silent_endpoint,
)


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
        with pytest.raises(EmbeddingError, match="configured dimension is 16"):
            embedder.encode(["text"])


def fast_embedder(base_url: str, **overrides: float) -> OpenAIEmbedder:
    settings = {"timeout_s": 0.5, "max_retries": 1, "backoff_s": 0.01} | overrides
    return OpenAIEmbedder(dimension=16, base_url=base_url, api_key="k", **settings)


def test_a_closed_port_is_reported_as_refused_with_the_variable_to_fix() -> None:
    url = closed_port_url()
    with pytest.raises(PlatformError) as raised:
        fast_embedder(url).encode(["text"])

    assert isinstance(raised.value, EmbeddingError)
    message = str(raised.value)
    assert url in message and "refused" in message and "after 2 attempts" in message
    assert "AIPLATFORM_EMBEDDING_BASE_URL" in message


def test_an_endpoint_that_never_answers_fails_within_the_configured_timeout() -> None:
    with silent_endpoint() as url:
        started = time.monotonic()
        with pytest.raises(EmbeddingError) as raised:
            fast_embedder(url).encode(["text"])
        elapsed = time.monotonic() - started

    # Two attempts of 0.5 s and one backoff; the margin covers a loaded machine, not a hang.
    assert elapsed < 2 * 0.5 + 0.01 + 10
    message = str(raised.value)
    assert url in message and "timed out after 2 attempts (0.5 s each" in message
    assert "AIPLATFORM_EMBEDDING_TIMEOUT_S" in message


def test_a_server_error_is_retried_and_a_bad_key_is_not() -> None:
    with FakeOpenAIServer() as server:
        server.fail_next(1, status=503)
        assert fast_embedder(server.base_url).encode(["text"]).shape == (1, 16)
        assert len(server.requests) == 2

        server.fail_next(1, status=401)
        with pytest.raises(EmbeddingError, match=r"HTTP 401.*OPENAI_API_KEY"):
            fast_embedder(server.base_url).encode(["text"])
        assert len(server.requests) == 3


def test_calls_are_bounded_by_default() -> None:
    client = OpenAIEmbedder(base_url="http://127.0.0.1:9/v1").client
    assert client.timeout == 30


def test_openai_itself_without_a_key_says_which_variable_to_set() -> None:
    with pytest.raises(EmbeddingError, match=r"OPENAI_API_KEY.*AIPLATFORM_EMBEDDING_BASE_URL"):
        OpenAIEmbedder(api_key=None).encode(["text"])


RACE = """
import threading
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder

embedder = SentenceTransformerEmbedder()
errors = []
start = threading.Barrier(8)

def first_request():
    start.wait()
    try:
        embedder.count_tokens(["the first question of a fresh server"])
        embedder.encode(["the first question of a fresh server"])
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=first_request) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


def test_a_fresh_server_s_first_concurrent_requests_load_the_model_once_without_errors() -> None:
    """Eight requests arriving together at a new API process: each needs the tokenizer and
    the model, which load lazily (transformers' lazy imports fail when raced)."""
    for _ in range(3):  # the race does not lose every time
        done = subprocess.run(
            [sys.executable, "-c", RACE],
            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_bare_string_is_refused_rather_than_encoded_character_by_character(embedder) -> None:
    with pytest.raises(TypeError, match=r"wrap a single text as \[text\]"):
        embedder.encode("How long are backups kept?")
