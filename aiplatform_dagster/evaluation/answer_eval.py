"""LLM-as-judge evaluation of answers on a golden question set.

Each golden question is answered by the real query path, then judged for correctness
(against the reference answer) and citation faithfulness (against the cited sources).
The report also carries what users feel and pay: latency percentiles, cost per query,
the cost of the evaluation itself, and whether the expected document was cited.
"""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiplatform_dagster.evaluation.judge import JudgeError, judge_answer
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.models.llm import ChatClient
from aiplatform_dagster.rag.query.accounting import PriceTable
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions

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
    correctness: float | None
    faithfulness: float | None
    cited_expected_document: bool
    latency_ms: float
    answer_cost_usd: float
    judge_cost_usd: float
    cached: bool
    judge_error: str | None


@dataclass(frozen=True)
class AnswerEvalReport:
    answers: list[JudgedAnswer]
    judge_model: str

    @property
    def judged(self) -> list[JudgedAnswer]:
        return [a for a in self.answers if a.judge_error is None]

    def summary(self) -> dict[str, float]:
        judged = self.judged
        count = len(self.answers)
        return {
            "correctness": _mean([a.correctness for a in judged]),
            "faithfulness": _mean([a.faithfulness for a in judged]),
            "expected_document_cited": _mean([a.cited_expected_document for a in self.answers]),
            "judge_failures": float(count - len(judged)),
            "cost_per_query_usd": _mean([a.answer_cost_usd for a in self.answers]),
            "eval_cost_usd": sum(a.answer_cost_usd + a.judge_cost_usd for a in self.answers),
            "cache_hit_rate": _mean([a.cached for a in self.answers]),
            **percentiles([a.latency_ms for a in self.answers]),
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
) -> AnswerEvalReport:
    """Answer and judge every golden question; a judge reply that cannot be parsed is
    recorded as a failure for that question, never as a score."""
    results = []
    for done, item in enumerate(golden, start=1):
        started = time.perf_counter()
        answer = engine.ask(item.question, options)
        latency_ms = (time.perf_counter() - started) * 1000
        sources_text = "\n\n".join(
            f"[{s['number']}] {s['title']}\n{s['text']}" for s in answer.sources
        )
        cited = {citation.doc_id for citation in answer.citations}
        verdict, error, judge_cost = None, None, 0.0
        try:
            verdict = judge_answer(
                judge, item.question, item.reference_answer, answer.text, sources_text
            )
            judge_cost = prices.cost(judge_model, verdict.prompt_tokens, verdict.completion_tokens)
        except JudgeError as failure:
            error = str(failure)
        results.append(
            JudgedAnswer(
                question_id=item.question_id,
                answer=answer.text,
                correctness=verdict.correctness if verdict else None,
                faithfulness=verdict.faithfulness if verdict else None,
                cited_expected_document=bool(cited & set(item.doc_ids)),
                latency_ms=latency_ms,
                answer_cost_usd=answer.usage.cost_usd,
                judge_cost_usd=judge_cost,
                cached=answer.usage.cached,
                judge_error=error,
            )
        )
        if progress:
            progress(done, len(golden))
    return AnswerEvalReport(results, judge_model)


def _mean(values: Sequence[float | bool | None]) -> float:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")
