"""answer_eval: a judge of its own, and one failing question costs that question, not the run."""

import json

import pytest

from aiplatform_dagster.evaluation.answer_eval import GoldenAnswer, run_answer_eval
from aiplatform_dagster.evaluation.judge import JUDGE_PROMPT_VERSION
from aiplatform_dagster.evaluation.judge_cache import JudgeCache
from aiplatform_dagster.models.llm import LLMSettings
from aiplatform_dagster.rag.query.accounting import PriceTable
from aiplatform_dagster.rag.query.engine import QueryEngine, QueryOptions
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

GOLDEN = [
    GoldenAnswer(
        "a01",
        "When does the on-call rotation hand over to the next engineer?",
        "Every Monday at 10:00 UTC.",
        ["operations/on_call_runbook.md"],
    ),
    GoldenAnswer(
        "a02",
        "Which VM size do the GPU nodes use?",
        "Standard_NC24ads_A100_v4.",
        ["operations/gpu_node_pool.html"],
    ),
    GoldenAnswer(
        "a03",
        "What does error code AIP-4031 mean?",
        "An embedding dimension mismatch between the index and the embedder.",
        ["operations/troubleshooting.txt"],
    ),
]
VERDICT = json.dumps({"correctness": 5, "faithfulness": 4, "reasoning": "Right."})


def client(server: FakeOpenAIServer, model: str):
    settings = LLMSettings(
        model=model, base_url=server.base_url, api_key="k", max_retries=0, timeout_s=2
    )
    return settings.build_client()


def evaluate(sample_retriever, embedder, answerer, judge, repeats: int = 1, cache=None):
    engine = QueryEngine(
        sample_retriever,
        embedder.count_tokens,
        llm=client(answerer, "gpt-4o-mini"),
        llm_model="gpt-4o-mini",
    )
    return run_answer_eval(
        engine,
        client(judge, "judge-model"),
        "judge-model",
        PriceTable(),
        GOLDEN,
        QueryOptions(use_cache=False),
        repeats=repeats,
        cache=cache,
    )


def test_the_judge_is_its_own_model_on_its_own_endpoint(sample_retriever, embedder) -> None:
    with FakeOpenAIServer() as answerer, FakeOpenAIServer(lambda _: VERDICT) as judge:
        report = evaluate(sample_retriever, embedder, answerer, judge)

    assert {r.body["model"] for r in answerer.chat_requests()} == {"gpt-4o-mini"}
    assert {r.body["model"] for r in judge.chat_requests()} == {"judge-model"}
    assert len(judge.chat_requests()) == len(GOLDEN)
    assert report.judge_model == "judge-model"
    assert report.summary()["correctness"] == pytest.approx(1.0)
    assert report.summary()["failed_questions"] == 0


def test_a_failed_answer_or_judgement_scores_zero_and_the_rest_still_count(
    sample_retriever, embedder
) -> None:
    def judge_reply(messages: list[dict]) -> str:
        # The judgement of the third question is unreadable.
        return "no verdict" if "AIP-4031" in messages[-1]["content"] else VERDICT

    with FakeOpenAIServer() as answerer, FakeOpenAIServer(judge_reply) as judge:
        answerer.fail_next(1)  # the first question's answer gets HTTP 500, without retries
        report = evaluate(sample_retriever, embedder, answerer, judge)

    by_id = {a.question_id: a for a in report.answers}
    assert (by_id["a01"].correctness, by_id["a01"].faithfulness) == (0.0, 0.0)
    assert by_id["a01"].error.startswith("answer failed") and "HTTP 500" in by_id["a01"].error
    assert by_id["a02"].error is None and by_id["a02"].correctness == 1.0
    assert by_id["a03"].correctness == 0.0 and by_id["a03"].error.startswith("judgement failed")
    assert "no verdict" in by_id["a03"].error
    assert len(judge.chat_requests()) == 2  # nothing to judge for the failed answer
    summary = report.summary()
    assert summary["failed_questions"] == 2
    assert summary["correctness"] == pytest.approx(1 / 3)


def test_repeated_judgements_are_pinned_summarised_and_free_on_a_rerun(
    sample_retriever, embedder, tmp_path
) -> None:
    """Three verdicts per answer; the judge says 5 then 3 then 4 for every answer."""
    scores = {}

    def judge_reply(messages: list[dict]) -> str:
        seen = scores.setdefault(messages[-1]["content"], [5, 3, 4])
        return json.dumps({"correctness": seen.pop(0), "faithfulness": 5, "reasoning": "ok"})

    cache = JudgeCache(tmp_path / "judge.sqlite")
    with FakeOpenAIServer() as answerer, FakeOpenAIServer(judge_reply) as judge:
        report = evaluate(sample_retriever, embedder, answerer, judge, repeats=3, cache=cache)
        again = evaluate(sample_retriever, embedder, answerer, judge, repeats=3, cache=cache)
        judged = len(judge.chat_requests())
    summary = report.summary()
    assert (report.judge_repeats, report.judge_prompt_version) == (3, JUDGE_PROMPT_VERSION)
    assert summary["correctness"] == pytest.approx(0.8)
    assert summary["correctness_std"] == pytest.approx(0.163299, abs=1e-6)
    assert summary["judge_failures"] == 0
    assert judged == 3 * len(GOLDEN)  # the rerun's verdicts all came from the cache
    assert again.summary()["correctness"] == summary["correctness"]
