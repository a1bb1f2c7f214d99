"""The typed state every workflow checkpoints, and the hand-off payload sub-agents report.

State holds only JSON values (dicts, lists, strings, numbers), so a checkpoint written by one
process reads back in another, and in PostgreSQL, byte for byte. Fields written by agents
running in parallel (results, sources, hand-offs, spend) have reducers that merge their
updates; everything else is last-writer-wins.
"""

import operator
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

SPEND_FIELDS = (
    "prompt_tokens", "completion_tokens", "cost_usd", "tool_calls", "llm_calls", "steps"
)  # fmt: skip


def add_spend(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Spend reported by concurrent nodes adds up."""
    left, right = left or {}, right or {}
    return {name: left.get(name, 0) + right.get(name, 0) for name in SPEND_FIELDS}


def spend(**values: float) -> dict[str, float]:
    """A spend update, e.g. ``spend(tool_calls=1)``; unknown names are a programming error."""
    unknown = set(values) - set(SPEND_FIELDS)
    if unknown:
        raise ValueError(f"unknown spend fields {sorted(unknown)}")
    return {name: values.get(name, 0) for name in SPEND_FIELDS}


class HandOff(BaseModel):
    """What a sub-agent or pool worker reports back: typed, so a coordinator never parses prose
    to learn whether its delegate succeeded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str
    task: str
    status: Literal["completed", "partial", "refused", "failed", "budget_exceeded"]
    answer: str
    sources: list[dict[str, Any]] = Field(default_factory=list)
    tool_calls: int = 0
    notes: list[str] = Field(default_factory=list)
    ref: str = ""
    """The delegation (tool call id) this reports on, so the coordinator can match it."""


class WorkflowState(TypedDict, total=False):
    request: str
    agent: str
    mode: str
    graph_version: str
    started_at: float
    """Epoch seconds; the wall-time budget counts from here, minus time spent waiting."""
    waited_s: Annotated[float, operator.add]
    """Seconds spent paused for a human, which the wall-time budget does not count."""
    messages: Annotated[list[dict[str, Any]], operator.add]
    """The planner's conversation (sequential mode), as OpenAI chat messages."""
    pending_calls: list[dict[str, Any]]
    """Tool calls the planner asked for that have not run yet: {id, name, arguments}."""
    approvals: dict[str, dict[str, Any]]
    """A human's decision per pending call id: {approved, note}."""
    results: Annotated[list[dict[str, Any]], operator.add]
    """Every tool outcome, refused ones too, with the agent and call id."""
    sources: Annotated[list[dict[str, Any]], operator.add]
    subtasks: list[str]
    task: str
    task_index: int
    delegate: str
    """What one ``Send`` carries to a worker or sub-agent: its task, position and agent."""
    delegations: list[dict[str, Any]]
    """The coordinator's open hand-offs: {id, agent, task}."""
    handoffs: Annotated[list[dict[str, Any]], operator.add]
    rounds: int
    draft: str | None
    revisions: int
    feedback: str | None
    answer: str | None
    status: str | None
    reason: str | None
    spend: Annotated[dict[str, float], add_spend]
