"""Continuous batching of query encodes: concurrent questions share model calls and each gets
exactly the vector it would get alone, from the real MiniLM."""

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from aiplatform_dagster.models.batching import BatchingEmbedder
from aiplatform_dagster.models.identity import embedder_identity
from aiplatform_dagster_tests.stand_ins import HashEmbedder

QUESTIONS = [
    "How long are vector index backups kept?",
    "What does error code AIP-4031 mean?",
    "Which VM size do the GPU nodes use?",
    "When does the on-call rotation hand over?",
    "How do I roll back a model?",
    "What is the monthly budget for the LLM?",
    "Who approves a production deployment?",
    "Where are the audit logs stored?",
] * 2


def encode_concurrently(embedder: BatchingEmbedder, questions: Sequence[str]) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * len(questions)
    start = threading.Barrier(len(questions))

    def ask(number: int) -> None:
        start.wait()
        results[number] = embedder.encode([questions[number]])[0]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_questions_share_model_calls_and_get_their_own_vectors(embedder) -> None:
    batching = BatchingEmbedder(embedder)
    vectors = encode_concurrently(batching, QUESTIONS)
    alone = embedder.encode(QUESTIONS)
    np.testing.assert_allclose(np.stack(vectors), alone, atol=1e-5)
    assert 1 <= batching.batches < len(QUESTIONS)


def test_it_is_the_same_embedder_to_releases_and_identity(embedder) -> None:
    batching = BatchingEmbedder(embedder)
    assert embedder_identity(batching) == embedder_identity(embedder)
    assert (batching.model_id, batching.dimension) == (embedder.model_id, embedder.dimension)
    assert batching.count_tokens(["two words"]) == embedder.count_tokens(["two words"])


class FailsOn(HashEmbedder):
    """Raises for one text, so a batch that holds it fails."""

    def __init__(self, poison: str) -> None:
        self.poison = poison

    def encode(self, texts, progress=None) -> np.ndarray:
        if self.poison in texts:
            raise RuntimeError(f"cannot encode {self.poison!r}")
        return super().encode(texts, progress)


def test_a_failed_batch_fails_its_callers_and_the_next_call_still_works() -> None:
    batching = BatchingEmbedder(FailsOn("poison"))
    with pytest.raises(RuntimeError, match="cannot encode 'poison'"):
        batching.encode(["poison"])
    np.testing.assert_allclose(batching.encode(["fine"]), HashEmbedder().encode(["fine"]))


def test_large_and_progress_reporting_encodes_go_straight_to_the_model() -> None:
    batching = BatchingEmbedder(HashEmbedder(), max_batch=4)
    texts = [f"text {n}" for n in range(5)]
    np.testing.assert_allclose(batching.encode(texts), HashEmbedder().encode(texts))
    batching.encode(texts[:2], progress=lambda done, total: None)
    assert batching.batches == 0


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingEmbedder(HashEmbedder(), max_batch=0)
