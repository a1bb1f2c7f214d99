"""Governance applied on every step: what an agent may call and what a workflow may spend.

A refused call is never executed: the refusal is traced and handed back to the model as the
tool's result, so the run goes on and the user sees what was refused. Budgets are checked
before every model and tool call; the first breach ends the workflow with status
``budget_exceeded`` and says which limit, how much was used and which setting raises it.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiplatform_dagster.agents.definitions import AgentDefinition, Limits


@dataclass(frozen=True)
class Breach:
    """A limit a workflow went past."""

    limit: str
    used: float
    allowed: float

    @property
    def message(self) -> str:
        return (
            f"{self.limit} budget exceeded: used {self.used:g} of {self.allowed:g}; raise "
            f"limits.{self.limit} of the agent in the registry to allow more"
        )


def refusal(agent: AgentDefinition, tool: str, tool_permissions: Mapping[str, str]) -> str | None:
    """Why ``agent`` may not call ``tool``, or None when it may."""
    if tool not in agent.tools:
        return f"agent {agent.name!r} may not call {tool!r}: its tools are {list(agent.tools)}"
    needed = tool_permissions.get(tool)
    if needed is None:
        return f"tool {tool!r} does not exist"
    if needed not in agent.permissions:
        return f"agent {agent.name!r} lacks permission {needed!r}, which {tool!r} needs"
    return None


def breach(
    limits: Limits,
    spent: Mapping[str, float],
    started_at: float,
    waited_s: float,
    now: float | None = None,
) -> Breach | None:
    """The first limit ``spent`` has reached or passed (tool calls: passed), else None."""
    now = time.time() if now is None else now
    tokens = spent.get("prompt_tokens", 0) + spent.get("completion_tokens", 0)
    wall_s = max(0.0, now - started_at - waited_s)
    checks = (
        ("max_tokens", tokens, limits.max_tokens, tokens >= limits.max_tokens),
        ("max_wall_s", round(wall_s, 3), limits.max_wall_s, wall_s >= limits.max_wall_s),
        (
            "max_cost_usd",
            spent.get("cost_usd", 0),
            limits.max_cost_usd,
            limits.max_cost_usd > 0 and spent.get("cost_usd", 0) >= limits.max_cost_usd,
        ),
        (
            "max_tool_calls",
            spent.get("tool_calls", 0),
            limits.max_tool_calls,
            spent.get("tool_calls", 0) > limits.max_tool_calls,
        ),
    )
    for name, used, allowed, over in checks:
        if over:
            return Breach(name, used, allowed)
    return None
