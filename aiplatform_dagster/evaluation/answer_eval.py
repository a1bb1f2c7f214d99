"""LLM-as-judge evaluation of answers on a golden question set.

Each golden question is answered by the real query path, then judged for correctness
(against the reference answer) and citation faithfulness (against the cited sources).
The report also carries what users feel and pay: latency percentiles, cost per query,
the cost of the evaluation itself, and whether the expected document was cited.

The judge is its own client and model (a stronger or cheaper one than the answering model).
A question whose answer or judgement fails scores 0 with its error recorded, so one bad call
neither aborts the run nor quietly lifts the average by dropping out of it.
"""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.evaluation.judge import (
    JUDGE_PROMPT_VERSION,
    RepeatedVerdict,
    judge_repeatedly,
)
from aiplatform_dagster.evaluation.judge_cache import JudgeCache
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.models.llm import ChatClient
from aiplatform_dagster.rag.query.accounting import PriceTable
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions
from aiplatform_dagster.rag.query.preprocess import QueryError

GOLDEN_ANSWERS = Path(__file__).resolve().parent / "golden" / "answers.jsonl"


@dataclass(frozen=True)
class GoldenAnswer:
    question_id: str
    question: str
    reference_answer: str
    doc_ids: list[str]


@dataclass(frozen=True)
class JudgedAnswer:
    question_id: str
    answer: str
    correctness: float
    faithfulness: float
    correctness_std: float
    """Spread of the repeated verdicts: how much one judgement of this answer can be trusted."""
    judge_failures: int
    """Verdicts that could not be read."""
    cited_expected_document: bool
    expects_documents: bool
    """False for a human label, which names no document to cite."""
    latency_ms: float | None
    """None when the answer failed: its time measures the failure, not a query."""
    answer_cost_usd: float
    judge_cost_usd: float
    cached: bool
    error: str | None
    """Why the answer or its judgement failed ("answer failed: ...", "judgement failed: ...");
    the scores are then 0."""


@dataclass(frozen=True)
class AnswerEvalReport:
    answers: list[JudgedAnswer]
    judge_model: str
    judge_repeats: int = 1
    judge_prompt_version: str = JUDGE_PROMPT_VERSION

    def summary(self) -> dict[str, float]:
        """Mean scores over every question (a failed one counts 0), failures, cost, latency."""
        answers = self.answers
        latencies = [a.latency_ms for a in answers if a.latency_ms is not None]
        return {
            "correctness": _mean([a.correctness for a in answers]),
            "faithfulness": _mean([a.faithfulness for a in answers]),
            "expected_document_cited": _mean(
                [a.cited_expected_document for a in answers if a.expects_documents]
            ),
            "correctness_std": _mean([a.correctness_std for a in answers]),
            "judge_failures": float(sum(a.judge_failures for a in answers)),
            "failed_questions": float(sum(a.error is not None for a in answers)),
            "cost_per_query_usd": _mean([a.answer_cost_usd for a in answers]),
            "eval_cost_usd": sum(a.answer_cost_usd + a.judge_cost_usd for a in answers),
            "cache_hit_rate": _mean([a.cached for a in answers]),
            **(percentiles(latencies) if latencies else {}),
        }


def load_golden_answers(path: Path = GOLDEN_ANSWERS) -> list[GoldenAnswer]:
    """Golden questions: one JSON object a line with _id, question, reference_answer, doc_ids."""
    answers = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            answers.append(
                GoldenAnswer(
                    record["_id"],
                    record["question"],
                    record["reference_answer"],
                    list(record["doc_ids"]),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path}:{number}: expected _id, question, reference_answer, doc_ids ({error!r})"
            ) from error
    return answers


def run_answer_eval(
    engine: QueryEngine,
    judge: ChatClient,
    judge_model: str,
    prices: PriceTable,
    golden: Sequence[GoldenAnswer],
    options: QueryOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    repeats: int = 1,
    cache: JudgeCache | None = None,
) -> AnswerEvalReport:
    """Answer every golden question with ``engine`` and judge it ``repeats`` times with
    ``judge`` (priced as ``judge_model``; replies kept in ``cache``); a failed answer or
    judgement is that question's failure, never an abort."""
    judging = Judging(judge, judge_model, prices, repeats, cache)
    results = []
    for done, item in enumerate(golden, start=1):
        results.append(_evaluate_one(engine, judging, item, options))
        if progress:
            progress(done, len(golden))
    return AnswerEvalReport(results, judge_model, repeats)


@dataclass(frozen=True)
class Judging:
    """How answers are judged: the client, its pinned model and price, repeats, the cache."""

    client: ChatClient
    model: str
    prices: PriceTable
    repeats: int
    cache: JudgeCache | None


def _evaluate_one(
    engine: QueryEngine, judging: Judging, item: GoldenAnswer, options: QueryOptions | None
) -> JudgedAnswer:
    started = time.perf_counter()
    try:
        strict = replace(options or engine.defaults, degrade_on_llm_error=False)
        answer = engine.ask(item.question, strict)
    except (PlatformError, QueryError) as failure:
        return _failed(item, f"answer failed: {failure}")
    latency_ms = (time.perf_counter() - started) * 1000
    sources_text = "\n\n".join(f"[{s['number']}] {s['title']}\n{s['text']}" for s in answer.sources)
    cited = {citation.doc_id for citation in answer.citations}
    try:
        verdict = judge_repeatedly(
            judging.client, judging.model, item.question, item.reference_answer, answer.text,
            sources_text, judging.repeats, judging.cache,
        )  # fmt: skip
    except PlatformError as failure:  # the judge's endpoint failed: nothing was judged
        verdict = RepeatedVerdict(0.0, 0.0, 0.0, 0.0, 0, [str(failure)], "", 0, 0, 0)
    return JudgedAnswer(
        question_id=item.question_id,
        answer=answer.text,
        correctness=verdict.correctness,
        faithfulness=verdict.faithfulness,
        correctness_std=verdict.correctness_std,
        judge_failures=len(verdict.failures),
        cited_expected_document=bool(cited & set(item.doc_ids)),
        expects_documents=bool(item.doc_ids),
        latency_ms=latency_ms,
        answer_cost_usd=answer.usage.cost_usd,
        judge_cost_usd=judging.prices.cost(
            judging.model, verdict.prompt_tokens, verdict.completion_tokens
        ),
        cached=answer.usage.cached,
        error=None if verdict.judged else f"judgement failed: {verdict.failures[0]}",
    )


def _failed(item: GoldenAnswer, error: str) -> JudgedAnswer:
    """A question that got no answer: every score 0, nothing spent that can be priced."""
    return JudgedAnswer(
        item.question_id, "", 0.0, 0.0, 0.0, 0, False, bool(item.doc_ids), None, 0.0, 0.0, False,
        error,
    )  # fmt: skip


def _mean(values: Sequence[float | bool]) -> float:
    return sum(float(v) for v in values) / len(values) if values else float("nan")
