"""The three workflow modes end to end: the real runtime, LangGraph, the SQLite checkpointer and
the shipped tools, with the scripted model behind the fake OpenAI server (no LLM is reachable)."""

import json
import threading
from pathlib import Path

import pytest

from aiplatform_dagster.agents.runtime import AgentRunError, open_runtime
from aiplatform_dagster.agents.threads import ThreadStatus
from aiplatform_dagster.agents.tools.reports import reports_dir
from aiplatform_dagster.agents.tracing import read_trace, trace_path
from aiplatform_dagster.config import load_settings
from aiplatform_dagster.models.llm import LLMError
from aiplatform_dagster_tests.agents.conftest import SettingsFactory, write_registry
from aiplatform_dagster_tests.agents.extra_tools import broken_tool, slow_tool, with_tools
from aiplatform_dagster_tests.fake_openai import FakeOpenAIServer, word_count

REPORT_CALL = 'CALL publish_report {"title": "Q3 summary", "body": "Revenue grew [q3.md#0]."}'


def nodes_traced(settings, thread_id: str) -> list[str]:
    events = read_trace(trace_path(settings, thread_id))
    return [event["name"] for event in events if event["kind"] == "node"]


def test_sequential_mode_plans_calls_a_tool_and_validates(agent_settings: SettingsFactory):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        result = runtime.run(
            'What is 17 * 23? CALL calculator {"expression": "17*23"}', agent="researcher"
        )
        record = runtime.threads.get(result.thread_id)
    assert (result.status, result.mode) == ("completed", "sequential")
    assert "17*23 = 391" in result.answer
    assert result.spend["tool_calls"] == 1
    assert result.spend["llm_calls"] == 3  # plan, answer from the result, validate
    assert nodes_traced(settings, result.thread_id) == [
        "planner", "executor", "planner", "validator", "finish"
    ]  # fmt: skip
    assert result.trace["prompt_tokens"] == result.spend["prompt_tokens"] > 0
    assert record.status == ThreadStatus.COMPLETED


def test_parallel_mode_fans_subtasks_out_and_aggregates(agent_settings: SettingsFactory):
    settings = agent_settings()
    request = (
        "Two sums, please.\n"
        '- six times seven CALL calculator {"expression": "6*7"}\n'
        '- two plus two CALL calculator {"expression": "2+2"}'
    )
    with open_runtime(settings) as runtime:
        result = runtime.run(request, agent="research_pool")
    assert (result.status, result.mode) == ("completed", "parallel")
    assert sorted(h["task"].split(" CALL")[0] for h in result.handoffs) == [
        "six times seven", "two plus two"
    ]  # fmt: skip
    assert all(h["status"] == "completed" for h in result.handoffs)
    assert "6*7 = 42" in result.answer and "2+2 = 4" in result.answer
    assert nodes_traced(settings, result.thread_id).count("worker") == 2


def test_hierarchical_mode_delegates_under_each_sub_agents_own_permissions(
    agent_settings: SettingsFactory,
):
    settings = agent_settings()
    request = (
        "Answer both parts.\n"
        'DELEGATE researcher: add CALL calculator {"expression": "1+1"}\n'
        'DELEGATE analyst: search CALL search_knowledge_base {"query": "pricing"}'
    )
    with open_runtime(settings) as runtime:
        result = runtime.run(request, agent="coordinator")
    assert (result.status, result.mode) == ("completed", "hierarchical")
    by_agent = {h["agent"]: h for h in result.handoffs}
    assert by_agent["researcher"]["status"] == "completed"
    assert "1+1 = 2" in by_agent["researcher"]["answer"]
    # The analyst may not search the knowledge base: its call is refused, never run.
    refused = [r for r in result.tool_results if r["agent"] == "analyst"]
    assert [(r["tool"], r["status"]) for r in refused] == [("search_knowledge_base", "refused")]
    assert result.trace["refused"] == 1
    assert "1+1 = 2" in result.answer


def test_a_tool_outside_the_agents_permissions_is_refused_and_never_runs(
    agent_settings: SettingsFactory,
):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        result = runtime.run(f"Publish it. {REPORT_CALL}", agent="researcher")
    assert [(r["tool"], r["status"]) for r in result.tool_results] == [
        ("publish_report", "refused")
    ]
    assert not reports_dir(settings).exists() or not any(reports_dir(settings).iterdir())
    refusals = [
        e for e in read_trace(trace_path(settings, result.thread_id)) if e["kind"] == "governance"
    ]
    assert refusals[0]["tool"] == "publish_report" and "may not call" in refusals[0]["reason"]
    assert "refused" in result.answer  # the model was told, so the user is too


BOUNDED = {
    "name": "bounded",
    "tools": ["calculator", "slow"],
    "permissions": ["math", "test"],
}


@pytest.mark.parametrize(
    ("limits", "request_text", "breached"),
    [
        ({"max_tokens": 12}, 'CALL calculator {"expression": "1+1"}', "max_tokens"),
        (
            {"max_tool_calls": 1},
            'CALL calculator {"expression": "1+1"} CALL calculator {"expression": "2+2"}',
            "max_tool_calls",
        ),
        ({"max_cost_usd": 0.000001}, 'CALL calculator {"expression": "1+1"}', "max_cost_usd"),
        ({"max_wall_s": 0.5}, "CALL slow {}", "max_wall_s"),
    ],
)
def test_each_budget_breach_stops_the_workflow_with_its_status(
    agent_settings: SettingsFactory, tmp_path: Path, limits, request_text, breached
):
    registry = write_registry(tmp_path, {**BOUNDED, "limits": limits})
    settings = agent_settings(AIPLATFORM_AGENTS_REGISTRY=str(registry))
    with open_runtime(settings, tools=with_tools(settings, slow_tool(0.6))) as runtime:
        result = runtime.run(f"Do it. {request_text}", agent="bounded")
        record = runtime.threads.get(result.thread_id)
    assert result.status == "budget_exceeded"
    assert result.reason.startswith(f"{breached} budget exceeded")
    assert f"limits.{breached}" in result.reason  # says which setting raises it
    assert record.status == ThreadStatus.BUDGET_EXCEEDED
    if breached == "max_tool_calls":
        assert [r["tool"] for r in result.tool_results] == ["calculator"]  # the 2nd never ran


def test_a_failing_tool_leaves_a_partial_answer_marked_partial(
    agent_settings: SettingsFactory, tmp_path: Path
):
    registry = write_registry(tmp_path, {**BOUNDED, "tools": ["broken"], "permissions": ["test"]})
    settings = agent_settings(AIPLATFORM_AGENTS_REGISTRY=str(registry))
    with open_runtime(settings, tools=with_tools(settings, broken_tool())) as runtime:
        result = runtime.run("Do it. CALL broken {}", agent="bounded")
    assert result.status == "partial"
    assert "failed" in result.reason
    assert result.tool_results[0]["status"] == "failed"


def test_approval_pauses_the_workflow_and_resume_continues_it(agent_settings: SettingsFactory):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        paused = runtime.run(f"Write it up. {REPORT_CALL}", agent="reporter")
        assert paused.status == "waiting"
        assert "publish_report" in paused.reason
        assert [t.thread_id for t in runtime.waiting()] == [paused.thread_id]
        assert not reports_dir(settings).exists()  # nothing ran before the human said yes
    with open_runtime(settings) as runtime:  # a new process would do the same
        done = runtime.resume(paused.thread_id, approve=True, note="looks right")
        assert runtime.waiting() == []
    assert done.status == "completed"
    reports = list(reports_dir(settings).iterdir())
    assert len(reports) == 1 and "Revenue grew [q3.md#0]." in reports[0].read_text()


def test_a_rejected_call_is_not_run_and_the_model_hears_why(agent_settings: SettingsFactory):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        paused = runtime.run(f"Write it up. {REPORT_CALL}", agent="reporter")
        done = runtime.resume(paused.thread_id, approve=False, note="numbers unchecked")
    assert done.status == "completed"
    assert done.tool_results[0]["status"] == "refused"
    assert "numbers unchecked" in done.answer
    assert not reports_dir(settings).exists() or not any(reports_dir(settings).iterdir())


def test_the_validator_sends_work_back_once_then_asks_a_human(
    agent_settings: SettingsFactory, model_server: FakeOpenAIServer
):
    settings = agent_settings()
    request = 'VALIDATOR:revise What is 2+2? CALL calculator {"expression": "2+2"}'
    with open_runtime(settings) as runtime:
        paused = runtime.run(request, agent="researcher")
        assert paused.status == "waiting"
        assert "rejected the draft twice: cite a source" in paused.reason
        revision_asks = [
            r
            for r in model_server.chat_requests()
            if any(
                "asked for a revision: cite a source" in str(m.get("content"))
                for m in r.body["messages"]
            )
        ]
        assert revision_asks  # the planner heard the validator's reason
        done = runtime.resume(paused.thread_id, approve=False, note="still uncited")
    assert done.status == "rejected"
    assert "still uncited" in done.reason


def test_resuming_after_the_workflow_changed_is_refused(
    agent_settings: SettingsFactory, tmp_path: Path
):
    writer = {
        "name": "writer",
        "tools": ["publish_report"],
        "permissions": ["reports:write"],
        "escalation": {"approve_tools": ["publish_report"]},
    }
    registry = write_registry(tmp_path, writer)
    settings = agent_settings(AIPLATFORM_AGENTS_REGISTRY=str(registry))
    with open_runtime(settings) as runtime:
        paused = runtime.run(f"Publish. {REPORT_CALL}", agent="writer")
    write_registry(tmp_path, {**writer, "role": "You are a different writer now."})
    with open_runtime(settings) as runtime, pytest.raises(AgentRunError, match="graph version"):
        runtime.resume(paused.thread_id, approve=True)
    assert not reports_dir(settings).exists()


def test_without_an_llm_a_run_fails_at_once_saying_how_to_configure_one(tmp_path: Path):
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)})
    with pytest.raises(LLMError) as raised, open_runtime(settings):
        pass
    message = str(raised.value)
    for fix in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AIPLATFORM_LLM_BASE_URL", "Ollama"):
        assert fix in message
    assert not (tmp_path / "agents").exists()  # no thread was created


def test_run_result_is_json_for_the_cli_and_the_api(agent_settings: SettingsFactory):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        result = runtime.run('CALL calculator {"expression": "2*21"}', agent="researcher")
    payload = json.loads(json.dumps(result.as_dict()))
    assert payload["thread_id"] == result.thread_id and payload["status"] == "completed"


def test_two_resumes_of_one_waiting_thread_run_it_once(agent_settings: SettingsFactory):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        paused = runtime.run(f"Write it up. {REPORT_CALL}", agent="reporter")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def resume() -> None:
        with open_runtime(settings) as runtime:
            barrier.wait()
            try:
                outcomes.append(runtime.resume(paused.thread_id, approve=True).status)
            except AgentRunError as error:
                outcomes.append(str(error))

    workers = [threading.Thread(target=resume) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(outcomes) == 2 and outcomes.count("completed") == 1
    refused = next(outcome for outcome in outcomes if outcome != "completed")
    assert f"thread {paused.thread_id} is no longer waiting: another resume took it" in refused
    assert len(list(reports_dir(settings).iterdir())) == 1


def test_a_run_naming_an_existing_thread_is_refused(agent_settings: SettingsFactory):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        runtime.run('CALL calculator {"expression": "1+1"}', agent="researcher", thread_id="t-1")
        with pytest.raises(AgentRunError, match="thread t-1 already exists"):
            runtime.run("again", agent="researcher", thread_id="t-1")


def test_tokens_of_a_tool_that_calls_the_model_count_against_the_budget(
    agent_settings: SettingsFactory, model_server: FakeOpenAIServer
):
    settings = agent_settings()
    with open_runtime(settings) as runtime:
        result = runtime.run('Summarise. CALL llm_call {"prompt": "say hi"}', agent="web_reader")
    assert result.status == "completed"
    assert [r["tool"] for r in result.tool_results] == ["llm_call"]
    billed = sum(
        sum(word_count(str(m.get("content") or "")) for m in r.body["messages"])
        for r in model_server.chat_requests()
    )
    assert len(model_server.chat_requests()) == 4  # plan, the tool's call, answer, validate
    assert result.spend["prompt_tokens"] == billed  # the tool's own call included
    assert result.trace["prompt_tokens"] == billed
