"""Hierarchical mode: a coordinator delegates to sub-agents, which call their own tools and
report back with typed hand-offs.

The coordinator's only tool is ``delegate(agent, task)`` over the agents its definition names;
each delegation runs as a sub-agent task (concurrently, through ``Send``), governed by the
sub-agent's own tools, permissions and limits and by the workflow's budget. The coordinator
reads the hand-offs as the results of its calls and delegates again or answers.
"""

import json
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from aiplatform_dagster.agents.definitions import AgentDefinition
from aiplatform_dagster.agents.state import WorkflowState, add_spend, spend
from aiplatform_dagster.agents.workflows.nodes import budget_of, finish, stopped, thread_of, traced
from aiplatform_dagster.agents.workflows.services import Services
from aiplatform_dagster.agents.workflows.steps import (
    model_turn,
    payload_of,
    run_agent,
    shared_notes,
)

VERSION = "hierarchical/1"
DELEGATE = "delegate"


def delegate_schema(coordinator: AgentDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": DELEGATE,
            "description": "Hand a task to a specialist agent; its report is the result.",
            "parameters": {
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "enum": list(coordinator.delegates)},
                    "task": {"type": "string", "minLength": 1},
                },
                "required": ["agent", "task"],
                "additionalProperties": False,
            },
        },
    }


def build(services: Services) -> StateGraph:
    registry = services.registry

    def team(coordinator: AgentDefinition) -> str:
        lines = []
        for name in coordinator.delegates:
            member = registry.get(name)
            lines.append(
                f"- {name}: {member.description} (capabilities: {', '.join(member.capabilities)})"
            )
        return "\n".join(lines)

    def coordinator(state: WorkflowState) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        new: list[dict[str, Any]] = []
        if not state.get("messages"):
            new = [
                {"role": "system", "content": f"{agent.role}\n\nYour team:\n{team(agent)}"},
                {"role": "user", "content": state["request"]},
            ]
        reports = {h["ref"]: h for h in state.get("handoffs") or []}
        for delegation in state.get("delegations") or []:
            report = reports.get(delegation["id"])
            content = delegation.get("error") or json.dumps(report)
            new.append({"role": "tool", "tool_call_id": delegation["id"], "content": content})
        update: dict[str, Any] = {"messages": new, "delegations": []}
        over = budget_of(state, agent).breach()
        if over:
            return {**update, **stopped("budget_exceeded", over.message), "answer": _reports(state)}
        rounds = int(state.get("rounds") or 0)
        if rounds >= services.max_rounds:
            return {
                **update,
                **stopped(
                    "partial", f"no final answer within {services.max_rounds} coordinator turns"
                ),
                "answer": _reports(state),
            }
        turn, used = model_turn(
            services, agent, [*(state.get("messages") or []), *new], [delegate_schema(agent)]
        )
        update["messages"] = [*new, turn.as_message()]
        update["spend"] = {**used, "steps": 1}
        update["rounds"] = rounds + 1
        if not turn.tool_calls:
            return {**update, "answer": turn.text or ""}
        update["delegations"] = [_delegation(agent, payload_of(call)) for call in turn.tool_calls]
        return update

    def dispatch(state: WorkflowState) -> list[Send] | str:
        if state.get("status") or state.get("answer") is not None:
            return "finish"
        sends: list[Send] = [
            Send("sub_agent", {**state, "delegate": d["agent"], "task": d["task"], "task_index": i})
            for i, d in enumerate(state.get("delegations") or [])
            if not d.get("error")
        ]
        return sends or "coordinator"

    def sub_agent(state: WorkflowState, config: dict) -> dict[str, Any]:
        coordinator_def = registry.get(state["agent"])
        member = registry.get(state["delegate"])
        thread_id = thread_of(config)
        delegation = state["delegations"][state["task_index"]]

        work = run_agent(
            services,
            member,
            state["task"],
            thread_id=thread_id,
            call_prefix=f"r{state.get('rounds')}:d{state['task_index']}",
            workflow=budget_of(state, coordinator_def),
            notes=shared_notes(services, thread_id),
        )
        handoff = work.handoff.model_copy(update={"ref": delegation["id"]})
        services.memory.put(thread_id, f"{member.name}: {state['task']}", handoff.answer)
        return {
            "handoffs": [handoff.model_dump()],
            "results": work.results,
            "sources": list(handoff.sources),
            "spend": add_spend(work.spend, spend(steps=1)),
        }

    graph = StateGraph(WorkflowState)
    graph.add_node("coordinator", traced(services, "coordinator", coordinator))
    graph.add_node("sub_agent", traced(services, "sub_agent", sub_agent))
    graph.add_node("finish", traced(services, "finish", finish(services)))
    graph.add_edge(START, "coordinator")
    graph.add_conditional_edges("coordinator", dispatch, ["sub_agent", "coordinator", "finish"])
    graph.add_edge("sub_agent", "coordinator")
    graph.add_edge("finish", END)
    return graph


def _delegation(coordinator: AgentDefinition, call: dict[str, Any]) -> dict[str, Any]:
    """{id, agent, task}, or {id, error} when the call is not a valid delegation."""
    try:
        arguments = json.loads(call["arguments"])
    except json.JSONDecodeError as error:
        return {"id": call["id"], "error": f"arguments are not JSON ({error}); nothing delegated"}
    agent, task = (
        (arguments.get("agent"), arguments.get("task"))
        if isinstance(arguments, dict)
        else (None, None)
    )
    if call["name"] != DELEGATE:
        return {"id": call["id"], "error": f"refused: the coordinator has only the {DELEGATE} tool"}
    if agent not in coordinator.delegates:
        return {
            "id": call["id"],
            "error": f"refused: {coordinator.name!r} may delegate only to "
            f"{list(coordinator.delegates)}",
        }
    if not isinstance(task, str) or not task.strip():
        return {"id": call["id"], "error": "invalid input: task must be a non-empty string"}
    return {"id": call["id"], "agent": agent, "task": task}


def _reports(state: WorkflowState) -> str:
    return "\n\n".join(
        f"{h['agent']}: {h['answer']}" for h in state.get("handoffs") or [] if h["answer"]
    )
