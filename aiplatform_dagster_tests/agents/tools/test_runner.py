"""The tool runner: validation before anything runs, retries, the circuit breaker, fallbacks and
timeouts, exercised with small tools defined here whose every call is counted."""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from aiplatform_dagster.agents.tools.base import (
    BreakerPolicy,
    BreakerState,
    ToolContext,
    ToolError,
    ToolOutcome,
    ToolRefused,
    ToolRegistry,
    ToolRunner,
    ToolSpec,
    ToolStatus,
    TransientToolError,
    UnknownToolError,
)

CONTEXT = ToolContext(thread_id="thread-1", agent="tester", call_id="step-1:0")


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    times: int = Field(default=1, ge=1, le=3)


class OtherInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int


class Script:
    """A tool body that plays a script of results (an exception is raised), counting calls."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.calls: list[EchoInput] = []

    def __call__(self, arguments: Any, context: ToolContext) -> Any:
        self.calls.append(arguments)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            raise step
        return step


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tool(name: str, run: Callable[..., Any], **options: Any) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=f"{name} for tests",
        permission="test",
        input_model=options.pop("input_model", EchoInput),
        run=run,
        **options,
    )


def runner_of(*specs: ToolSpec, clock: FakeClock | None = None) -> tuple[ToolRunner, list[float]]:
    """A runner over ``specs`` whose backoff sleeps are recorded, not slept."""
    sleeps: list[float] = []
    runner = ToolRunner(ToolRegistry(specs), clock=clock or FakeClock(), sleep=sleeps.append)
    return runner, sleeps


def test_arguments_that_fail_the_schema_are_refused_naming_the_field_and_nothing_runs() -> None:
    script = Script("ran")
    runner, _ = runner_of(tool("echo", script))

    wrong_type = runner.call("echo", {"text": ["a"], "times": 9, "colour": "red"}, CONTEXT)
    missing = runner.call("echo", "{}", CONTEXT)
    not_json = runner.call("echo", '{"text": "unterminated', CONTEXT)
    not_object = runner.call("echo", "[1, 2]", CONTEXT)

    assert script.calls == []
    for outcome in (wrong_type, missing, not_json, not_object):
        assert outcome.status is ToolStatus.INVALID_INPUT and outcome.attempts == 0
        assert "echo(text: string, times: integer = 1)" in outcome.content
        assert "nothing was run" in outcome.content
    assert "text: Input should be a valid string" in wrong_type.content
    assert "times: Input should be less than or equal to 3" in wrong_type.content
    assert "colour: Extra inputs are not permitted" in wrong_type.content
    assert "text: Field required" in missing.content
    assert "not valid JSON" in not_json.content
    assert "must be a JSON object, got list" in not_object.content
    assert runner.breaker("echo").state is BreakerState.CLOSED


def test_json_text_arguments_are_parsed_and_the_result_is_parsed_by_the_tool() -> None:
    spec = tool(
        "echo",
        lambda arguments, context: {"said": arguments.text * arguments.times},
        parse_output=lambda raw: (f"said {raw['said']}", raw),
    )
    runner, _ = runner_of(spec)

    outcome = runner.call("echo", json.dumps({"text": "ab", "times": 2}), CONTEXT)

    assert (outcome.tool, outcome.status, outcome.content) == ("echo", ToolStatus.OK, "said abab")
    assert outcome.data == {"said": "abab"} and outcome.attempts == 1
    assert outcome.duration_ms > 0 and outcome.fallback_used is None
    assert json.loads(json.dumps(outcome.as_dict()))["status"] == "ok"


def test_a_flaky_tool_is_retried_with_exponential_backoff_until_it_answers(caplog) -> None:
    script = Script(TransientToolError("503 from upstream"), ConnectionError("reset"), "fine")
    runner, sleeps = runner_of(tool("flaky", script, max_retries=2, backoff_s=0.5))

    with caplog.at_level(logging.WARNING, logger="aiplatform_dagster.agents.tools.base"):
        outcome = runner.call("flaky", {"text": "x"}, CONTEXT)

    assert (outcome.status, outcome.content, outcome.attempts) == (ToolStatus.OK, "fine", 3)
    assert len(script.calls) == 3 and sleeps == [0.5, 1.0]
    retries = [record.getMessage() for record in caplog.records]
    assert len(retries) == 2
    assert "503 from upstream on attempt 1 of 3; retrying in 0.5 s" in retries[0]
    assert "ConnectionError: reset on attempt 2 of 3; retrying in 1 s" in retries[1]


def test_retries_end_in_a_failure_that_says_how_often_it_was_tried() -> None:
    script = Script(TransientToolError("upstream down"))
    runner, sleeps = runner_of(tool("down", script, max_retries=2, backoff_s=0.1))

    outcome = runner.call("down", {"text": "x"}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED and outcome.attempts == 3
    assert outcome.content == "down failed: upstream down (3 attempts)"
    assert len(script.calls) == 3 and sleeps == [0.1, 0.2]


def test_a_permanent_error_or_a_refusal_is_not_retried() -> None:
    broken = Script(ToolError("the index is corrupt: rebuild it"))
    refusing = Script(ToolRefused("host not allowed"))
    buggy = Script(KeyError("oops"))
    runner, sleeps = runner_of(
        tool("broken", broken), tool("refusing", refusing), tool("buggy", buggy)
    )

    failed = runner.call("broken", {"text": "x"}, CONTEXT)
    refused = runner.call("refusing", {"text": "x"}, CONTEXT)
    bug = runner.call("buggy", {"text": "x"}, CONTEXT)

    assert (failed.status, failed.content) == (
        ToolStatus.FAILED,
        "the index is corrupt: rebuild it",
    )
    assert (refused.status, refused.content) == (ToolStatus.REFUSED, "host not allowed")
    assert (bug.status, bug.content) == (ToolStatus.FAILED, "buggy failed: KeyError: 'oops'")
    assert [len(s.calls) for s in (broken, refusing, buggy)] == [1, 1, 1] and sleeps == []


def test_the_breaker_opens_after_consecutive_failures_and_then_fails_fast() -> None:
    script = Script(ToolError("backend down"))
    clock = FakeClock()
    policy = BreakerPolicy(failures=3, cooldown_s=30)
    runner, _ = runner_of(tool("fragile", script, breaker=policy, max_retries=0), clock=clock)

    outcomes = [runner.call("fragile", {"text": "x"}, CONTEXT) for _ in range(5)]

    assert [o.status for o in outcomes] == [ToolStatus.FAILED] * 3 + [ToolStatus.CIRCUIT_OPEN] * 2
    assert len(script.calls) == 3  # the open breaker never reached the tool
    assert runner.breaker("fragile").state is BreakerState.OPEN
    assert "failed 3 times in a row" in outcomes[3].content
    assert "30 s more" in outcomes[3].content and outcomes[3].attempts == 0


def test_a_half_open_breaker_closes_on_a_successful_trial_and_reopens_on_a_failed_one() -> None:
    script = Script(ToolError("down"), ToolError("down"), "recovered", ToolError("down again"))
    clock = FakeClock()
    policy = BreakerPolicy(failures=2, cooldown_s=10)
    runner, _ = runner_of(tool("fragile", script, breaker=policy), clock=clock)
    breaker = runner.breaker("fragile")

    for _ in range(2):
        runner.call("fragile", {"text": "x"}, CONTEXT)
    assert breaker.state is BreakerState.OPEN
    clock.now += 9.9
    assert runner.call("fragile", {"text": "x"}, CONTEXT).status is ToolStatus.CIRCUIT_OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN

    trial = runner.call("fragile", {"text": "x"}, CONTEXT)
    assert (trial.status, trial.content) == (ToolStatus.OK, "recovered")
    assert breaker.state is BreakerState.CLOSED

    # Closed again, it takes two failures to open it; then a failed trial reopens it at once.
    for _ in range(2):
        runner.call("fragile", {"text": "x"}, CONTEXT)
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    calls = len(script.calls)
    assert runner.call("fragile", {"text": "x"}, CONTEXT).status is ToolStatus.FAILED
    assert len(script.calls) == calls + 1
    assert breaker.state is BreakerState.OPEN
    assert runner.call("fragile", {"text": "x"}, CONTEXT).status is ToolStatus.CIRCUIT_OPEN
    assert len(script.calls) == calls + 1


def test_only_one_trial_call_goes_through_a_half_open_breaker() -> None:
    clock = FakeClock()
    runner, _ = runner_of(tool("fragile", Script("ok"), breaker=BreakerPolicy(1, 5)), clock=clock)
    breaker = runner.breaker("fragile")
    breaker.record_failure()
    clock.now += 5

    assert breaker.allow() is True  # the trial
    assert breaker.allow() is False  # everyone else waits for its result
    breaker.release()  # a result that says nothing about the tool's health (a refusal)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow() is True


def test_refusals_and_bad_input_do_not_open_the_breaker() -> None:
    script = Script(ToolRefused("not allowed"))
    runner, _ = runner_of(tool("strict", script, breaker=BreakerPolicy(failures=2)))

    for _ in range(4):
        assert runner.call("strict", {"text": "x"}, CONTEXT).status is ToolStatus.REFUSED
        assert runner.call("strict", {}, CONTEXT).status is ToolStatus.INVALID_INPUT

    assert runner.breaker("strict").state is BreakerState.CLOSED and len(script.calls) == 4


def test_the_fallback_answers_when_the_primary_fails() -> None:
    primary = Script(TransientToolError("primary down"))
    backup = Script("answer from the backup")
    runner, _ = runner_of(
        tool("primary", primary, fallback="backup", max_retries=1), tool("backup", backup)
    )

    outcome = runner.call("primary", {"text": "x"}, CONTEXT)

    assert outcome.tool == "primary" and outcome.fallback_used == "backup"
    assert outcome.status is ToolStatus.OK and outcome.attempts == 3
    assert outcome.content.endswith("answer from the backup")
    assert "primary failed: primary down (2 attempts); answered by fallback backup" in (
        outcome.content
    )
    assert [c.text for c in backup.calls] == ["x"]


def test_an_open_breaker_sends_calls_to_the_fallback_without_calling_the_primary() -> None:
    primary, backup = Script(ToolError("down")), Script("backup answer")
    policy = BreakerPolicy(failures=1, cooldown_s=60)
    runner, _ = runner_of(
        tool("primary", primary, fallback="backup", breaker=policy), tool("backup", backup)
    )

    first = runner.call("primary", {"text": "x"}, CONTEXT)
    second = runner.call("primary", {"text": "x"}, CONTEXT)

    assert first.fallback_used == second.fallback_used == "backup"
    assert "is unavailable" in second.content and second.status is ToolStatus.OK
    assert len(primary.calls) == 1 and len(backup.calls) == 2


def test_a_fallback_that_cannot_take_the_arguments_is_not_called() -> None:
    backup = Script("never")
    runner, _ = runner_of(
        tool("primary", Script(ToolError("down")), fallback="numbers"),
        tool("numbers", backup, input_model=OtherInput),
    )

    outcome = runner.call("primary", {"text": "x"}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED and outcome.fallback_used is None
    assert "fallback numbers not used: these arguments do not fit its input" in outcome.content
    assert backup.calls == []


def test_fallbacks_that_point_at_each_other_are_each_tried_once() -> None:
    first, second = Script(ToolError("first down")), Script(ToolError("second down"))
    runner, _ = runner_of(
        tool("first", first, fallback="second"), tool("second", second, fallback="first")
    )

    outcome = runner.call("first", {"text": "x"}, CONTEXT)

    assert outcome.status is ToolStatus.FAILED and outcome.fallback_used == "second"
    assert "first down" in outcome.content and "fallback second also failed" in outcome.content
    assert len(first.calls) == len(second.calls) == 1


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """Released at teardown, so the timed-out worker threads end."""
    release = threading.Event()
    yield release
    release.set()


def test_a_call_that_runs_past_its_timeout_is_abandoned_and_retried(stuck) -> None:
    def hang(arguments: EchoInput, context: ToolContext) -> str:
        stuck.wait(30)
        return "too late"

    runner, sleeps = runner_of(tool("slow", hang, timeout_s=0.2, max_retries=1, backoff_s=0.01))

    started = time.monotonic()
    outcome = runner.call("slow", {"text": "x"}, CONTEXT)

    assert time.monotonic() - started < 2
    assert outcome.status is ToolStatus.TIMEOUT and outcome.attempts == 2
    assert outcome.content == "slow timed out after 0.2 s (2 attempts)"
    assert sleeps == [0.01]
    assert runner.breaker("slow").state is BreakerState.CLOSED  # one failed call of three


def test_a_tool_may_return_a_complete_outcome() -> None:
    def counted(arguments: EchoInput, context: ToolContext) -> ToolOutcome:
        return ToolOutcome("ignored", ToolStatus.OK, "done", prompt_tokens=3, replayed=True)

    runner, _ = runner_of(tool("rich", counted))

    outcome = runner.call("rich", {"text": "x"}, CONTEXT)

    assert (outcome.tool, outcome.content, outcome.prompt_tokens) == ("rich", "done", 3)
    assert outcome.replayed and outcome.attempts == 1


def test_unknown_tools_and_inconsistent_registries_are_programming_errors() -> None:
    runner, _ = runner_of(tool("echo", Script("x")))
    with pytest.raises(UnknownToolError, match=r"no tool is named 'ech'; known tools: \['echo'\]"):
        runner.call("ech", {}, CONTEXT)
    with pytest.raises(ValueError, match="two tools are named 'echo'"):
        ToolRegistry([tool("echo", Script("x")), tool("echo", Script("y"))])
    with pytest.raises(ValueError, match="falls back to 'nothing', which is not registered"):
        ToolRegistry([tool("echo", Script("x"), fallback="nothing")])


def test_the_idempotency_key_is_the_same_for_the_same_call_only() -> None:
    again = ToolContext("thread-1", "another agent", "step-1:0")
    other_call = ToolContext("thread-1", "tester", "step-1:1")
    other_thread = ToolContext("thread-2", "tester", "step-1:0")

    assert CONTEXT.idempotency_key == again.idempotency_key
    assert (
        len({CONTEXT.idempotency_key, other_call.idempotency_key, other_thread.idempotency_key})
        == 3
    )
    assert len(CONTEXT.idempotency_key) == 32


def test_the_openai_schema_describes_the_arguments() -> None:
    schema = tool("echo", Script("x")).openai_schema()

    assert schema["type"] == "function"
    function = schema["function"]
    assert (function["name"], function["description"]) == ("echo", "echo for tests")
    parameters = function["parameters"]
    assert parameters["required"] == ["text"] and parameters["additionalProperties"] is False
    assert set(parameters["properties"]) == {"text", "times"}
