"""Pieces every workflow graph shares: the thread id, the budget of a state, the last node."""

import inspect
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig

from aiplatform_dagster.agents.definitions import AgentDefinition
from aiplatform_dagster.agents.state import WorkflowState, spend
from aiplatform_dagster.agents.workflows.services import Services
from aiplatform_dagster.agents.workflows.steps import Budget, has_failures

FINAL_STATUSES = frozenset({"completed", "partial", "failed", "budget_exceeded", "rejected"})


def traced(services: Services, name: str, node: Callable[..., Any]) -> Callable[..., Any]:
    """``node`` inside a trace span named after it. LangGraph passes ``config`` to the wrapper,
    which hands it on to nodes that declare it."""
    wants_config = "config" in inspect.signature(node).parameters

    def wrapper(state: WorkflowState, config: RunnableConfig) -> Any:
        with services.tracer.span("node", name) as span:
            update = node(state, config) if wants_config else node(state)
            if isinstance(update, dict) and update.get("status"):
                span.set(workflow_status=update["status"])
            return update

    return wrapper


def thread_of(config: dict) -> str:
    return str(config["configurable"]["thread_id"])


def budget_of(state: WorkflowState, agent: AgentDefinition) -> Budget:
    return Budget(
        agent.limits, state.get("spend") or {}, state["started_at"], state.get("waited_s") or 0.0
    )


def stopped(status: str, reason: str) -> dict[str, Any]:
    """The update that ends a workflow early with ``status`` and why."""
    return {"status": status, "reason": reason}


def finish(services: Services) -> Callable[[WorkflowState, dict], dict[str, Any]]:
    """The last node: settle the status, share the answer with the thread's other agents."""

    def finish_node(state: WorkflowState, config: dict) -> dict[str, Any]:
        status, reason = state.get("status"), state.get("reason")
        answer = state.get("answer") if state.get("answer") is not None else state.get("draft")
        if status not in FINAL_STATUSES:
            failed = has_failures(state.get("results") or [])
            status = "partial" if failed else "completed"
            if failed:
                reason = (
                    "some tool calls failed after retries and fallbacks: the answer may be partial"
                )
        services.memory.put(
            thread_of(config),
            "answer",
            {"agent": state["agent"], "status": status, "answer": answer},
        )
        services.tracer.event("state", "finished", status=status, reason=reason)
        return {"status": status, "reason": reason, "answer": answer or "", "spend": spend(steps=1)}

    return finish_node
