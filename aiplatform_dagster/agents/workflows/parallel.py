"""Parallel mode: a pool of agents on independent subtasks, then one aggregated answer.

The request's subtasks are given by the caller or split by the model; each goes to a worker
through LangGraph's ``Send`` (they run concurrently, in one superstep), and the aggregator
merges the workers' typed hand-offs into one answer that keeps their citations. The workers
share the thread's memory: each finds what the others wrote before it started.
"""

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from aiplatform_dagster.agents.state import WorkflowState, add_spend, spend
from aiplatform_dagster.agents.workflows.nodes import budget_of, finish, stopped, thread_of, traced
from aiplatform_dagster.agents.workflows.services import Services
from aiplatform_dagster.agents.workflows.steps import (
    model_turn,
    parse_json,
    run_agent,
    shared_notes,
)

VERSION = "parallel/1"
MAX_SUBTASKS = 8
SPLIT_PROMPT = f"""Split the user's request into independent subtasks that can be researched
separately (at most {MAX_SUBTASKS}). Reply with a JSON list of strings only."""
AGGREGATE_PROMPT = """Combine the reports of several assistants into one answer to the request.
Keep every citation in brackets exactly as the reports give it, drop nothing that answers the
request, and say which parts could not be answered."""


def build(services: Services) -> StateGraph:
    registry = services.registry

    def split(state: WorkflowState) -> dict[str, Any]:
        if state.get("subtasks"):
            return {"spend": spend(steps=1)}
        agent = registry.get(state["agent"])
        over = budget_of(state, agent).breach()
        if over:
            return stopped("budget_exceeded", over.message)
        turn, used = model_turn(
            services,
            agent,
            [
                {"role": "system", "content": SPLIT_PROMPT},
                {"role": "user", "content": state["request"]},
            ],
        )
        parsed = parse_json(turn.text)
        subtasks = (
            [str(item) for item in parsed if str(item).strip()][:MAX_SUBTASKS]
            if isinstance(parsed, list)
            else []
        )
        return {"subtasks": subtasks or [state["request"]], "spend": {**used, "steps": 1}}

    def fan_out(state: WorkflowState) -> list[Send] | str:
        if state.get("status"):
            return "finish"
        return [
            Send("worker", {**state, "task": task, "task_index": index})
            for index, task in enumerate(state["subtasks"])
        ]

    def worker(state: WorkflowState, config: dict) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        thread_id = thread_of(config)
        task, index = state["task"], state["task_index"]

        work = run_agent(
            services,
            agent,
            task,
            thread_id=thread_id,
            call_prefix=f"w{index}",
            workflow=budget_of(state, agent),
            notes=shared_notes(services, thread_id),
        )
        services.memory.put(thread_id, f"subtask {index}", work.handoff.answer)
        return {
            "handoffs": [work.handoff.model_dump()],
            "results": work.results,
            "sources": list(work.handoff.sources),
            "spend": add_spend(work.spend, spend(steps=1)),
        }

    def aggregate(state: WorkflowState) -> dict[str, Any]:
        agent = registry.get(state["agent"])
        handoffs = state.get("handoffs") or []
        over = budget_of(state, agent).breach()
        if over:
            answer = "\n\n".join(h["answer"] for h in handoffs if h["answer"])
            return {**stopped("budget_exceeded", over.message), "answer": answer}
        reports = "\n\n".join(
            f"Subtask: {h['task']}\nStatus: {h['status']}\nReport: {h['answer']}" for h in handoffs
        )
        turn, used = model_turn(
            services,
            agent,
            [
                {"role": "system", "content": AGGREGATE_PROMPT},
                {"role": "user", "content": f"Request: {state['request']}\n\n{reports}"},
            ],
        )
        update: dict[str, Any] = {"answer": turn.text or "", "spend": {**used, "steps": 1}}
        unfinished = [h for h in handoffs if h["status"] != "completed"]
        if unfinished:
            update["status"] = (
                "budget_exceeded"
                if any(h["status"] == "budget_exceeded" for h in unfinished)
                else "partial"
            )
            update["reason"] = "; ".join(
                f"subtask {h['task']!r} ended {h['status']}"
                + (f" ({', '.join(h['notes'])})" if h["notes"] else "")
                for h in unfinished
            )
        return update

    graph = StateGraph(WorkflowState)
    graph.add_node("split", traced(services, "split", split))
    graph.add_node("worker", traced(services, "worker", worker))
    graph.add_node("aggregate", traced(services, "aggregate", aggregate))
    graph.add_node("finish", traced(services, "finish", finish(services)))
    graph.add_edge(START, "split")
    graph.add_conditional_edges("split", fan_out, ["worker", "finish"])
    graph.add_edge("worker", "aggregate")
    graph.add_edge("aggregate", "finish")
    graph.add_edge("finish", END)
    return graph
