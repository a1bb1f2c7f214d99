"""Traces: JSON lines written as they happen, spans nested and timed, OpenTelemetry spans
exported, totals summarised from the events."""

import operator
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.errors import GraphInterrupt
from langgraph.graph import END, START, StateGraph
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from aiplatform_dagster.agents.threads import InvalidThreadId
from aiplatform_dagster.agents.tracing import (
    JsonLinesSink,
    OtelSink,
    Tracer,
    langsmith_env,
    open_tracer,
    read_trace,
    summarise,
    trace_path,
)
from aiplatform_dagster.config import load_settings


def file_tracer(path: Path) -> Tracer:
    return Tracer("thread-1", "run-1", [JsonLinesSink(path)])


def test_each_event_is_a_line_on_disk_as_soon_as_it_is_traced(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tracer = file_tracer(path)
    tracer.event("state", "running")
    assert [event["name"] for event in read_trace(path)] == ["running"]  # before any close
    with tracer.span("node", "researcher") as span:
        tracer.event("tool", "calculator", status="ok", duration_ms=2.0)
        span.set(prompt_tokens=12)
    tracer.close()
    events = read_trace(path)
    assert [(event["kind"], event["name"]) for event in events] == [
        ("state", "running"),
        ("tool", "calculator"),
        ("node", "researcher"),
    ]
    node = events[2]
    assert node["status"] == "ok" and node["prompt_tokens"] == 12 and node["duration_ms"] >= 0
    assert events[1]["parent_id"] == node["span_id"] and node["parent_id"] is None
    assert {event["thread_id"] for event in events} == {"thread-1"}
    assert {event["run_id"] for event in events} == {"run-1"}
    again = file_tracer(path)  # a resumed run appends to the thread's file
    again.event("state", "completed")
    again.close()
    assert len(read_trace(path)) == 4


def test_a_killed_process_keeps_the_events_it_traced(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    script = f"""
        import os, signal
        from pathlib import Path
        from aiplatform_dagster.agents.tracing import JsonLinesSink, Tracer
        tracer = Tracer("t", "r", [JsonLinesSink(Path({str(path)!r}))])
        tracer.event("node", "first")
        tracer.event("node", "second")
        os.kill(os.getpid(), signal.SIGKILL)
    """
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=Path(__file__).parents[2], check=False
    )
    assert killed.returncode == -9
    assert [event["name"] for event in read_trace(path)] == ["first", "second"]


def test_a_line_cut_short_at_the_end_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"kind": "node", "name": "a", "ts": "2025-01-01T00:00:00+00:00"}\n{"kind": "no'
    )
    assert [event["name"] for event in read_trace(path)] == ["a"]


def test_a_span_records_errors_and_interrupts_and_lets_them_through(tmp_path: Path) -> None:
    tracer = file_tracer(tmp_path / "t.jsonl")
    with pytest.raises(ZeroDivisionError), tracer.span("tool", "calculator"):
        1 / 0  # noqa: B018
    with pytest.raises(GraphInterrupt), tracer.span("node", "approve"):
        raise GraphInterrupt(())
    with tracer.span("tool", "sql_query") as span:
        span.set(status="refused")
    failed, interrupted, refused = tracer.events
    assert failed["status"] == "error" and failed["error"] == "ZeroDivisionError: division by zero"
    assert interrupted["status"] == "interrupted" and "error" not in interrupted
    assert refused["status"] == "refused"


def test_misused_kinds_and_fields_are_refused(tmp_path: Path) -> None:
    tracer = file_tracer(tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match="kind"):
        tracer.event("thought", "x")
    with pytest.raises(ValueError, match="thread_id"):
        tracer.event("node", "x", thread_id="other")


def test_the_summary_totals_calls_tokens_cost_and_wall_time(tmp_path: Path) -> None:
    tracer = file_tracer(tmp_path / "t.jsonl")
    with tracer.span("node", "planner"):
        tracer.event("llm", "gpt-4o-mini", prompt_tokens=100, completion_tokens=20, cost_usd=0.001)
        tracer.event("governance", "sql_query", status="refused")
    with tracer.span("node", "writer"):
        tracer.event("tool", "calculator", status="ok")
        tracer.event("llm", "gpt-4o-mini", prompt_tokens=50, completion_tokens=5, cost_usd=0.0005)
    summary = tracer.summary()
    assert summary.as_dict() | {"duration_ms": 0} == {
        "steps": 2,
        "llm_calls": 2,
        "tool_calls": 1,
        "refused": 1,
        "prompt_tokens": 150,
        "completion_tokens": 25,
        "cost_usd": 0.0015,
        "duration_ms": 0,
    }
    assert summary.duration_ms >= sum(
        e["duration_ms"] for e in tracer.events if e["kind"] == "node"
    )
    tracer.close()
    assert summarise(read_trace(tmp_path / "t.jsonl")) == summary
    assert summarise([]).steps == 0 and summarise([]).duration_ms == 0.0


def test_spans_opened_around_a_graph_parent_what_its_nodes_trace(tmp_path: Path) -> None:
    """LangGraph runs nodes in worker threads; their events still nest under the caller's span."""

    class State(TypedDict):
        seen: Annotated[list[str], operator.add]

    tracer = file_tracer(tmp_path / "t.jsonl")

    def node(state: State) -> dict[str, Any]:
        with tracer.span("node", "worker"):
            tracer.event("tool", "calculator")
        return {"seen": ["worker"]}

    graph = StateGraph(State)
    graph.add_node("worker", node)
    graph.add_edge(START, "worker")
    graph.add_edge("worker", END)
    with tracer.span("state", "workflow"):
        graph.compile().invoke({"seen": []})
    tool, worker, workflow = tracer.events
    assert tool["parent_id"] == worker["span_id"] and worker["parent_id"] == workflow["span_id"]


def test_the_otel_sink_exports_nested_spans_with_their_fields() -> None:
    exporter = InMemorySpanExporter()
    tracer = Tracer("thread-1", "run-1", [OtelSink(exporter=exporter)])
    with tracer.span("node", "researcher"):
        tracer.event("llm", "gpt-4o-mini", prompt_tokens=7, cost_usd=0.25, messages=["hi"])
        with pytest.raises(RuntimeError), tracer.span("tool", "http_get"):
            raise RuntimeError("host not allowed")
    tracer.close()  # flushes the batch
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"researcher", "gpt-4o-mini", "http_get"}
    node, llm, tool = spans["researcher"], spans["gpt-4o-mini"], spans["http_get"]
    assert llm.parent.span_id == node.context.span_id == tool.parent.span_id
    assert llm.context.trace_id == node.context.trace_id
    assert llm.attributes["agent.prompt_tokens"] == 7 and llm.attributes["agent.kind"] == "llm"
    assert llm.attributes["agent.messages"] == '["hi"]'
    assert node.attributes["agent.thread_id"] == "thread-1"
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.status.description == "RuntimeError: host not allowed"
    assert node.end_time - node.start_time >= tool.end_time - tool.start_time
    assert node.resource.attributes["service.name"] == "aiplatform-agents"


def test_open_tracer_writes_the_thread_file_and_adds_otel_when_configured(tmp_path: Path) -> None:
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)})
    path = trace_path(settings, "thread-9")
    assert path == tmp_path / "agents" / "traces" / "thread-9.jsonl"
    with open_tracer(settings, "thread-9") as tracer:
        assert [type(sink) for sink in tracer.sinks] == [JsonLinesSink]
        tracer.event("state", "running")
    assert read_trace(path)[0]["run_id"] == tracer.run_id
    with pytest.raises(InvalidThreadId):
        trace_path(settings, "../escape")
    configured = load_settings(
        {
            "AIPLATFORM_AGENTS_TRACE_DIR": str(tmp_path / "traces"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        }
    )
    with open_tracer(configured, "thread-9", run_id="r") as tracer:
        assert [type(sink) for sink in tracer.sinks] == [JsonLinesSink, OtelSink]
    assert trace_path(configured, "thread-9") == tmp_path / "traces" / "thread-9.jsonl"


def test_langsmith_is_enabled_only_by_its_key(tmp_path: Path) -> None:
    assert langsmith_env(load_settings({})) == {}
    assert langsmith_env(load_settings({"LANGSMITH_API_KEY": "ls-key"})) == {
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_API_KEY": "ls-key",
    }
