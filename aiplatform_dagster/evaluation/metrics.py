"""Graded-relevance IR metrics with trec_eval / BEIR / ranx conventions, so our numbers compare.

A ranking lists doc ids best first; a repeated id counts only at its first rank. A doc is relevant
when its grade is above 0. nDCG uses linear gain (the grade) with a log2(rank + 1) discount and
the ideal DCG from the judged grades, as trec_eval's ndcg_cut and BEIR do.
"""

import math
from collections.abc import Callable, Mapping, Sequence

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]
Grades = Mapping[str, int]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "precision@10", "mrr@10")


def _top_k(ranking: Sequence[str], k: int) -> list[str]:
    """First k distinct ids, so a retriever that repeats a doc earns no extra credit."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return list(dict.fromkeys(ranking))[:k]


def _relevant(grades: Grades) -> set[str]:
    return {doc_id for doc_id, grade in grades.items() if grade > 0}


def recall_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """Share of all relevant docs found in the top k (0 when none is relevant)."""
    relevant = _relevant(grades)
    if not relevant:
        return 0.0
    return sum(doc_id in relevant for doc_id in _top_k(ranking, k)) / len(relevant)


def precision_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """Relevant docs in the top k divided by k, even when fewer than k were retrieved."""
    relevant = _relevant(grades)
    return sum(doc_id in relevant for doc_id in _top_k(ranking, k)) / k


def mrr_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """1 / rank of the first relevant doc in the top k, else 0."""
    relevant = _relevant(grades)
    for rank, doc_id in enumerate(_top_k(ranking, k), start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def _dcg(gains: Sequence[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """DCG of the top k over the DCG of the best possible top k (0 when none is relevant)."""
    gains = {doc_id: grade for doc_id, grade in grades.items() if grade > 0}
    ideal = _dcg(sorted(gains.values(), reverse=True)[:k])
    if ideal == 0.0:
        return 0.0
    return _dcg([gains.get(doc_id, 0) for doc_id in _top_k(ranking, k)]) / ideal


def average_precision_at_k(ranking: Sequence[str], grades: Grades, k: int) -> float:
    """Mean of precision at each relevant rank within k, over all relevant docs (trec map_cut)."""
    relevant = _relevant(grades)
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for rank, doc_id in enumerate(_top_k(ranking, k), start=1):
        if doc_id in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


_METRICS: dict[str, Callable[[Sequence[str], Grades, int], float]] = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "mrr": mrr_at_k,
    "map": average_precision_at_k,
}


def parse_metric(name: str) -> tuple[Callable[[Sequence[str], Grades, int], float], int]:
    """Turn "ndcg@10" into (ndcg_at_k, 10), failing loudly on a typo rather than scoring 0."""
    metric, sep, cutoff = name.partition("@")
    if metric not in _METRICS or not sep or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(
            f"Unknown metric {name!r}: expected NAME@K with K >= 1 and NAME one of "
            f"{', '.join(sorted(_METRICS))}, e.g. 'ndcg@10'"
        )
    return _METRICS[metric], int(cutoff)


def per_query(run: Run, qrels: Qrels, metric: str) -> dict[str, float]:
    """Score each judged query that has a relevant doc; a query missing from the run scores 0."""
    score, k = parse_metric(metric)
    return {
        qid: score(run.get(qid, ()), grades, k)
        for qid, grades in qrels.items()
        if _relevant(grades)
    }


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each metric over the judged queries with a relevant doc, as BEIR reports it."""
    for name in metrics:
        parse_metric(name)  # reject every bad name before any scoring work
    if not any(_relevant(grades) for grades in qrels.values()):
        raise ValueError("No query in qrels has a relevant doc (grade > 0); nothing to average")
    results: dict[str, float] = {}
    for name in metrics:
        scores = per_query(run, qrels, name)
        results[name] = sum(scores.values()) / len(scores)
    return results
