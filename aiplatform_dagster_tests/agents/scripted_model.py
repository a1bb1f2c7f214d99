"""A deterministic tool-using "model" for the fake OpenAI server, scripted by the request text.

No LLM can be reached here, so agent tests script the model's turns in the request itself:
- ``CALL tool {json}`` lines: on its first turn for a task, the agent calls those tools;
  after the results come back it answers ``Done: <the tool results>`` (so citations and
  numbers flow through to the answer).
- parallel mode: the request's ``- `` lines are the subtasks the model splits it into.
- hierarchical mode: ``DELEGATE agent: task`` lines are the coordinator's delegations.
- ``VALIDATOR:revise`` in the request makes the validator ask for a revision every time.
Each prompt of the workflows is recognised by its system message, as a real model would read
it; everything the server answers goes through the real openai client and the real protocol.
"""

import json
import re
from typing import Any

from aiplatform_dagster.agents.workflows.parallel import AGGREGATE_PROMPT, SPLIT_PROMPT
from aiplatform_dagster.agents.workflows.sequential import VALIDATOR_PROMPT
from aiplatform_dagster_tests.fake_openai import ToolCallReply

CALL = re.compile(r"CALL (\w+) (\{.*?\})(?=\s*(?:CALL |$))", re.MULTILINE)
DELEGATE = re.compile(r"^DELEGATE (\w+): (.+)$", re.MULTILINE)


def scripted_agent_model(messages: list[dict[str, Any]]) -> str | ToolCallReply:
    system = str(messages[0].get("content") or "")
    user = next(str(m.get("content") or "") for m in messages if m["role"] == "user")
    since_user = _after_last_user(messages)
    results = [str(m.get("content") or "") for m in since_user if m["role"] == "tool"]
    if system == VALIDATOR_PROMPT:
        revise = "VALIDATOR:revise" in user
        verdict = (
            {"verdict": "revise", "reason": "cite a source"} if revise else {"verdict": "accept"}
        )
        return json.dumps(verdict)
    if system == SPLIT_PROMPT:
        return json.dumps([line[2:].strip() for line in user.splitlines() if line.startswith("- ")])
    if system == AGGREGATE_PROMPT:
        reports = re.findall(r"Report: (.*)", user)
        return "Combined: " + " | ".join(reports)
    if "Your team:" in system:
        if results:
            return "Combined: " + " | ".join(
                json.loads(r)["answer"] if r.startswith("{") else r for r in results
            )
        return ToolCallReply(
            tuple(("delegate", {"agent": a, "task": t}) for a, t in DELEGATE.findall(user))
        )
    if results:
        return "Done: " + " | ".join(results)
    calls = tuple((name, json.loads(arguments)) for name, arguments in CALL.findall(user))
    return ToolCallReply(calls) if calls else f"Answer: {user}"


def _after_last_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[last + 1 :]
