"""What a workflow's nodes use but never checkpoint: the model, the tools, memory, the tracer.

Built once per runtime and closed over by the graph's nodes, which are compiled once per mode
and shared by every thread, so the state stays plain JSON. The tracer is the one thing that
belongs to a thread: the runtime binds it for the length of a run (``tracing_thread``), in a
context variable that LangGraph carries into the threads it runs nodes in.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from aiplatform_dagster.agents.definitions import AgentDefinition, AgentRegistry
from aiplatform_dagster.agents.memory import SharedMemory
from aiplatform_dagster.agents.tools.base import ToolRegistry, ToolRunner
from aiplatform_dagster.agents.tracing import Tracer
from aiplatform_dagster.models.llm import ChatTurn
from aiplatform_dagster.rag.query.accounting import PriceTable


class ToolUsingChat(Protocol):
    def chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] = ()
    ) -> ChatTurn: ...


_ACTIVE_TRACER: ContextVar[Tracer | None] = ContextVar("agent_thread_tracer", default=None)


@contextmanager
def tracing_thread(tracer: Tracer) -> Iterator[Tracer]:
    """Nodes run in this block trace to ``tracer``; it is closed (flushed) at the end."""
    token = _ACTIVE_TRACER.set(tracer)
    try:
        yield tracer
    finally:
        _ACTIVE_TRACER.reset(token)
        tracer.close()


@dataclass
class Services:
    registry: AgentRegistry
    tools: ToolRegistry
    runner: ToolRunner
    """Validation, timeouts, retries, breakers and fallbacks around every tool call."""
    tool_permissions: dict[str, str]
    chat_for: Callable[[str | None], ToolUsingChat]
    """The chat client of a model name (None: the configured model)."""
    prices: PriceTable
    memory: SharedMemory
    max_rounds: int = 4
    """Model turns one agent gets for one task before it must answer."""

    @property
    def tracer(self) -> Tracer:
        """The tracer of the thread being run (see ``tracing_thread``)."""
        tracer = _ACTIVE_TRACER.get()
        if tracer is None:
            raise RuntimeError("a workflow node ran outside tracing_thread(): no thread tracer")
        return tracer

    def chat(self, agent: AgentDefinition) -> ToolUsingChat:
        return self.chat_for(agent.model)

    def schemas(self, agent: AgentDefinition) -> list[dict[str, Any]]:
        """The OpenAI function schemas of the agent's listed tools that exist."""
        return [self.tools.get(name).openai_schema() for name in agent.tools if name in self.tools]
