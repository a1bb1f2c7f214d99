"""What a workflow's nodes use but never checkpoint: the model, the tools, memory, the tracer.

Built once per run or resume by the runtime and closed over by the graph's nodes, so the state
stays plain JSON and a resumed thread gets fresh connections.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiplatform_dagster.agents.definitions import AgentDefinition, AgentRegistry
from aiplatform_dagster.models.llm import ChatTurn
from aiplatform_dagster.rag.query.accounting import PriceTable


class ToolUsingChat(Protocol):
    def chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] = ()
    ) -> ChatTurn: ...


@dataclass
class Services:
    registry: AgentRegistry
    tools: Any
    """agents.tools.base.ToolRegistry: the tools and their schemas."""
    runner: Any
    """agents.tools.base.ToolRunner: validation, timeouts, retries, breakers, fallbacks."""
    tool_permissions: dict[str, str]
    chat_for: Callable[[str | None], ToolUsingChat]
    """The chat client of a model name (None: the configured model)."""
    prices: PriceTable
    memory: Any
    """agents.memory.SharedMemory of this deployment."""
    tracer: Any
    """agents.tracing.Tracer of the thread being run."""
    max_rounds: int = 4
    """Model turns one agent gets for one task before it must answer."""
    clock: Callable[[], float] = time.time

    def chat(self, agent: AgentDefinition) -> ToolUsingChat:
        return self.chat_for(agent.model)

    def schemas(self, agent: AgentDefinition) -> list[dict[str, Any]]:
        """The OpenAI function schemas of the agent's listed tools that exist."""
        return [self.tools.get(name).openai_schema() for name in agent.tools if name in self.tools]
