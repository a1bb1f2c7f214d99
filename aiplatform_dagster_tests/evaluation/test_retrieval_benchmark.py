"""Mode evaluation: latency measures queries, not a model loaded on the first call."""

import time

from aiplatform_dagster.evaluation.retrieval_benchmark import evaluate_modes

QUERIES = {f"q{n}": f"question {n}" for n in range(20)}
QRELS = {query_id: {"doc-a": 1} for query_id in QUERIES}


def slow_first_call_ranker():
    """A ranker that loads a model on its first call (0.5 s), then answers in microseconds."""
    calls: list[str] = []

    def rank(query: str) -> list[str]:
        if not calls:
            time.sleep(0.5)
        calls.append(query)
        return ["doc-a", "doc-b"]

    return rank, calls


def test_latency_excludes_the_first_calls_model_loading() -> None:
    rank, calls = slow_first_call_ranker()

    report = evaluate_modes({"dense": rank}, QUERIES, QRELS)["dense"]

    assert report.latency_ms["p99_ms"] < 100
    assert report.metrics["ndcg@10"] == 1.0 and report.queries == len(QUERIES)
    assert len(calls) == len(QUERIES) + 1  # one untimed warm-up call, then every query
