"""(j) What agent orchestration adds per step, against calling the same model and tool directly.

The model is an in-process object that replies at once, scripted for the sequential researcher
(plan: one calculator call; after the result: an answer; the validator: accept), so what is
measured is the orchestration alone: the LangGraph graph, a checkpoint written before every
step (``durability="sync"``), governance, the tool runner, traces and the thread index.

Measured in one process:

- direct: the same three model turns on the same message shapes and the calculator called
  directly (arguments parsed and validated, run, output parsed): no graph, no checkpoints, no
  governance, no traces;
- orchestrated: ``AgentRuntime.run`` of the researcher end to end, on SQLite and on PostgreSQL
  (a throwaway database created through an admin DSN and dropped afterwards), after warm-up
  runs; every checkpoint write (``put``, ``put_writes``) the runs make is timed;
- governance (permission check and budget check of one tool call) and one trace event written
  to a JSON-lines file, each timed directly.
"""

import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

from tqdm import tqdm

from aiplatform_dagster.agents.checkpoints import migrate
from aiplatform_dagster.agents.definitions import load_registry
from aiplatform_dagster.agents.governance import refusal
from aiplatform_dagster.agents.runtime import AgentRuntime, open_runtime
from aiplatform_dagster.agents.state import spend
from aiplatform_dagster.agents.tools.base import ToolContext
from aiplatform_dagster.agents.tools.calculator import calculator_tool
from aiplatform_dagster.agents.tools.catalog import TOOL_PERMISSIONS
from aiplatform_dagster.agents.tracing import open_tracer
from aiplatform_dagster.agents.workflows.sequential import VALIDATOR_PROMPT
from aiplatform_dagster.agents.workflows.steps import Budget
from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster.evaluation.latency import percentiles
from aiplatform_dagster.models.llm import ChatTurn, ToolCall

AGENT = "researcher"
EXPRESSION = "17 * 23"
REQUEST = "What is 17 * 23?"
MODEL = "gpt-4o-mini"
"""A priced model, so each turn's cost is computed as it would be for a real one."""
PROMPT_TOKENS, COMPLETION_TOKENS = 120, 20
DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
WRITE_METHODS = ("put", "put_writes")
GOVERNANCE_BATCH = 100
"""Governance checks take about a microsecond: each sample is the mean of a batch of this many."""


class InstantChat:
    """A tool-using chat model that answers at once, scripted for the sequential researcher:
    its first turn calls the calculator, its turn after the tool result answers with it, and
    the validator accepts. Token counts are fixed."""

    def __init__(self, expression: str = EXPRESSION) -> None:
        self.arguments = json.dumps({"expression": expression})
        self.calls = 0

    def chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] = ()
    ) -> ChatTurn:
        self.calls += 1
        if messages[0].get("content") == VALIDATOR_PROMPT:
            return self._turn(json.dumps({"verdict": "accept"}))
        results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
        if results:
            return self._turn("Done: " + " | ".join(results))
        return self._turn(None, (ToolCall("call_0", "calculator", self.arguments),))

    def _turn(self, text: str | None, calls: tuple[ToolCall, ...] = ()) -> ChatTurn:
        return ChatTurn(text, calls, PROMPT_TOKENS, COMPLETION_TOKENS, MODEL)


def bench_agents(
    runs: int = 200,
    *,
    warmup: int = 10,
    postgres_dsn: str | None = DEFAULT_POSTGRES_DSN,
    progress: bool = True,
) -> dict[str, Any]:
    """The figures of (j). ``postgres_dsn`` is an admin DSN that may create and drop a database
    (None: SQLite only); when the server cannot be reached, ``postgres`` says why it was
    skipped."""
    if runs < 1:
        raise ValueError("the agent benchmark needs at least one run per backend")
    with tempfile.TemporaryDirectory(prefix="bench-agents-") as folder:
        root = Path(folder)
        sqlite_settings = _settings(root / "sqlite")
        direct = _bench_direct(sqlite_settings, runs + warmup, warmup)
        sqlite = _bench_backend(sqlite_settings, "SQLite", runs, warmup, progress)
        postgres: dict[str, Any]
        if postgres_dsn is None:
            postgres = {"skipped": "no PostgreSQL DSN given"}
        else:
            try:
                with _throwaway_database(postgres_dsn) as dsn:
                    settings = _settings(root / "postgres", AIPLATFORM_AGENTS_CHECKPOINT_DSN=dsn)
                    postgres = _bench_backend(settings, "PostgreSQL", runs, warmup, progress)
            except _Unreachable as error:
                postgres = {"skipped": str(error)}
        governance_us = _bench_governance(sqlite_settings)
        trace_us = _bench_trace_event(sqlite_settings)
    for backend in (sqlite, postgres):
        if "skipped" not in backend:
            _compare(backend, direct["p50_ms"])
    return {
        "agent": AGENT,
        "runs": runs,
        "warmup": warmup,
        "direct_p50_ms": direct["p50_ms"],
        "direct_p95_ms": direct["p95_ms"],
        "direct_llm_calls": direct["llm_calls"],
        "direct_tool_calls": direct["tool_calls"],
        "sqlite": sqlite,
        "postgres": postgres,
        "governance_p50_us": statistics.median(governance_us),
        "trace_event_p50_us": statistics.median(trace_us),
        "trace_event_p95_us": percentiles(trace_us, (95,))["p95_ms"],
    }


def _settings(storage: Path, **env: str) -> Settings:
    settings = load_settings({"AIPLATFORM_STORAGE_DIR": str(storage), **env})
    migrate(settings)
    return settings


def _bench_direct(settings: Settings, repeats: int, warmup: int) -> dict[str, Any]:
    """The workflow's model turns and tool call, made directly."""
    agent = load_registry(settings.agents.registry).get(AGENT)
    tool = calculator_tool()
    schemas = [tool.openai_schema()]
    chat = InstantChat()
    context = ToolContext("direct", AGENT, "s0:0")

    def workflow() -> tuple[int, int]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": agent.role},
            {"role": "user", "content": REQUEST},
        ]
        turn = chat.chat(messages, schemas)
        messages.append(turn.as_message())
        results = []
        for call in turn.tool_calls:
            parsed = tool.input_model.model_validate(json.loads(call.arguments))
            content, _ = tool.parse_output(tool.run(parsed, context))
            results.append(f"- {call.name} (ok): {content}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        draft = chat.chat(messages, schemas).text or ""
        review = [
            {"role": "system", "content": VALIDATOR_PROMPT},
            {
                "role": "user",
                "content": f"Request: {REQUEST}\n\nTool results:\n"
                + "\n".join(results)
                + f"\n\nDraft answer:\n{draft}",
            },
        ]
        verdict = json.loads(chat.chat(review).text or "{}")
        if verdict.get("verdict") != "accept" or "391" not in draft:
            raise RuntimeError(f"the direct workflow went wrong: {verdict}, {draft!r}")
        return 3, len(turn.tool_calls)

    times = []
    for index in range(repeats):
        started = time.perf_counter()
        llm_calls, tool_calls = workflow()
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": percentiles(times, (95,))["p95_ms"],
        "llm_calls": llm_calls,
        "tool_calls": tool_calls,
    }


def _bench_backend(
    settings: Settings, backend: str, runs: int, warmup: int, progress: bool
) -> dict[str, Any]:
    """``runs`` researcher workflows through the runtime (after ``warmup`` more), each timed
    end to end, with every checkpoint write timed."""
    chat = InstantChat()
    times, invoke_ms, all_writes, write_ms_per_run, writes_per_run = [], [], [], [], []
    steps, llm_calls, tool_calls, completed = set(), set(), set(), 0
    bar = tqdm(
        total=warmup + runs,
        desc=f"(j) agents on {backend}",
        unit="run",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with (
        open_runtime(settings, chat_for=lambda model: chat) as runtime,
        _timed_writes(runtime) as writes,
        bar,
    ):
        for index in range(warmup + runs):
            before = len(writes)
            started = time.perf_counter()
            result = runtime.run(REQUEST, agent=AGENT)
            elapsed = (time.perf_counter() - started) * 1000
            bar.update()
            if result.status != "completed" or "391" not in result.answer:
                raise RuntimeError(
                    f"a benchmark workflow on {backend} ended {result.status} "
                    f"({result.reason}): {result.answer!r}"
                )
            if index < warmup:
                continue
            completed += 1
            times.append(elapsed)
            invoke_ms.append(result.latency_ms)
            mine = writes[before:]
            all_writes.extend(mine)
            writes_per_run.append(len(mine))
            write_ms_per_run.append(sum(mine))
            steps.add(result.trace["steps"])
            llm_calls.add(int(result.spend["llm_calls"]))
            tool_calls.add(int(result.spend["tool_calls"]))
    if min(writes_per_run) == 0:
        raise RuntimeError(
            f"no checkpoint write was timed on {backend}: the runtime's checkpointer no longer "
            f"goes through {' / '.join(WRITE_METHODS)}, so this benchmark must be updated"
        )
    for name, seen in (("steps", steps), ("model calls", llm_calls), ("tool calls", tool_calls)):
        if len(seen) != 1:
            raise RuntimeError(f"the workflows on {backend} differ in {name}: {sorted(seen)}")
    return {
        "backend": backend,
        "runs": runs,
        "completed": completed,
        "steps": steps.pop(),
        "llm_calls": llm_calls.pop(),
        "tool_calls": tool_calls.pop(),
        "p50_ms": statistics.median(times),
        "p95_ms": percentiles(times, (95,))["p95_ms"],
        "invoke_p50_ms": statistics.median(invoke_ms),
        "writes": len(all_writes),
        "writes_per_workflow": statistics.mean(writes_per_run),
        "writes_per_workflow_range": (min(writes_per_run), max(writes_per_run)),
        "write_p50_ms": statistics.median(all_writes),
        "write_p95_ms": percentiles(all_writes, (95,))["p95_ms"],
        "write_ms_per_workflow_p50": statistics.median(write_ms_per_run),
    }


def _compare(backend: dict[str, Any], direct_p50_ms: float) -> None:
    """Orchestrated against direct: the ratio and overhead of the p50s, the overhead per graph
    step, and the share of it a workflow's checkpoint writes take (their p50 total)."""
    overhead = backend["p50_ms"] - direct_p50_ms
    backend["ratio"] = backend["p50_ms"] / direct_p50_ms
    backend["overhead_ms"] = overhead
    backend["overhead_per_step_ms"] = overhead / backend["steps"]
    backend["write_share"] = backend["write_ms_per_workflow_p50"] / overhead


@contextmanager
def _timed_writes(runtime: AgentRuntime) -> Iterator[list[float]]:
    """The milliseconds of every checkpoint write made while open: the checkpointer's write
    methods are wrapped on the instance (the graphs are compiled over that instance)."""
    saver, times = runtime.checkpointer, []

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                times.append((time.perf_counter() - started) * 1000)

        return wrapper

    for name in WRITE_METHODS:
        setattr(saver, name, timed(getattr(saver, name)))
    try:
        yield times
    finally:
        for name in WRITE_METHODS:
            delattr(saver, name)


def _bench_governance(settings: Settings, batches: int = 200) -> list[float]:
    """Microseconds per tool call of the checks governance makes before running it: the
    agent's permission for the tool and the workflow's budget with the call counted."""
    agent = load_registry(settings.agents.registry).get(AGENT)
    spent = spend(prompt_tokens=240, completion_tokens=40, cost_usd=0.0001, llm_calls=2)
    extra = spend(tool_calls=1)
    started_at = time.time()
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(GOVERNANCE_BATCH):
            if refusal(agent, "calculator", TOOL_PERMISSIONS) is not None:
                raise RuntimeError("the researcher may no longer call the calculator")
            if Budget(agent.limits, spent, started_at, 0.0).breach(extra) is not None:
                raise RuntimeError("the benchmark's spend breaches the researcher's limits")
        samples.append((time.perf_counter() - started) * 1e6 / GOVERNANCE_BATCH)
    return samples


def _bench_trace_event(settings: Settings, events: int = 2000) -> list[float]:
    """Microseconds per trace event appended (and flushed) to a thread's JSON-lines file."""
    samples = []
    with open_tracer(settings, f"bench{uuid.uuid4().hex[:12]}") as tracer:
        for index in range(events):
            started = time.perf_counter()
            tracer.event("state", "bench", status="ok", index=index, tool="calculator")
            samples.append((time.perf_counter() - started) * 1e6)
    return samples


class _Unreachable(Exception):
    """The PostgreSQL server cannot be reached or will not create the database."""


@contextmanager
def _throwaway_database(admin_dsn: str) -> Iterator[str]:
    """A new database ``bench_agents_<random>`` on the server ``admin_dsn`` reaches; its DSN;
    dropped afterwards (even with clients still connected)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"bench_agents_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        raise _Unreachable(f"cannot connect to {_where(admin_dsn)}: {_first_line(error)}") from None
    with admin:
        try:
            admin.execute(f"CREATE DATABASE {name}")
        except psycopg.Error as error:
            raise _Unreachable(
                f"cannot create a database on {_where(admin_dsn)}: {_first_line(error)}"
            ) from None
        try:
            yield make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": name})
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _where(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
