"""The evaluation suite: the shipped one loads and passes against the scripted model through the
real runtime, and each expectation fails a task that misses it, with the reason."""

from pathlib import Path

import pytest
import yaml

from aiplatform_dagster.agents.definitions import Mode
from aiplatform_dagster.agents.evaluation import (
    ERROR,
    EvalSuite,
    SuiteError,
    load_suite,
    run_suite,
)
from aiplatform_dagster.agents.runtime import open_runtime
from aiplatform_dagster.agents.threads import ThreadStatus
from aiplatform_dagster_tests.agents.conftest import SettingsFactory


def suite_of(*tasks: dict) -> EvalSuite:
    return EvalSuite.model_validate({"tasks": tasks, "source": "test"})


def test_the_shipped_suite_covers_every_mode_and_passes_on_the_scripted_model(
    agent_settings: SettingsFactory,
) -> None:
    suite = load_suite()
    assert {task.mode for task in suite.tasks} == set(Mode)
    seen = []
    with open_runtime(agent_settings()) as runtime:
        report = run_suite(runtime, suite, seen.append)

    assert [task.task for task in seen] == [task.id for task in suite.tasks]
    assert [task.failures for task in report.tasks] == [()] * len(suite.tasks)
    assert report.success_rate == 1.0 and report.passed == len(suite.tasks)
    by_task = {task.task: task for task in report.tasks}
    assert "391" in by_task["multiply"].answer
    assert (by_task["forbidden_sql"].refused, by_task["forbidden_sql"].tool_calls) == (1, 1)
    assert by_task["two_questions"].tool_calls == 2
    modes = {summary.mode: summary for summary in report.modes()}
    assert list(modes) == [mode.value for mode in Mode]
    sequential = modes["sequential"]
    assert (sequential.tasks, sequential.passed, sequential.success_rate) == (3, 3, 1.0)
    for summary in modes.values():
        assert summary.success_rate == 1.0
        assert summary.steps >= 4 and summary.tokens > 0 and summary.cost_usd > 0
        assert 0 < summary.latency_p50_ms <= summary.latency_p95_ms
    assert all(task.thread_id.startswith(f"eval-{task.task}-") for task in report.tasks)


def test_each_expectation_fails_a_task_that_misses_it(agent_settings: SettingsFactory) -> None:
    calculate = 'What is 2 + 3? CALL calculator {"expression": "2+3"}'
    suite = suite_of(
        {
            "id": "wrong_number",
            "mode": "sequential",
            "agent": "researcher",
            "request": calculate,
            "expected": {"answer_contains": ["5", "six"], "min_tool_calls": 2, "refused": 1},
        },
        {
            "id": "too_many_calls",
            "mode": "sequential",
            "agent": "researcher",
            "request": calculate,
            "expected": {"max_tool_calls": 0, "never_runs": ["calculator"]},
        },
        {
            "id": "expects_failure",
            "mode": "sequential",
            "agent": "researcher",
            "request": calculate,
            "expected": {"status": "failed"},
        },
        {"id": "no_such_agent", "mode": "sequential", "agent": "ghost", "request": calculate},
    )
    with open_runtime(agent_settings()) as runtime:
        report = run_suite(runtime, suite)

    failures = {task.task: task.failures for task in report.tasks}
    assert failures["wrong_number"] == (
        "answer lacks 'six'",
        "1 tool calls, expected at least 2",
        "0 calls refused, expected 1",
    )
    assert failures["too_many_calls"] == (
        "1 tool calls, expected at most 0",
        "ran calculator, which governance must refuse",
    )
    assert failures["expects_failure"] == ("ended completed, expected failed",)
    [error] = failures["no_such_agent"]
    assert error.startswith("RegistryError: no agent named 'ghost'")
    assert report.tasks[-1].status == ERROR and report.tasks[-1].tokens == 0
    assert report.passed == 0 and report.success_rate == 0.0
    [summary] = report.modes()
    assert (summary.tasks, summary.passed, summary.success_rate) == (4, 0, 0.0)


def test_a_task_that_stops_for_a_human_fails_and_leaves_no_thread_waiting(
    agent_settings: SettingsFactory,
) -> None:
    suite = suite_of(
        {
            "id": "needs_approval",
            "mode": "sequential",
            "agent": "reporter",
            "request": 'Publish it. CALL publish_report {"title": "T", "body": "B"}',
        }
    )
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        [task] = run_suite(runtime, suite).tasks
        assert runtime.waiting() == []
        record = runtime.threads.get(task.thread_id)

    assert not task.passed and task.refused == 1
    assert task.failures[0].startswith("stopped for a human (reporter asks to call publish_report")
    assert record is not None and record.status == ThreadStatus.COMPLETED
    assert not (settings.paths.storage_dir / "agents" / "reports").exists()


def write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_an_invalid_suite_is_refused_with_the_file_and_the_field(tmp_path: Path) -> None:
    task = {"id": "a", "mode": "sequential", "agent": "researcher", "request": "hi"}
    cases = {
        "twice.yaml": ({"tasks": [task, task]}, "task ids must be unique; repeated: ['a']"),
        "mode.yaml": ({"tasks": [{**task, "mode": "swarm"}]}, "field tasks.0.mode"),
        "typo.yaml": (
            {"tasks": [{**task, "expected": {"answer_contain": ["x"]}}]},
            "field tasks.0.expected.answer_contain",
        ),
        "empty.yaml": ({"tasks": []}, "field tasks"),
    }
    for name, (document, message) in cases.items():
        path = write(tmp_path / name, document)
        with pytest.raises(SuiteError, match=str(path)) as raised:
            load_suite(path)
        assert message in str(raised.value)
    with pytest.raises(SuiteError, match="not a readable YAML"):
        load_suite(tmp_path / "missing.yaml")
