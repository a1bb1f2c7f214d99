"""LLM-as-judge through the real openai client (the local OpenAI-protocol server: no real
model runs here): verdicts parsed robustly, garbage counted as a failure and quoted, repeated
verdicts summarised by mean and spread, replies cached so a rerun asks nothing."""

import json
from itertools import count
from pathlib import Path

import pytest

from aiplatform_dagster.evaluation.judge import (
    JUDGE_SYSTEM_PROMPT,
    RepeatedVerdict,
    judge_repeatedly,
)
from aiplatform_dagster.evaluation.judge_cache import JudgeCache
from aiplatform_dagster.models.llm import LLMSettings
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

SOURCES = "[1] Paging policy (paging.md)\nThe page escalates to the secondary after 15 minutes."
ANSWER = "It escalates after 15 minutes [1]."
REFERENCE = "After 15 minutes without acknowledgement."


def judge(
    server: FakeOpenAIServer, repeats: int = 1, cache: JudgeCache | None = None, model: str = "j"
) -> RepeatedVerdict:
    settings = LLMSettings(
        model=model, base_url=server.base_url, api_key="sk-test", max_retries=0, timeout_s=2
    )
    return judge_repeatedly(
        settings.build_client(), model, "When does paging escalate?", REFERENCE, ANSWER, SOURCES,
        repeats, cache,
    )  # fmt: skip


def judge_with_reply(reply: str) -> tuple[RepeatedVerdict, FakeOpenAIServer]:
    with FakeOpenAIServer(chat_reply=lambda _: reply) as server:
        return judge(server), server


def verdict(correctness: int, faithfulness: int = 5) -> str:
    return json.dumps(
        {"correctness": correctness, "faithfulness": faithfulness, "reasoning": "Because."}
    )


def test_a_json_verdict_is_normalised_and_keeps_reasoning_and_usage() -> None:
    reply = '{"correctness": 4, "faithfulness": 5, "reasoning": "Correct and supported by [1]."}'
    result, server = judge_with_reply(reply)

    assert (result.correctness, result.faithfulness, result.verdicts) == (0.8, 1.0, 1)
    assert result.reasoning == "Correct and supported by [1]."
    assert result.completion_tokens == len(reply.split()) and result.prompt_tokens > 0
    system, user = server.requests[0].body["messages"]
    assert system["content"] == JUDGE_SYSTEM_PROMPT
    assert REFERENCE in user["content"] and ANSWER in user["content"] and SOURCES in user["content"]


def test_the_rubric_asks_for_both_scores_as_strict_json() -> None:
    for phrase in ("correctness", "faithfulness", "0 to 5", "JSON object", '"reasoning"'):
        assert phrase in JUDGE_SYSTEM_PROMPT


def test_a_verdict_in_a_code_fence_with_prose_around_it_is_read() -> None:
    verdict_json = '{"correctness": 2, "faithfulness": 3, "reasoning": "Partly."}'
    reply = f"Here is my verdict:\n```json\n{verdict_json}\n```\nHope this helps."

    result, _ = judge_with_reply(reply)
    assert (result.correctness, result.faithfulness, result.reasoning) == (0.4, 0.6, "Partly.")


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("The answer looks fine to me.", "no JSON object"),
        ('{"correctness": 4, "reasoning": "no faithfulness"}', "no integer 'faithfulness'"),
        (
            '{"correctness": 7, "faithfulness": 5, "reasoning": "too generous"}',
            "correctness=7 is outside 0..5",
        ),
        ('{"correctness": "high", "faithfulness": 5}', "no integer 'correctness'"),
    ],
)
def test_an_unreadable_verdict_is_a_failure_with_the_reply_quoted(reply: str, problem: str) -> None:
    result, _ = judge_with_reply(reply)
    assert not result.judged and (result.correctness, result.faithfulness) == (0.0, 0.0)
    assert len(result.failures) == 1
    assert problem in result.failures[0] and repr(reply) in result.failures[0]


def test_repeated_verdicts_give_a_mean_and_a_spread_and_skip_unreadable_ones() -> None:
    replies = iter([verdict(5), verdict(3), "no verdict today", verdict(4)])
    with FakeOpenAIServer(chat_reply=lambda _: next(replies)) as server:
        result = judge(server, repeats=4)
    assert result.verdicts == 3 and len(result.failures) == 1
    assert result.correctness == pytest.approx(0.8)  # (1.0 + 0.6 + 0.8) / 3, never NaN
    assert result.correctness_std == pytest.approx(0.163299, abs=1e-6)
    assert result.faithfulness == 1.0 and result.faithfulness_std == 0.0


def test_a_rerun_takes_every_reply_from_the_cache_and_costs_nothing(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "judge.sqlite")
    calls = count()
    with FakeOpenAIServer(chat_reply=lambda _: verdict(next(calls) % 6)) as server:
        first = judge(server, repeats=3, cache=cache)
        again = judge(server, repeats=3, cache=JudgeCache(tmp_path / "judge.sqlite"))
        asked = len(server.chat_requests())
        other_model = judge(server, repeats=1, cache=cache, model="another-judge")
    assert asked == 3  # the rerun asked nothing
    assert (again.correctness, again.correctness_std) == (first.correctness, first.correctness_std)
    assert (again.cached, again.prompt_tokens, again.completion_tokens) == (3, 0, 0)
    assert first.cached == 0 and first.correctness == pytest.approx(0.2)  # 0, 1, 2 out of 5
    assert other_model.cached == 0 and len(server.chat_requests()) == 4
