"""A trained query router: a scikit-learn classifier that picks keyword, semantic or hybrid search.

Labels come from the index itself: each labelled query is run through every mode and the mode
that ranks its relevant documents best (nDCG@10) is its label; hybrid keeps the label unless
another mode beats it by more than ``TIE_MARGIN`` (hybrid is the safe default). Queries where the
choice matters weigh more (the spread of the three scores), so the classifier spends its
capacity where routing changes the ranking. Routers are compared exactly on the dev split: the
routed nDCG of any router is the mean, over queries, of the score of the mode it picks.
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from aiplatform_dagster.evaluation.metrics import per_query
from aiplatform_dagster.evaluation.retrieval_benchmark import EvalMode, document_rankers
from aiplatform_dagster.rag.query.engine import QueryEngine
from aiplatform_dagster.rag.query.preprocess import PreparedQuery, Script, prepare_query
from aiplatform_dagster.rag.query.retriever import SearchMode
from aiplatform_dagster.rag.query.router import RouteDecision, Router

MODES = (SearchMode.BM25, SearchMode.DENSE, SearchMode.HYBRID)
METRIC = "ndcg@10"
TIE_MARGIN = 0.01
FEATURES = (
    "words",
    "characters",
    "exact_terms",
    "quoted_phrases",
    "latin_script",
    "digit_share",
    "upper_share",
    "mean_word_length",
    "question_mark",
)
ModeScores = dict[str, dict[str, float]]
"""query id -> mode -> nDCG@10 of that mode for the query."""


def query_features(query: PreparedQuery) -> list[float]:
    """What the router sees: cheap properties of the text, known before any search runs."""
    text = query.text
    letters = [c for c in text if c.isalpha()]
    words = text.split()
    return [
        float(query.word_count),
        float(len(text)),
        float(len(query.exact_terms)),
        float(len(query.quoted_phrases)),
        float(query.script is Script.LATIN),
        sum(c.isdigit() for c in text) / max(len(text), 1),
        sum(c.isupper() for c in letters) / max(len(letters), 1),
        sum(len(w) for w in words) / max(len(words), 1),
        float("?" in text),
    ]


def score_modes(
    engine: QueryEngine, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
) -> ModeScores:
    """nDCG@10 of every mode for every query that has a relevant document."""
    rankers, _ = document_rankers(engine, [EvalMode(m.value) for m in MODES])
    scores: ModeScores = {}
    for mode, rank in rankers.items():
        run = {query_id: rank(text) for query_id, text in queries.items()}
        for query_id, score in per_query(run, dict(qrels), METRIC).items():
            scores.setdefault(query_id, {})[mode] = score
    return scores


def in_dev_split(query_id: str, dev_fraction: float) -> bool:
    """A stable split by query: the same query is always on the same side."""
    bucket = int.from_bytes(hashlib.sha256(query_id.encode()).digest()[:4], "big")
    return bucket / 2**32 < dev_fraction


def best_mode(scores: Mapping[str, float]) -> str:
    """The label: hybrid unless another mode is better by more than TIE_MARGIN."""
    best = max(MODES, key=lambda mode: scores[mode.value]).value
    hybrid = SearchMode.HYBRID.value
    return best if scores[best] > scores[hybrid] + TIE_MARGIN else hybrid


def training_frame(
    queries: Mapping[str, str], scores: ModeScores, dev_fraction: float
) -> pd.DataFrame:
    """One row per labelled query: text, split, per-mode scores, label, weight, features."""
    rows = []
    for query_id, per_mode in sorted(scores.items()):
        prepared = prepare_query(queries[query_id])
        rows.append(
            {
                "query_id": query_id,
                "text": queries[query_id],
                "split": "dev" if in_dev_split(query_id, dev_fraction) else "train",
                **{f"ndcg_{mode}": per_mode[mode] for mode in per_mode},
                "label": best_mode(per_mode),
                "weight": max(per_mode.values()) - min(per_mode.values()) + TIE_MARGIN,
                **dict(zip(FEATURES, query_features(prepared), strict=True)),
            }
        )
    return pd.DataFrame(rows)


def train_router(frame: pd.DataFrame, c: float = 1.0) -> Pipeline:
    """Fit the classifier on the frame's train rows."""
    train = frame[frame["split"] == "train"]
    if train["label"].nunique() < 2:
        raise ValueError(
            f"every training query has the label {train['label'].iloc[0]!r}: there is nothing "
            "to learn; the rule router stays (add labelled queries where modes differ)"
        )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(
        train[list(FEATURES)], train["label"], logisticregression__sample_weight=train["weight"]
    )
    return model


class TrainedRouter:
    """A ``Router`` backed by a fitted classifier; its reason names the model and confidence."""

    def __init__(
        self, model: Pipeline, name: str = "trained router", version: str | None = None
    ) -> None:
        self.model = model
        self.name = name
        self.version = version

    def route(self, query: PreparedQuery) -> RouteDecision:
        features = pd.DataFrame([query_features(query)], columns=list(FEATURES))
        probabilities = self.model.predict_proba(features)[0]
        best = int(np.argmax(probabilities))
        mode = SearchMode(self.model.classes_[best])
        label = {"bm25": "Keyword", "dense": "Semantic", "hybrid": "Hybrid"}[mode.value]
        return RouteDecision(
            mode,
            f"{label} search, chosen by the {self.name} "
            f"(p={probabilities[best]:.2f} over the other modes).",
        )


def routed_score(router: Router, frame: pd.DataFrame) -> float:
    """Mean nDCG@10 over the frame's rows when each query gets the mode ``router`` picks."""
    if frame.empty:
        raise ValueError("no queries to score the router on")
    picked = [
        row[f"ndcg_{router.route(prepare_query(row['text'])).mode.value}"]
        for _, row in frame.iterrows()
    ]
    return float(np.mean(picked))


def save_router(model: Pipeline, folder: Path) -> Path:
    """The MLflow sklearn model format, so any MLflow tool can load it too."""
    import sklearn

    # Stated, not inferred: inference imports the whole environment and pins torch too.
    requirements = [f"scikit-learn=={sklearn.__version__}"]
    mlflow.sklearn.save_model(model, str(folder), pip_requirements=requirements)
    return folder


def load_router(folder: Path, name: str, version: str | None = None) -> TrainedRouter:
    return TrainedRouter(mlflow.sklearn.load_model(str(folder)), name, version)


def label_counts(frame: pd.DataFrame, split: str) -> dict[str, int]:
    counts = frame[frame["split"] == split]["label"].value_counts()
    return {mode.value: int(counts.get(mode.value, 0)) for mode in MODES}


def mode_means(frame: pd.DataFrame, split: str) -> dict[str, float]:
    rows = frame[frame["split"] == split]
    return {mode.value: float(rows[f"ndcg_{mode.value}"].mean()) for mode in MODES}
