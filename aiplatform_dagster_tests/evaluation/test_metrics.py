"""Metrics must match hand-worked values and ranx (trec_eval conventions) on graded judgements."""

import math
import random

import pytest
from ranx import Qrels as RanxQrels
from ranx import Run as RanxRun
from ranx import evaluate as ranx_evaluate

from aiplatform_dagster.evaluation.metrics import (
    average_precision_at_k,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    per_query,
    precision_at_k,
    recall_at_k,
)

# q1: relevant b (grade 2), d (grade 1) and x (grade 1, never retrieved), so R = 3.
Q1_RANKING = ["a", "b", "c", "d"]
Q1_GRADES = {"b": 2, "d": 1, "x": 1}
# q2: the repeated "e" counts once, so f sits at rank 2; g is judged 0, i.e. not relevant.
Q2_RANKING = ["e", "e", "f", "g"]
Q2_GRADES = {"f": 1, "g": 0}
# q3: nothing relevant is retrieved.
Q3_RANKING = ["h"]
Q3_GRADES = {"i": 1}


def test_recall() -> None:
    assert recall_at_k(Q1_RANKING, Q1_GRADES, 4) == pytest.approx(2 / 3)  # b, d of {b, d, x}
    assert recall_at_k(Q1_RANKING, Q1_GRADES, 2) == pytest.approx(1 / 3)  # b only
    assert recall_at_k(Q2_RANKING, Q2_GRADES, 2) == 1.0  # deduped top 2 is e, f
    assert recall_at_k(Q3_RANKING, Q3_GRADES, 100) == 0.0


def test_precision_divides_by_k_even_past_the_end_of_the_run() -> None:
    assert precision_at_k(Q1_RANKING, Q1_GRADES, 4) == 0.5  # 2 hits / 4
    assert precision_at_k(Q1_RANKING, Q1_GRADES, 10) == 0.2  # 2 hits / 10, run has only 4
    assert precision_at_k(Q2_RANKING, Q2_GRADES, 3) == pytest.approx(1 / 3)  # e, f, g: grade-0 g
    assert precision_at_k(Q3_RANKING, Q3_GRADES, 10) == 0.0


def test_mrr() -> None:
    assert mrr_at_k(Q1_RANKING, Q1_GRADES, 10) == 0.5  # first relevant (b) at rank 2
    assert mrr_at_k(Q1_RANKING, Q1_GRADES, 1) == 0.0  # b is outside the top 1
    assert mrr_at_k(Q2_RANKING, Q2_GRADES, 10) == 0.5  # f is rank 2 once "e" is deduped
    assert mrr_at_k(Q3_RANKING, Q3_GRADES, 10) == 0.0


def test_ndcg_uses_linear_gain_and_ideal_from_the_grades() -> None:
    # DCG@4  = 2/log2(3) + 1/log2(5)            = 1.2619 + 0.4307 = 1.6925  (b at 2, d at 4)
    # IDCG@4 = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.6309 + 0.5 = 3.1309 (grades 2, 1, 1)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(Q1_RANKING, Q1_GRADES, 4) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(Q1_RANKING, Q1_GRADES, 4) == pytest.approx(0.54059, abs=1e-5)
    # @1: a is not relevant, so DCG = 0 whatever the ideal (2/log2(2) = 2).
    assert ndcg_at_k(Q1_RANKING, Q1_GRADES, 1) == 0.0
    # q2: f (grade 1) at deduped rank 2 -> (1/log2(3)) / (1/log2(2)) = 0.6309
    assert ndcg_at_k(Q2_RANKING, Q2_GRADES, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(Q3_RANKING, Q3_GRADES, 10) == 0.0


def test_perfect_ranking_scores_one() -> None:
    assert ndcg_at_k(["b", "d", "x"], Q1_GRADES, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["b", "x", "d"], Q1_GRADES, 10) == pytest.approx(1.0)  # ties in grade


def test_average_precision() -> None:
    # Hits at rank 2 (precision 1/2) and rank 4 (precision 2/4), divided by R = 3.
    assert average_precision_at_k(Q1_RANKING, Q1_GRADES, 4) == pytest.approx((0.5 + 0.5) / 3)
    assert average_precision_at_k(Q3_RANKING, Q3_GRADES, 10) == 0.0


def test_k_below_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        recall_at_k(Q1_RANKING, Q1_GRADES, 0)


RUN = {"q1": Q1_RANKING, "q2": Q2_RANKING, "q3": Q3_RANKING}
QRELS = {
    "q1": Q1_GRADES,
    "q2": Q2_GRADES,
    "q3": Q3_GRADES,
    "q4": {"a": 0},  # no relevant doc: skipped, as BEIR does
    "q5": {"a": 1},  # judged but missing from the run: scores 0
}


def test_evaluate_averages_over_judged_queries_with_a_relevant_doc() -> None:
    # mrr@10: q1 1/2, q2 1/2, q3 0, q5 0 -> 1/4; recall@100: 2/3, 1, 0, 0 -> (5/3) / 4
    assert evaluate(RUN, QRELS, ["mrr@10", "recall@100"]) == pytest.approx(
        {"mrr@10": 0.25, "recall@100": 5 / 12}
    )


def test_per_query_lists_each_scored_query() -> None:
    assert per_query(RUN, QRELS, "mrr@10") == {"q1": 0.5, "q2": 0.5, "q3": 0.0, "q5": 0.0}


def test_evaluate_defaults_to_the_beir_report_metrics() -> None:
    assert set(evaluate(RUN, QRELS)) == {"ndcg@10", "recall@100", "precision@10", "mrr@10"}


@pytest.mark.parametrize("name", ["ndgc@10", "ndcg", "ndcg@0", "ndcg@ten", "NDCG@10", "p@10"])
def test_unknown_metric_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate(RUN, QRELS, ["mrr@10", name])


def test_qrels_without_any_relevant_doc_is_an_error() -> None:
    with pytest.raises(ValueError, match="No query in qrels has a relevant doc"):
        evaluate(RUN, {"q1": {"a": 0}})


def _synthetic(seed: int) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """~50 queries with grades 0-3, runs of 1-110 docs, and some judged queries left unretrieved."""
    rng = random.Random(seed)
    pool = [f"d{i}" for i in range(120)]
    run: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(50):
        qid = f"q{q}"
        judged = rng.sample(pool, rng.randint(1, 40))
        qrels[qid] = {doc: rng.choice([0, 1, 1, 2, 3]) for doc in judged}
        qrels[qid][judged[0]] = rng.randint(1, 3)  # at least one relevant doc
        if q % 10 != 9:
            run[qid] = rng.sample(pool, rng.randint(1, 110))
    return run, qrels


METRICS = ["ndcg@10", "ndcg@100", "recall@100", "recall@10", "precision@10", "mrr@10", "map@100"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_ranx(seed: int) -> None:
    run, qrels = _synthetic(seed)
    ranx_run = RanxRun(
        {
            qid: {doc: float(len(docs) - rank) for rank, doc in enumerate(docs)}
            for qid, docs in run.items()
        }
    )
    ranx_qrels = RanxQrels(qrels)
    ranx_run = ranx_run.make_comparable(ranx_qrels)  # empty results for unretrieved queries
    expected = ranx_evaluate(ranx_qrels, ranx_run, METRICS)

    assert evaluate(run, qrels, METRICS) == pytest.approx(expected, abs=1e-6)
    for metric in METRICS:
        ours = per_query(run, qrels, metric)
        theirs = {qid: float(score) for qid, score in ranx_run.scores[metric].items()}
        assert ours == pytest.approx(theirs, abs=1e-6)  # unretrieved queries score 0 in both
