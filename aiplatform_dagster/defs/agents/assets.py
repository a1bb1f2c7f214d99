"""Agent assets: the registry, its evaluation, the threads waiting for a human, and retention.

Agents run through the same runtime as the CLI (``aiplatform agent ...``) and read the same
settings through the ``platform`` resource. LangGraph and the model client load inside the
steps that use them, not when Dagster loads the code location.
"""

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from aiplatform_dagster.agents.checkpoints import AgentStoreNotMigrated, open_checkpointer
from aiplatform_dagster.agents.definitions import AgentRegistry, RegistryError, load_registry
from aiplatform_dagster.agents.evaluation import TaskResult, load_suite, run_suite
from aiplatform_dagster.agents.threads import ThreadIndex, open_thread_index
from aiplatform_dagster.config import Settings
from aiplatform_dagster.defs.compute import CPU_SMALL, on_profile
from aiplatform_dagster.defs.metadata import markdown_table
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.rag import factory

GROUP = "agents"
OWNERS = ["team:ml-platform"]
DAY_S = 24 * 3600.0


def registry_of(settings: Settings) -> AgentRegistry:
    """The configured registry; a definition that does not validate fails the step with where."""
    try:
        return load_registry(settings.agents.registry)
    except RegistryError as error:
        raise dg.Failure(str(error)) from error


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"yaml"},
    code_version="1",
    **on_profile(CPU_SMALL),
)
def agent_registry(platform: PlatformResource) -> dg.MaterializeResult:
    """The agent definitions (AIPLATFORM_AGENTS_REGISTRY, else the packaged registry.yaml),
    validated: each agent's mode, tools, permissions, delegates, limits and escalation policy,
    and the shipped tools with the permission each needs.

    `agent_registry_is_consistent` (blocking) fails on an agent naming an unknown tool or one
    its permissions forbid. The data version changes when any definition does.
    """
    from aiplatform_dagster.agents.tools.catalog import build_tool_registry

    settings = platform.settings()
    registry = registry_of(settings)
    tools = build_tool_registry(settings)
    agents = [
        {
            "agent": agent.name,
            "mode": agent.mode.value,
            "tools": ", ".join(agent.tools) or "-",
            "permissions": ", ".join(agent.permissions) or "-",
            "delegates": ", ".join(agent.delegates) or "-",
            "approval": ", ".join(agent.escalation.approve_tools) or "-",
            "model": agent.model or "default",
            "limits": f"{agent.limits.max_tokens} tokens, {agent.limits.max_wall_s:g} s, "
            f"${agent.limits.max_cost_usd:g}, {agent.limits.max_tool_calls} calls",
            "source": Path(agent.source).name,
        }
        for agent in registry
    ]
    catalog = [
        {
            "tool": name,
            "permission": tools.get(name).permission,
            "side_effecting": tools.get(name).side_effecting,
            "agents": ", ".join(a.name for a in registry if name in a.tools) or "-",
            "description": tools.get(name).description,
        }
        for name in tools
    ]
    digests = "\n".join(f"{agent.name}:{agent.digest}" for agent in registry)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(digests.encode()).hexdigest()[:16]),
        metadata={
            "agents": len(agents),
            "agent_table": markdown_table(agents, limit=len(agents)),
            "tools": markdown_table(catalog, limit=len(catalog)),
            "sources": dg.MetadataValue.json(list(registry.sources)),
        },
    )


class AgentEvalConfig(dg.Config):
    suite: str | None = Field(
        default=None,
        description="Evaluation suite YAML (tasks with expected outcomes). Unset: the shipped "
        "agents/eval_suite.yaml.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"langgraph", "openai"},
    deps=[agent_registry],
    code_version="1",
    **on_profile(CPU_SMALL),
)
def agent_eval(
    context: dg.AssetExecutionContext, config: AgentEvalConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """The evaluation suite run through every execution mode, one fresh thread per task:
    success rate, steps, latency p50/p95, tokens and cost per workflow, per mode.

    The rates and figures are floats, so the asset's plots follow them over materialisations.
    Without an LLM nothing runs, and the materialisation says so and why.
    """
    from aiplatform_dagster.agents.runtime import NO_LLM, open_runtime

    settings = platform.settings()
    llm = factory.llm_settings(settings)
    if not llm.is_configured:
        context.log.warning(f"agent_eval did not run: {NO_LLM}")
        return dg.MaterializeResult(metadata={"status": "not run", "reason": NO_LLM})
    suite = load_suite(Path(config.suite) if config.suite else None)

    def finished(task: TaskResult) -> None:
        outcome = "passed" if task.passed else f"FAILED: {'; '.join(task.failures)}"
        context.log.info(f"{task.task} ({task.mode}, {task.agent}): {task.status}, {outcome}")

    with open_runtime(settings) as runtime:
        report = run_suite(runtime, suite, finished)
    modes = report.modes()
    figures: dict[str, Any] = {}
    for mode in modes:
        for name in ("success_rate", "steps", "latency_p50_ms", "latency_p95_ms", "tokens"):
            figures[f"{mode.mode}/{name}"] = dg.MetadataValue.float(round(getattr(mode, name), 4))
        figures[f"{mode.mode}/cost_usd"] = dg.MetadataValue.float(round(mode.cost_usd, 6))
    return dg.MaterializeResult(
        metadata={
            "status": "evaluated",
            "model": llm.model,
            "suite": report.source,
            "tasks": len(report.tasks),
            "passed": report.passed,
            "success_rate": dg.MetadataValue.float(round(report.success_rate, 4)),
            **figures,
            "modes": markdown_table([_rounded(asdict(mode)) for mode in modes], limit=len(modes)),
            "task_results": markdown_table(
                [
                    _rounded({k: v for k, v in task.row().items() if k != "answer"})
                    for task in report.tasks
                ],
                limit=len(report.tasks),
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"langgraph"},
    code_version="1",
    **on_profile(CPU_SMALL),
)
def agent_escalations(platform: PlatformResource) -> dg.MaterializeResult:
    """Agent threads waiting for a human, with why and since when.

    `agent_escalations_sensor` refreshes it whenever the set of waiting threads changes. Answer
    one from the launchpad with the `resume_agent_thread` job, or with `aiplatform agent resume
    THREAD --approve|--reject`.
    """
    with open_thread_index(platform.settings()) as index:
        waiting = index.waiting()
    rows = [
        {
            "thread": record.thread_id,
            "agent": record.agent,
            "mode": record.mode,
            "reason": record.reason or "",
            "waiting_since": record.updated_at.isoformat(timespec="seconds")
            if record.updated_at
            else "",
            "request": record.request,
        }
        for record in waiting
    ]
    return dg.MaterializeResult(
        metadata={
            "waiting": len(rows),
            "threads": markdown_table(rows, limit=len(rows)),
            "thread_ids": dg.MetadataValue.json([row["thread"] for row in rows]),
        }
    )


class CheckpointRetentionConfig(dg.Config):
    older_than_days: float | None = Field(
        default=None,
        gt=0,
        description="Finished threads not updated for this many days are deleted. Unset: "
        "AIPLATFORM_AGENTS_RETENTION_DAYS.",
    )
    dry_run: bool = Field(
        default=False, description="Only report what would be deleted; delete nothing."
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"langgraph"},
    code_version="1",
    **on_profile(CPU_SMALL),
)
def checkpoint_retention(
    context: dg.AssetExecutionContext, config: CheckpointRetentionConfig, platform: PlatformResource
) -> dg.MaterializeResult:
    """Deletes finished agent threads (completed, partial, failed, rejected, over budget) older
    than the retention age: their checkpoints, then their index rows. Waiting and running
    threads are never touched. With `dry_run` it reports what it would delete.

    Checkpoint tables otherwise grow without limit; `daily_checkpoint_retention` runs it daily.
    A store never migrated holds no threads: the run says so instead of failing every day.
    """
    settings = platform.settings()
    days = config.older_than_days or settings.agents.retention_days
    try:
        with open_checkpointer(settings) as checkpointer:
            report = ThreadIndex.over(checkpointer).prune(
                days * DAY_S, checkpointer, dry_run=config.dry_run
            )
    except AgentStoreNotMigrated as error:
        context.log.warning(f"Nothing to prune: {error}")
        return dg.MaterializeResult(metadata={"status": "not run", "reason": str(error)})
    verb = "would_delete" if report.dry_run else "deleted"
    context.log.info(
        f"{verb.replace('_', ' ')} {len(report.threads)} threads ({report.checkpoints} "
        f"checkpoints) finished before {report.cutoff:%Y-%m-%d %H:%M} UTC"
    )
    rows = [
        {
            "thread": thread.thread_id,
            "status": thread.status.value,
            "updated_at": thread.updated_at.isoformat(timespec="seconds"),
            "checkpoints": thread.checkpoints,
        }
        for thread in report.threads
    ]
    return dg.MaterializeResult(
        metadata={
            "dry_run": report.dry_run,
            "older_than_days": float(days),
            "cutoff": report.cutoff.isoformat(timespec="seconds"),
            f"{verb}/threads": len(report.threads),
            f"{verb}/checkpoints": report.checkpoints,
            "threads": markdown_table(rows, limit=len(rows)),
        }
    )


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
