"""Sequential mode: planner -> tool executor -> validator.

The planner (the agent's model with its tools) either asks for tool calls or drafts an answer.
Calls an escalation policy names go through ``approval`` first, where the workflow pauses with
LangGraph's ``interrupt`` until a human decides. The executor runs the calls through
governance and hands the results back to the planner. The validator reads the draft against
the request and the tool results: it accepts, or sends the work back once with its reason; a
second rejection goes to a human (or ends the run as partial, per the agent's policy).
"""

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from aiplatform_dagster.agents.state import WorkflowState, add_spend, spend
from aiplatform_dagster.agents.workflows.nodes import budget_of, finish, stopped, thread_of, traced
from aiplatform_dagster.agents.workflows.services import Services
from aiplatform_dagster.agents.workflows.steps import (
    ask_approval,
    call_of,
    call_tool,
    model_turn,
    parse_json,
    payload_of,
    spent_by,
    tool_message,
)

VERSION = "sequential/1"
MAX_REVISIONS = 1
VALIDATOR_PROMPT = """You review an assistant's draft answer before the user sees it.
Check that it answers the request, that every claim is supported by the tool results, and that
knowledge-base passages are cited by their id in brackets. Reply with JSON only:
{"verdict": "accept"} or {"verdict": "revise", "reason": "<what is wrong and how to fix it>"}."""


def build(services: Services) -> StateGraph:
    registry = services.registry

    def planner(state: WorkflowState, config: dict) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        over = budget_of(state, agent).breach()
        if over:
            return stopped("budget_exceeded", over.message)
        messages = list(state.get("messages") or [])
        new: list[dict[str, Any]] = []
        if not messages:
            new = [
                {"role": "system", "content": agent.role},
                {"role": "user", "content": state["request"]},
            ]
        if state.get("feedback"):
            new.append(
                {"role": "user", "content": f"A reviewer asked for a revision: {state['feedback']}"}
            )
        turn, used = model_turn(services, agent, [*messages, *new], services.schemas(agent))
        new.append(turn.as_message())
        update: dict[str, Any] = {"messages": new, "spend": {**used, "steps": 1}, "feedback": None}
        if turn.tool_calls:
            update["pending_calls"] = [payload_of(call) for call in turn.tool_calls]
        else:
            update["draft"] = turn.text or ""
        return update

    def approval(state: WorkflowState) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        decisions = {}
        for payload in state.get("pending_calls") or []:
            if payload["name"] in agent.escalation.approve_tools:
                decisions[payload["id"]] = ask_approval(agent, call_of(payload))
        return {"approvals": decisions, "spend": spend(steps=1)}

    def executor(state: WorkflowState, config: dict) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        thread_id = thread_of(config)
        budget = budget_of(state, agent)
        step = int(state.get("spend", {}).get("steps", 0))
        results, messages, used = [], [], spend(steps=1)
        for index, payload in enumerate(state.get("pending_calls") or []):
            call = call_of(payload)
            over = budget.breach(add_spend(used, spend(tool_calls=1)))
            if over:
                return {
                    **stopped("budget_exceeded", over.message),
                    "results": results,
                    "pending_calls": [],
                    "spend": used,
                }
            approval_of_call = (state.get("approvals") or {}).get(call.id)
            result = call_tool(
                services, agent, call, thread_id, f"s{step}:{index}", approval_of_call
            )
            used = add_spend(used, spent_by(services, result))
            results.append(result)
            messages.append(tool_message(call, result))
        return {
            "results": results,
            "sources": [s for r in results for s in r.get("sources") or ()],
            "messages": messages,
            "pending_calls": [],
            "approvals": {},
            "spend": used,
        }

    def validator(state: WorkflowState) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        over = budget_of(state, agent).breach()
        if over:
            return {**stopped("budget_exceeded", over.message), "answer": state.get("draft")}
        evidence = "\n".join(
            f"- {r['tool']} ({r['status']}): {r['content']}" for r in state.get("results") or []
        )
        review = [
            {"role": "system", "content": VALIDATOR_PROMPT},
            {
                "role": "user",
                "content": f"Request: {state['request']}\n\nTool results:\n{evidence or '(none)'}"
                f"\n\nDraft answer:\n{state.get('draft') or ''}",
            },
        ]
        turn, used = model_turn(services, agent, review)
        verdict = parse_json(turn.text)
        update: dict[str, Any] = {"spend": {**used, "steps": 1}}
        if not isinstance(verdict, dict) or verdict.get("verdict") not in ("accept", "revise"):
            return {
                **update,
                "answer": state.get("draft"),
                "status": "partial",
                "reason": f"the validator's reply was not a verdict ({(turn.text or '')[:120]!r}); "
                "the answer was not validated",
            }
        if verdict["verdict"] == "accept":
            return {**update, "answer": state.get("draft")}
        reason = str(verdict.get("reason") or "no reason given")
        if int(state.get("revisions") or 0) < MAX_REVISIONS:
            return {**update, "feedback": reason, "revisions": int(state.get("revisions") or 0) + 1}
        if agent.escalation.on_validation_failure:
            return {**update, "status": "needs_review", "reason": reason}
        return {**update, "answer": state.get("draft"), "status": "partial", "reason": reason}

    def review(state: WorkflowState) -> dict[str, Any]:
        decision = interrupt(
            {
                "kind": "review",
                "agent": state["agent"],
                "reason": f"the validator rejected the draft twice: {state.get('reason')}",
                "draft": state.get("draft"),
            }
        )
        if decision.get("approved"):
            return {"answer": state.get("draft"), "status": None, "reason": decision.get("note")}
        return {
            "answer": state.get("draft"),
            **stopped(
                "rejected",
                "a human reviewer rejected the answer: "
                + (decision.get("note") or "no reason given"),
            ),
        }

    def after_planner(state: WorkflowState) -> str:
        if state.get("status"):
            return "finish"
        pending = state.get("pending_calls") or []
        if not pending:
            return "validator"
        agent = registry.get(state["agent"])
        needs = any(p["name"] in agent.escalation.approve_tools for p in pending)
        return "approval" if needs else "executor"

    def after_executor(state: WorkflowState) -> str:
        return "finish" if state.get("status") else "planner"

    def after_validator(state: WorkflowState) -> str:
        if state.get("feedback"):
            return "planner"
        return "review" if state.get("status") == "needs_review" else "finish"

    graph = StateGraph(WorkflowState)
    graph.add_node("planner", traced(services, "planner", planner))
    graph.add_node("approval", traced(services, "approval", approval))
    graph.add_node("executor", traced(services, "executor", executor))
    graph.add_node("validator", traced(services, "validator", validator))
    graph.add_node("review", traced(services, "review", review))
    graph.add_node("finish", traced(services, "finish", finish(services)))
    graph.add_edge(START, "planner")
    graph.add_conditional_edges(
        "planner", after_planner, ["finish", "validator", "approval", "executor"]
    )
    graph.add_edge("approval", "executor")
    graph.add_conditional_edges("executor", after_executor, ["finish", "planner"])
    graph.add_conditional_edges("validator", after_validator, ["planner", "review", "finish"])
    graph.add_edge("review", "finish")
    graph.add_edge("finish", END)
    return graph
