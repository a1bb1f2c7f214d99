"""``aiplatform agent ...``: run, resume, list and migrate from a terminal.

Kept beside the agents rather than in cli.py so the agent commands read as one unit; cli.py
only mounts them.
"""

import argparse
import json
from typing import Any

from aiplatform_dagster.agents.definitions import Mode

MODES = [mode.value for mode in Mode]


def add_agent_commands(commands: Any) -> None:
    """Mount ``agent run|resume|list|threads|migrate`` on the top-level subparsers."""
    agent = commands.add_parser("agent", help="Run agent workflows and manage their threads.")
    actions = agent.add_subparsers(dest="action", required=True)

    run = actions.add_parser("run", help="Run a request through an agent workflow.")
    run.add_argument("request")
    run.add_argument("--mode", choices=MODES, help="Default: the agent's own mode.")
    run.add_argument("--agent", help="Agent from the registry (default: the first of the mode).")
    run.add_argument("--subtask", action="append", default=[], help="Parallel mode: a subtask.")
    run.add_argument("--thread", help="Thread id (default: a new random id).")
    run.add_argument("--json", action="store_true", help="The full result as JSON.")
    run.set_defaults(handler=_run)

    resume = actions.add_parser(
        "resume", help="Answer a thread waiting for a human, or continue one whose process died."
    )
    resume.add_argument("thread")
    decision = resume.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="Let the waiting step run.")
    decision.add_argument("--reject", action="store_true", help="Refuse the waiting step.")
    resume.add_argument("--note", default="", help="Why; the workflow and the trace keep it.")
    resume.add_argument("--json", action="store_true", help="The full result as JSON.")
    resume.set_defaults(handler=_resume)

    listing = actions.add_parser("list", help="The agents of the registry and their tools.")
    listing.set_defaults(handler=_list)

    threads = actions.add_parser("threads", help="Threads, newest first (waiting ones first).")
    threads.add_argument("--status", help="Only threads with this status, e.g. waiting.")
    threads.set_defaults(handler=_threads)

    migrate = actions.add_parser(
        "migrate", help="Create or upgrade the checkpoint tables (run once per release)."
    )
    migrate.set_defaults(handler=_migrate)


def _run(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.agents.runtime import open_runtime

    with open_runtime(settings) as runtime:
        result = runtime.run(
            args.request,
            agent=args.agent,
            mode=args.mode,
            thread_id=args.thread,
            subtasks=args.subtask,
        )
    return _show(result, args.json)


def _resume(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.agents.runtime import open_runtime

    approve = True if args.approve else False if args.reject else None
    with open_runtime(settings) as runtime:
        result = runtime.resume(args.thread, approve, args.note)
    return _show(result, args.json)


def _show(result: Any, as_json: bool) -> int:
    """Print a run's outcome; exit 0 when it completed or waits, 1 when it ended otherwise."""
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(f"thread {result.thread_id} ({result.agent}, {result.mode}): {result.status}")
        if result.reason:
            print(f"  {result.reason}")
        if result.answer:
            print()
            print(result.answer)
        for number, chunk_id in enumerate(result.citations, start=1):
            source = next(s for s in result.sources if str(s.get("chunk_id")) == chunk_id)
            print(f"  [{number}] {chunk_id}  {source.get('title', '')}  {source.get('source', '')}")
        spent = result.spend
        print(
            f"\n  {int(spent.get('steps', 0))} steps, {int(spent.get('llm_calls', 0))} model calls,"
            f" {int(spent.get('tool_calls', 0))} tool calls, "
            f"{int(spent.get('prompt_tokens', 0) + spent.get('completion_tokens', 0))} tokens, "
            f"${spent.get('cost_usd', 0):.4f}, {result.latency_ms / 1000:.1f} s"
        )
        if result.status == "waiting":
            print(
                f"\n  waiting for a human: `aiplatform agent resume {result.thread_id} "
                "--approve|--reject [--note TEXT]`"
            )
    return 0 if result.status in ("completed", "waiting") else 1


def _list(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.agents.definitions import load_registry
    from aiplatform_dagster.agents.tools.catalog import TOOL_PERMISSIONS

    registry = load_registry(settings.agents.registry)
    print(f"registry: {', '.join(registry.sources)}")
    for agent in registry:
        limits = agent.limits
        print(f"\n{agent.name} ({agent.mode.value}): {agent.description}")
        if agent.tools:
            print(f"  tools: {', '.join(agent.tools)}")
        if agent.delegates:
            print(f"  delegates: {', '.join(agent.delegates)}")
        print(f"  permissions: {', '.join(agent.permissions) or '-'}")
        print(
            f"  limits: {limits.max_tokens} tokens, {limits.max_wall_s:g} s, "
            f"${limits.max_cost_usd:g}, {limits.max_tool_calls} tool calls"
        )
        if agent.escalation.approve_tools:
            print(f"  needs approval: {', '.join(agent.escalation.approve_tools)}")
    problems = registry.problems(TOOL_PERMISSIONS)
    for problem in problems:
        print(f"\nPROBLEM {problem.agent} ({problem.source}): {problem.problem}")
    return 1 if problems else 0


def _threads(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.agents.threads import ThreadStatus, open_thread_index

    status = ThreadStatus(args.status) if args.status else None
    with open_thread_index(settings) as index:
        records = index.list(status)
    if not records:
        print("no threads")
    for record in sorted(records, key=lambda r: r.status != ThreadStatus.WAITING):
        when = record.updated_at.isoformat(timespec="seconds") if record.updated_at else "-"
        print(f"{record.thread_id}  {record.status.value:<15} {record.agent:<14} {when}")
        if record.reason:
            print(f"    {record.reason}")
    return 0


def _migrate(args: argparse.Namespace, settings: Any) -> int:
    from aiplatform_dagster.agents.checkpoints import migrate

    for line in migrate(settings):
        print(line)
    return 0
