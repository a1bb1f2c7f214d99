"""The trained router: labels, split, training, exact comparison with the rule router."""

from pathlib import Path

import pandas as pd
import pytest

from aiplatform_dagster.mlops.gate import GateDecision
from aiplatform_dagster.mlops.router import (
    TrainedRouter,
    best_mode,
    in_dev_split,
    load_router,
    routed_score,
    save_router,
    train_router,
    training_frame,
)
from aiplatform_dagster.rag.query.preprocess import prepare_query
from aiplatform_dagster.rag.query.router import RuleRouter

LONG = "what does the {} say about the way the platform should behave when traffic doubles"


def synthetic_labels(n: int = 120) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Short code lookups that keyword search wins, long questions that hybrid wins (the rule
    router sends those to semantic search, as it did with SciFact's long claims)."""
    queries, scores = {}, {}
    for i in range(n):
        if i % 2:
            queries[f"q{i}"] = f"AIP-{1000 + i} error"
            scores[f"q{i}"] = {"bm25": 0.9, "dense": 0.2, "hybrid": 0.6}
        else:
            queries[f"q{i}"] = LONG.format(f"runbook number {i}")
            scores[f"q{i}"] = {"bm25": 0.4, "dense": 0.5, "hybrid": 0.8}
    return queries, scores


@pytest.fixture
def frame() -> pd.DataFrame:
    queries, scores = synthetic_labels()
    return training_frame(queries, scores, dev_fraction=0.25)


@pytest.mark.parametrize(
    ("scores", "label"),
    [({"bm25": 0.9, "dense": 0.2, "hybrid": 0.6}, "bm25"),
     ({"bm25": 0.605, "dense": 0.2, "hybrid": 0.6}, "hybrid"),
     ({"bm25": 0.5, "dense": 0.5, "hybrid": 0.5}, "hybrid"),
     ({"bm25": 0.1, "dense": 0.7, "hybrid": 0.3}, "dense")],
)  # fmt: skip
def test_the_label_is_the_best_mode_and_ties_go_to_hybrid(scores: dict, label: str) -> None:
    assert best_mode(scores) == label


def test_the_split_is_stable_per_query_and_near_the_fraction() -> None:
    ids = [f"query-{i}" for i in range(2_000)]
    dev = [i for i in ids if in_dev_split(i, 0.2)]
    assert dev == [i for i in ids if in_dev_split(i, 0.2)]
    assert 0.17 < len(dev) / len(ids) < 0.23


def test_the_trained_router_learns_what_the_rules_get_wrong(frame: pd.DataFrame) -> None:
    router = TrainedRouter(train_router(frame))
    dev = frame[frame["split"] == "dev"]
    trained, rules = routed_score(router, dev), routed_score(RuleRouter(), dev)
    assert trained == pytest.approx(dev[["ndcg_bm25", "ndcg_hybrid"]].max(axis=1).mean())
    assert rules < trained
    decision = router.route(prepare_query(LONG.format("paging policy")))
    assert decision.mode.value == "hybrid" and "trained router" in decision.reason


def test_the_gate_refuses_a_worse_challenger(frame: pd.DataFrame) -> None:
    dev = frame[frame["split"] == "dev"]
    good = TrainedRouter(train_router(frame))
    worse = TrainedRouter(train_router(frame.assign(label=frame["label"].map(_swap))))
    champion = routed_score(good, dev)
    refused = GateDecision("ndcg@10", routed_score(worse, dev), champion, "champion", 0.0)
    assert not refused.promoted and refused.reason.startswith("refused")
    accepted = GateDecision("ndcg@10", champion, routed_score(RuleRouter(), dev), "rules", 0.0)
    assert accepted.promoted and accepted.reason.startswith("promoted")


def _swap(label: str) -> str:
    return {"bm25": "hybrid", "hybrid": "bm25", "dense": "dense"}[label]


def test_a_saved_router_loads_and_routes_the_same(frame: pd.DataFrame, tmp_path: Path) -> None:
    router = TrainedRouter(train_router(frame))
    loaded = load_router(save_router(router.model, tmp_path / "router"), "query_router v1")
    for text in ("AIP-4031", LONG.format("backup policy"), "how are vectors normalised?"):
        assert loaded.route(prepare_query(text)).mode == router.route(prepare_query(text)).mode


def test_one_label_everywhere_is_refused_with_the_reason(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="nothing to learn"):
        train_router(frame.assign(label="hybrid"))
