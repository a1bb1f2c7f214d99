"""The smoke evaluation a serving release must pass before it goes live.

Two questions, on judged queries (the shipped golden set unless configured): does the candidate
answer end to end (route, search, rerank, answer, cite; no error), and does its routed retrieval
score no worse than the live release's by more than a tolerance? The comparison is relative on
purpose: on a corpus the queries do not describe, both scores are low and the absolute value
means little, while a drop against the release it would replace is a regression either way.
"""

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from aiplatform_dagster.evaluation.beir import load_judged_queries
from aiplatform_dagster.evaluation.retrieval_benchmark import (
    EvalMode,
    document_rankers,
    evaluate_modes,
)
from aiplatform_dagster.evaluation.runner import GOLDEN_DIR
from aiplatform_dagster.rag.query.engine import AnswerKind, QueryEngine

SCORE = "ndcg@10"
ANSWERED_QUESTIONS = 5
"""Golden questions asked end to end: enough to exercise every stage, cheap with an LLM."""


@dataclass(frozen=True)
class SmokeReport:
    queries: int
    score: float
    """Routed nDCG@10 of the candidate on the golden queries."""
    p95_ms: float
    asked: int
    unanswered: int = 0
    """Questions nothing found matched (not failures: the score measures retrieval)."""
    failures: list[str] = field(default_factory=list)
    """Questions that failed end to end (an error, a model's answer citing nothing or citing a
    source it was not given), each with why."""
    baseline_release: str | None = None
    baseline_score: float | None = None
    max_drop: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures and not self.regressed

    @property
    def regressed(self) -> bool:
        return self.baseline_score is not None and self.score < self.baseline_score - self.max_drop

    @property
    def decision(self) -> str:
        """One sentence a person reads in the asset's metadata and in the CLI."""
        if self.baseline_score is None:
            score = f"first serving release, routed {SCORE} {self.score:.4f}"
        else:
            score = (
                f"routed {SCORE} {self.score:.4f} vs {self.baseline_score:.4f} on the live "
                f"release {self.baseline_release} (allowed drop {self.max_drop})"
            )
        if self.failures:
            failed = f"{len(self.failures)}/{self.asked} questions failed end to end"
            return f"not published: {failed}; {score}"
        return f"{'not published' if self.regressed else 'published'}: {score}"

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed, "decision": self.decision}


def routed_ndcg(
    engine: QueryEngine, queries: dict[str, str], qrels: dict[str, dict[str, int]]
) -> tuple[float, float, int]:
    """Routed nDCG@10 on the judged queries, its p95 latency in ms, and how many queries."""
    rankers, _ = document_rankers(engine, [EvalMode.ROUTED], depth=10, options=engine.defaults)
    report = evaluate_modes(rankers, queries, qrels, [SCORE])[EvalMode.ROUTED.value]
    return report.metrics[SCORE], report.latency_ms["p95_ms"], report.queries


def smoke_evaluate(
    candidate: QueryEngine,
    baseline: QueryEngine | None,
    baseline_release: str | None,
    max_drop: float,
    golden: Path = GOLDEN_DIR,
) -> SmokeReport:
    """Ask a few golden questions end to end on ``candidate`` and compare its routed score with
    ``baseline`` (the live release; None for the first release)."""
    queries, qrels = load_judged_queries(golden)
    score, p95_ms, count = routed_ndcg(candidate, queries, qrels)
    questions = list(queries.values())[:ANSWERED_QUESTIONS]
    strict = replace(candidate.defaults, use_cache=False, degrade_on_llm_error=False)
    failures, unanswered = [], 0
    for question in questions:
        try:
            answer = candidate.ask(question, strict)
        except Exception as error:  # a failure of any stage is what the smoke test looks for
            failures.append(f"{question!r}: {type(error).__name__}: {error}")
            continue
        if answer.invalid_citations:
            failures.append(f"{question!r}: cited sources it was not given")
        elif answer.citations:
            continue
        elif answer.kind is AnswerKind.GENERATED:
            failures.append(f"{question!r}: the model answered without citing a source")
        else:
            unanswered += 1
    return SmokeReport(
        queries=count,
        score=round(score, 4),
        p95_ms=round(p95_ms, 1),
        asked=len(questions),
        unanswered=unanswered,
        failures=failures,
        baseline_release=baseline_release,
        baseline_score=round(routed_ndcg(baseline, queries, qrels)[0], 4) if baseline else None,
        max_drop=max_drop,
    )
