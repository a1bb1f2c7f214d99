"""Agent jobs: migrate the checkpoint store, answer a waiting thread, prune old threads.

Migration is its own step (the checkpointer's ``setup()`` takes locks and runs DDL, which must
never happen inside a request); the other jobs and the runtime refuse an un-migrated store.
"""

import dagster as dg
from pydantic import Field

from aiplatform_dagster.agents.threads import Decision, approval_of
from aiplatform_dagster.defs.agents.assets import checkpoint_retention
from aiplatform_dagster.defs.compute import CPU_SMALL, op_on_profile
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.errors import PlatformError

FAILED_STATUSES = frozenset({"failed", "budget_exceeded"})
"""Resumed workflows that end so fail the op; partial and rejected are outcomes, not errors."""


@dg.op(**op_on_profile(CPU_SMALL))
def migrate_agent_store_op(context: dg.OpExecutionContext, platform: PlatformResource) -> None:
    """Create or upgrade the checkpoint tables and the thread index (safe to run again)."""
    from aiplatform_dagster.agents.checkpoints import migrate

    for line in migrate(platform.settings()):
        context.log.info(f"migrated {line}")


@dg.job(
    description="Create or upgrade the agents' checkpoint tables and thread index, as "
    "`aiplatform agent migrate` does: once per release, before agents run."
)
def migrate_agent_store() -> None:
    migrate_agent_store_op()


class ResumeConfig(dg.Config):
    thread_id: str = Field(description="The waiting thread (see the agent_escalations asset).")
    decision: Decision = Field(
        description="approve: the step it waits on runs; reject: it is refused; continue: a "
        "thread whose process died (status running) goes on from its last checkpoint."
    )
    note: str = Field(default="", description="Why; the workflow and its trace keep it.")


@dg.op(**op_on_profile(CPU_SMALL))
def resume_agent_thread_op(
    context: dg.OpExecutionContext, config: ResumeConfig, platform: PlatformResource
) -> None:
    """Answer the thread's waiting step and run its workflow on until it ends or waits again."""
    from aiplatform_dagster.agents.runtime import open_runtime
    from aiplatform_dagster.agents.tracing import trace_path

    settings = platform.settings()
    approve = approval_of(config.decision)
    try:
        with open_runtime(settings) as runtime:
            result = runtime.resume(config.thread_id, approve, config.note)
    except PlatformError as error:
        raise dg.Failure(f"cannot resume thread {config.thread_id}: {error}") from error
    context.log.info(
        f"thread {result.thread_id} ({result.agent}, {result.mode}) after {config.decision}: "
        f"{result.status}" + (f": {result.reason}" if result.reason else "")
    )
    context.add_output_metadata(
        {
            "thread_id": result.thread_id,
            "decision": config.decision,
            "status": result.status,
            "reason": result.reason or "",
            "answer": dg.MetadataValue.md(result.answer or "_(none)_"),
        }
    )
    if result.status in FAILED_STATUSES:
        raise dg.Failure(
            f"thread {result.thread_id} resumed and ended {result.status}: {result.reason}. "
            f"Its trace {trace_path(settings, result.thread_id)} shows the step that failed."
        )


@dg.job(
    description="Resume an agent thread waiting for a human, with approve or reject and a note "
    "(as `aiplatform agent resume THREAD --approve|--reject --note ...`)."
)
def resume_agent_thread() -> None:
    resume_agent_thread_op()


checkpoint_retention_job = dg.define_asset_job(
    "checkpoint_retention_job",
    selection=[checkpoint_retention],
    description="Delete finished agent threads older than the retention age.",
)
