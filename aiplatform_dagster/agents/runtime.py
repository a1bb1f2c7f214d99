"""The agent runtime: start a workflow, resume it, list its threads. CLI, Dagster and the
serving API all run agents through here.

A run picks its agent and mode (the caller's, else the agent definition's), pins the graph
version in the thread, and runs the LangGraph graph on the configured checkpointer with
``durability="sync"``: a step's checkpoint is written before the next step starts, so a killed
process resumes exactly where it stopped. A workflow that pauses for a human is ``waiting`` in
the thread index until ``resume`` answers it.
"""

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aiplatform_dagster.agents.definitions import (
    AgentDefinition,
    AgentRegistry,
    Mode,
    RegistryError,
    load_registry,
)
from aiplatform_dagster.agents.state import spend
from aiplatform_dagster.agents.threads import (
    ThreadIndex,
    ThreadRecord,
    ThreadStatus,
    check_thread_id,
)
from aiplatform_dagster.agents.tools.base import ToolRegistry, ToolRunner
from aiplatform_dagster.agents.tracing import read_trace, summarise, trace_path
from aiplatform_dagster.agents.workflows import hierarchical, parallel, sequential
from aiplatform_dagster.agents.workflows.services import Services, ToolUsingChat, tracing_thread
from aiplatform_dagster.agents.workflows.steps import cited
from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.models.llm import LLMError

WORKFLOWS = {Mode.SEQUENTIAL: sequential, Mode.PARALLEL: parallel, Mode.HIERARCHICAL: hierarchical}
RECURSION_LIMIT = 60
NO_LLM = (
    "No LLM is configured, and agents need a model that calls tools. Set one of: "
    "OPENAI_API_KEY (OpenAI); AZURE_OPENAI_ENDPOINT with AZURE_OPENAI_API_KEY and "
    "OPENAI_API_VERSION (Azure OpenAI, AIPLATFORM_LLM_MODEL = the deployment); or "
    "AIPLATFORM_LLM_BASE_URL for any OpenAI-compatible server with tool calling, e.g. vLLM "
    "(http://host:8000/v1) or Ollama (http://localhost:11434/v1), with AIPLATFORM_LLM_MODEL."
)


class AgentRunError(PlatformError):
    """A run or resume that cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class RunResult:
    """Where a workflow stands after a run or a resume."""

    thread_id: str
    agent: str
    mode: str
    status: str
    answer: str
    reason: str | None
    citations: list[str]
    sources: list[dict[str, Any]]
    spend: dict[str, float]
    waiting: list[dict[str, Any]]
    """What the workflow waits for a human to decide: {kind, agent, reason}."""
    tool_results: list[dict[str, Any]]
    trace: dict[str, Any]
    graph_version: str
    latency_ms: float = 0.0
    handoffs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def graph_version(registry: AgentRegistry, agent: AgentDefinition, mode: Mode) -> str:
    """The workflow's version plus the digests of every agent definition it runs."""
    members = (
        [agent, *(registry.get(name) for name in agent.delegates)]
        if mode == Mode.HIERARCHICAL
        else [agent]
    )
    return f"{WORKFLOWS[mode].VERSION}+" + ".".join(member.digest for member in members)


class AgentRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: AgentRegistry,
        checkpointer: Any,
        threads: ThreadIndex,
        services: Services,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.checkpointer = checkpointer
        self.threads = threads
        self._services = services
        self._graphs: dict[Mode, Any] = {}
        self._clock = clock

    def run(
        self,
        request: str,
        *,
        agent: str | None = None,
        mode: Mode | str | None = None,
        thread_id: str | None = None,
        subtasks: Sequence[str] = (),
    ) -> RunResult:
        """Start a workflow on a new thread and run it until it finishes or waits."""
        if not request.strip():
            raise AgentRunError("an agent run needs a request: an empty one asks for nothing")
        chosen_mode = Mode(mode) if mode else None
        definition = self.registry.get(agent) if agent else self.registry.default_for(chosen_mode)
        chosen_mode = chosen_mode or definition.mode
        if chosen_mode == Mode.HIERARCHICAL and not definition.delegates:
            raise RegistryError(
                f"agent {definition.name!r} names no delegates, so it cannot run hierarchically: "
                f"pick a coordinator ({[a.name for a in self.registry if a.delegates]})"
            )
        thread_id = check_thread_id(thread_id or uuid.uuid4().hex)
        version = graph_version(self.registry, definition, chosen_mode)
        created = self.threads.create(
            ThreadRecord(
                thread_id,
                definition.name,
                chosen_mode.value,
                request,
                ThreadStatus.RUNNING,
                graph_version=version,
            )
        )
        if created is None:
            raise AgentRunError(
                f"thread {thread_id} already exists: resume it with `aiplatform agent resume "
                f"{thread_id}` or start a new one without --thread"
            )
        initial = {
            "request": request,
            "agent": definition.name,
            "mode": chosen_mode.value,
            "graph_version": version,
            "started_at": self._clock(),
            "subtasks": list(subtasks),
            "spend": spend(),
        }
        return self._invoke(thread_id, chosen_mode, initial)

    def resume(self, thread_id: str, approve: bool | None = None, note: str = "") -> RunResult:
        """Answer a waiting thread (approve or reject), or continue one whose process died."""
        from langgraph.types import Command

        record = self.threads.get(check_thread_id(thread_id))
        if record is None:
            raise AgentRunError(
                f"no thread {thread_id}: `aiplatform agent threads` lists the known threads"
            )
        if record.finished:
            raise AgentRunError(
                f"thread {thread_id} is {record.status.value}; there is nothing to resume"
            )
        mode = Mode(record.mode)
        definition = self.registry.get(record.agent)
        current = graph_version(self.registry, definition, mode)
        if record.graph_version != current:
            raise AgentRunError(
                f"thread {thread_id} was started on graph version {record.graph_version}, and "
                f"this installation runs {current} (the workflow or an agent definition changed). "
                "Resuming it here could repeat or skip steps, so it is refused: finish it with the "
                "release and registry it started on, or start a new thread"
            )
        waiting = self._graph(mode).get_state(_config(thread_id)).interrupts
        if record.status == ThreadStatus.WAITING:
            if approve is None:
                raise AgentRunError(
                    f"thread {thread_id} waits for a human: {record.reason}. Resume it with "
                    "--approve or --reject (and --note to say why)"
                )
            decision = {"approved": approve, "note": note}
            paused_at = record.updated_at.timestamp() if record.updated_at else self._clock()
            command: Any = Command(
                resume={interrupt.id: decision for interrupt in waiting},
                update={"waited_s": max(0.0, self._clock() - paused_at)},
            )
        else:
            if approve is not None:
                raise AgentRunError(
                    f"thread {thread_id} is not waiting for a decision: resume it without "
                    "--approve/--reject"
                )
            command = None  # continue from the last checkpoint, e.g. after a crash
        if not self.threads.claim(thread_id, record.status):
            now = self.threads.get(thread_id)
            raise AgentRunError(
                f"thread {thread_id} is no longer {record.status.value}: another resume took it "
                f"first (it is {now.status.value if now else 'gone'} now)"
            )
        return self._invoke(thread_id, mode, command)

    def waiting(self) -> list[ThreadRecord]:
        return self.threads.waiting()

    def _graph(self, mode: Mode) -> Any:
        """The compiled workflow of ``mode``, built once and shared by every thread."""
        if mode not in self._graphs:
            graph = WORKFLOWS[mode].build(self._services)
            self._graphs[mode] = graph.compile(checkpointer=self.checkpointer)
        return self._graphs[mode]

    def _invoke(self, thread_id: str, mode: Mode, payload: Any) -> RunResult:
        from aiplatform_dagster.agents.tracing import open_tracer

        graph = self._graph(mode)
        started = time.perf_counter()
        try:
            with tracing_thread(open_tracer(self.settings, thread_id)):
                graph.invoke(payload, _config(thread_id), durability="sync")
        except PlatformError as error:
            record = self.threads.get(thread_id)
            if record is not None:
                self.threads.save(replace(record, status=ThreadStatus.FAILED, reason=str(error)))
            raise
        return self._settle(thread_id, graph, (time.perf_counter() - started) * 1000)

    def _settle(self, thread_id: str, graph: Any, latency_ms: float) -> RunResult:
        snapshot = graph.get_state(_config(thread_id))
        values = snapshot.values
        waiting = [dict(interrupt.value) for interrupt in snapshot.interrupts]
        if waiting:
            status, reason = ThreadStatus.WAITING, "; ".join(w.get("reason", "") for w in waiting)
        else:
            status, reason = ThreadStatus(values.get("status") or "failed"), values.get("reason")
        record = self.threads.get(thread_id)
        if record is not None:
            self.threads.save(replace(record, status=status, reason=reason))
        sources = _unique_sources(values.get("sources") or [])
        answer = values.get("answer") or ""
        return RunResult(
            thread_id=thread_id,
            agent=values["agent"],
            mode=values["mode"],
            status=status.value,
            answer=answer,
            reason=reason,
            citations=cited(answer, sources),
            sources=sources,
            spend=dict(values.get("spend") or {}),
            waiting=waiting,
            tool_results=[
                {
                    k: r.get(k)
                    for k in (
                        "agent",
                        "tool",
                        "status",
                        "call_id",
                        "attempts",
                        "fallback_used",
                        "replayed",
                    )
                }
                for r in values.get("results") or []
            ],
            trace=summarise(read_trace(trace_path(self.settings, thread_id))).as_dict(),
            graph_version=values["graph_version"],
            latency_ms=latency_ms,
            handoffs=list(values.get("handoffs") or []),
        )


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": RECURSION_LIMIT}


def _unique_sources(sources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for source in sources:
        seen.setdefault(str(source.get("chunk_id")), source)
    return list(seen.values())


def chat_factory(settings: Settings) -> Callable[[str | None], ToolUsingChat]:
    """Chat clients by model name, one per model, over the configured endpoint."""
    from aiplatform_dagster.rag.factory import llm_settings

    base = llm_settings(settings)
    if not base.is_configured:
        raise LLMError(NO_LLM)
    clients: dict[str | None, ToolUsingChat] = {}

    def chat_for(model: str | None) -> ToolUsingChat:
        if model not in clients:
            clients[model] = (replace(base, model=model) if model else base).build_client()
        return clients[model]

    return chat_for


@contextmanager
def open_runtime(
    settings: Settings,
    *,
    chat_for: Callable[[str | None], ToolUsingChat] | None = None,
    tools: ToolRegistry | None = None,
    registry: AgentRegistry | None = None,
    max_rounds: int = 4,
) -> Iterator[AgentRuntime]:
    """The runtime over the configured registry, tools, checkpointer, memory and traces.

    Fails at once, before any thread is created, when no LLM is configured."""
    from aiplatform_dagster.agents.checkpoints import open_checkpointer
    from aiplatform_dagster.agents.memory import open_memory
    from aiplatform_dagster.agents.tools.catalog import TOOL_PERMISSIONS, build_tool_registry
    from aiplatform_dagster.agents.tracing import langsmith_env
    from aiplatform_dagster.rag.factory import price_table

    chat_for = chat_for or chat_factory(settings)
    os.environ.update(langsmith_env(settings))  # LangGraph traces to LangSmith natively
    registry = registry or load_registry(settings.agents.registry)
    tools = tools or build_tool_registry(settings)
    runner = ToolRunner(tools)
    memory = open_memory(settings)
    prices = price_table(settings)
    permissions = {**TOOL_PERMISSIONS, **tools.permissions}
    with ExitStack() as stack:
        checkpointer = stack.enter_context(open_checkpointer(settings))

        services = Services(
            registry=registry,
            tools=tools,
            runner=runner,
            tool_permissions=permissions,
            chat_for=chat_for,
            prices=prices,
            memory=memory,
            max_rounds=max_rounds,
        )
        yield AgentRuntime(
            settings,
            registry=registry,
            checkpointer=checkpointer,
            threads=ThreadIndex.over(checkpointer),
            services=services,
        )
