"""LLM-as-judge through the real openai client: verdicts parsed robustly, garbage rejected."""

import pytest

from aiplatform_dagster.evaluation.judge import JUDGE_SYSTEM_PROMPT, JudgeError, judge_answer
from aiplatform_dagster.models.llm import LLMSettings
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer

SOURCES = "[1] Paging policy (paging.md)\nThe page escalates to the secondary after 15 minutes."
ANSWER = "It escalates after 15 minutes [1]."
REFERENCE = "After 15 minutes without acknowledgement."


def judge_with_reply(reply: str):
    with FakeOpenAIServer(chat_reply=lambda _: reply) as server:
        settings = LLMSettings(
            base_url=server.base_url, api_key="sk-test", max_retries=0, timeout_s=2
        )
        verdict = judge_answer(
            settings.build_client(), "When does paging escalate?", REFERENCE, ANSWER, SOURCES
        )
    return verdict, server


def test_a_json_verdict_is_normalised_and_keeps_raw_scores_and_usage() -> None:
    reply = '{"correctness": 4, "faithfulness": 5, "reasoning": "Correct and supported by [1]."}'
    verdict, server = judge_with_reply(reply)

    assert (verdict.correctness, verdict.faithfulness) == (0.8, 1.0)
    assert (verdict.correctness_raw, verdict.faithfulness_raw) == (4, 5)
    assert verdict.reasoning == "Correct and supported by [1]."
    assert verdict.completion_tokens == len(reply.split()) and verdict.prompt_tokens > 0
    system, user = server.requests[0].body["messages"]
    assert system["content"] == JUDGE_SYSTEM_PROMPT
    assert REFERENCE in user["content"] and ANSWER in user["content"] and SOURCES in user["content"]


def test_the_rubric_asks_for_both_scores_as_strict_json() -> None:
    for phrase in ("correctness", "faithfulness", "0 to 5", "JSON object", '"reasoning"'):
        assert phrase in JUDGE_SYSTEM_PROMPT


def test_a_verdict_in_a_code_fence_with_prose_around_it_is_read() -> None:
    verdict_json = '{"correctness": 2, "faithfulness": 3, "reasoning": "Partly."}'
    reply = f"Here is my verdict:\n```json\n{verdict_json}\n```\nHope this helps."

    verdict, _ = judge_with_reply(reply)
    assert (verdict.correctness_raw, verdict.faithfulness_raw, verdict.reasoning) == (
        2,
        3,
        "Partly.",
    )


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
def test_an_unreadable_verdict_raises_with_the_reply_quoted(reply: str, problem: str) -> None:
    with pytest.raises(JudgeError) as raised:
        judge_with_reply(reply)
    assert problem in str(raised.value)
    assert repr(reply) in str(raised.value)
