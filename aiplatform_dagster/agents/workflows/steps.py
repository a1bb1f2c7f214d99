"""The governed steps every workflow is made of: a model turn, a tool call, an agent's loop.

Every step is traced and charged to the workflow's spend. A tool call passes governance first
(permissions, then the tool-call budget, then a human's approval where the agent's escalation
policy asks for one) and only then reaches the tool runner.
"""

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.types import interrupt

from aiplatform_dagster.agents.definitions import AgentDefinition, Limits
from aiplatform_dagster.agents.governance import Breach, breach, refusal
from aiplatform_dagster.agents.state import HandOff, add_spend, spend
from aiplatform_dagster.agents.workflows.services import Services
from aiplatform_dagster.models.llm import ChatTurn, ToolCall

FAILED_TOOL_STATUSES = frozenset({"failed", "timeout", "circuit_open"})
CITATION = re.compile(r"\[([^\[\]\s]+)\]")
"""A passage id in brackets, as the knowledge-base tool shows it: how agents cite passages."""


@dataclass(frozen=True)
class Budget:
    """The limits a step checks and what the workflow has spent before it."""

    limits: Limits
    spent: Mapping[str, float]
    started_at: float
    waited_s: float

    def breach(
        self, extra: Mapping[str, float] | None = None, now: float | None = None
    ) -> Breach | None:
        return breach(
            self.limits, add_spend(dict(self.spent), dict(extra or {})), self.started_at,
            self.waited_s, now,
        )  # fmt: skip


def model_turn(
    services: Services,
    agent: AgentDefinition,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] = (),
) -> tuple[ChatTurn, dict[str, float]]:
    """One model turn, traced, with what it cost."""
    with services.tracer.span("llm", agent.name, model=agent.model or "default") as span:
        turn = services.chat(agent).chat(messages, tools)
        cost = services.prices.cost(turn.model, turn.prompt_tokens, turn.completion_tokens)
        span.set(
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            cost_usd=cost,
            tool_calls=len(turn.tool_calls),
        )
    used = spend(
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
        cost_usd=cost,
        llm_calls=1,
    )
    return turn, used


def call_tool(
    services: Services,
    agent: AgentDefinition,
    call: ToolCall,
    thread_id: str,
    call_id: str,
    approval: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one tool call through governance; the outcome as a JSON dict (never raises for a
    refused or failed call: the model reads why and the run goes on)."""
    from aiplatform_dagster.agents.tools.base import ToolContext, ToolOutcome, ToolStatus

    reason = refusal(agent, call.name, services.tool_permissions)
    if reason is None and approval is not None and not approval.get("approved"):
        note = approval.get("note") or "no reason given"
        reason = f"a human reviewer rejected this call: {note}"
    if reason is not None:
        services.tracer.event(
            "governance",
            "refused",
            status="refused",
            agent=agent.name,
            tool=call.name,
            reason=reason,
        )
        outcome = ToolOutcome(call.name, ToolStatus.REFUSED, f"refused: {reason}")
    else:
        context = ToolContext(thread_id, agent.name, call_id, services.memory)
        with services.tracer.span("tool", call.name, agent=agent.name, call_id=call_id) as span:
            outcome = services.runner.call(call.name, call.arguments, context)
            span.set(
                status=str(outcome.status),
                attempts=outcome.attempts,
                fallback_used=outcome.fallback_used,
                replayed=outcome.replayed,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cost_usd=_cost(
                    services, outcome.model, outcome.prompt_tokens, outcome.completion_tokens
                ),
            )
    return {
        "call_id": call_id,
        "agent": agent.name,
        "arguments": call.arguments,
        **outcome.as_dict(),
    }


def spent_by(services: Services, result: Mapping[str, Any]) -> dict[str, float]:
    """What one tool call costs the workflow: the call, and the tokens of a tool that calls a
    model itself (llm_call), which count against the same token and cost budgets."""
    prompt, completion = result.get("prompt_tokens") or 0, result.get("completion_tokens") or 0
    return spend(
        tool_calls=1,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=_cost(services, result.get("model"), prompt, completion),
    )


def _cost(services: Services, model: str | None, prompt: int, completion: int) -> float:
    return services.prices.cost(model, prompt, completion) if model else 0.0


def ask_approval(agent: AgentDefinition, call: ToolCall) -> dict[str, Any]:
    """Pause the workflow until a human decides on ``call`` (LangGraph ``interrupt``); once
    resumed, the decision: {approved, note}."""
    return interrupt(
        {
            "kind": "approval",
            "agent": agent.name,
            "reason": f"{agent.name} asks to call {call.name} with {call.arguments}",
        }
    )


def shared_notes(services: Services, thread_id: str) -> str:
    """What the thread's agents wrote to its shared memory, one line each."""
    return "\n".join(f"- {key}: {value}" for key, value in services.memory.items(thread_id).items())


def tool_message(call: ToolCall, result: Mapping[str, Any]) -> dict[str, Any]:
    """The tool result as the model reads it."""
    return {"role": "tool", "tool_call_id": call.id, "content": str(result["content"])}


def call_of(payload: Mapping[str, Any]) -> ToolCall:
    return ToolCall(payload["id"], payload["name"], payload["arguments"])


def payload_of(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def cited(answer: str, sources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Passage ids the answer cites that a tool really returned, in order of first citation."""
    known = {str(source.get("chunk_id")) for source in sources}
    seen: list[str] = []
    for match in CITATION.findall(answer or ""):
        if match in known and match not in seen:
            seen.append(match)
    return seen


def sources_of(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(source) for result in results for source in result.get("sources") or ()]


def has_failures(results: Sequence[Mapping[str, Any]]) -> bool:
    return any(result.get("status") in FAILED_TOOL_STATUSES for result in results)


def parse_json(text: str | None) -> Any:
    """The first JSON value in a model's reply (models wrap JSON in prose or code fences)."""
    if not text:
        return None
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "[{":
            try:
                return decoder.raw_decode(text[start:])[0]
            except json.JSONDecodeError:
                continue
    return None


@dataclass
class AgentWork:
    """What one agent did for one task inside a node: its report and what it cost."""

    handoff: HandOff
    spend: dict[str, float]
    results: list[dict[str, Any]] = field(default_factory=list)


def run_agent(
    services: Services,
    agent: AgentDefinition,
    task: str,
    *,
    thread_id: str,
    call_prefix: str,
    workflow: Budget,
    notes: str = "",
) -> AgentWork:
    """An agent's loop on one task: model turn, governed tool calls, until it answers, runs
    out of rounds, or a budget (the workflow's or its own) is spent.

    A tool the agent's escalation policy names waits for a human first (``ask_approval``).
    Call ids are derived from ``call_prefix`` and the position of the call, so a re-run of the
    node after a crash or a resume gives each call the same idempotency key.
    """
    system = agent.role + (
        f"\n\nNotes shared by other agents in this thread:\n{notes}" if notes else ""
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": task},
    ]
    own = Budget(agent.limits, {}, workflow.started_at, workflow.waited_s)
    used = spend()
    results: list[dict[str, Any]] = []
    last_text = ""

    def report(status: str, answer: str, extra_notes: Sequence[str] = ()) -> AgentWork:
        handoff = HandOff(
            agent=agent.name,
            task=task,
            status=status,
            answer=answer,
            sources=sources_of(results),
            tool_calls=len(results),
            notes=list(extra_notes),
        )
        return AgentWork(handoff, used, results)

    for round_number in range(services.max_rounds):
        over = workflow.breach(used) or own.breach(used)
        if over:
            return report("budget_exceeded", last_text, [over.message])
        turn, cost = model_turn(services, agent, messages, services.schemas(agent))
        used = add_spend(used, cost)
        if turn.text:
            last_text = turn.text
        if not turn.tool_calls:
            status = "partial" if has_failures(results) else "completed"
            notes_out = (
                ["some tool calls failed; the answer may be incomplete"]
                if status == "partial"
                else []
            )
            return report(status, turn.text or "", notes_out)
        messages.append(turn.as_message())
        for index, call in enumerate(turn.tool_calls):
            over = workflow.breach(add_spend(used, spend(tool_calls=1))) or own.breach(
                add_spend(used, spend(tool_calls=1))
            )
            if over:
                return report("budget_exceeded", last_text, [over.message])
            decision = None
            if call.name in agent.escalation.approve_tools:
                decision = ask_approval(agent, call)
            result = call_tool(
                services, agent, call, thread_id, f"{call_prefix}:{round_number}:{index}", decision
            )
            used = add_spend(used, spent_by(services, result))
            results.append(result)
            messages.append(tool_message(call, result))
    return report(
        "partial", last_text, [f"no final answer within {services.max_rounds} model turns"]
    )
