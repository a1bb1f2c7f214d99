"""Instance upkeep for runs no daemon watches: `python -m aiplatform_dagster.defs.maintenance`.

A run whose process is killed (SIGKILL, an OOM kill, a hard Ctrl-C) stays STARTED and keeps
its concurrency-pool slots, so every later step in that pool waits forever. Under
`dagster dev` the code server marks such a run failed and the daemon's run monitoring
frees its slots (dagster.yaml). A run started from the CLI (`make ingest`) has neither, so
the Makefile runs this module first: it marks runs whose worker process is gone as failed,
frees the slots of finished runs, and sets the project's pool limits.
"""

import os

import dagster as dg

from aiplatform_dagster.defs.compute import ComputePool

POOL_LIMITS: dict[str, int] = {ComputePool.GPU.value: 1, ComputePool.CPU.value: 4}
"""Steps at once per pool. One GPU step (one model in accelerator memory); CPU steps of the
two concurrent runs (dagster.yaml) overlap, two per run (the BM25 and vector builds)."""

FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def apply_pool_limits(instance: dg.DagsterInstance) -> list[str]:
    """Set POOL_LIMITS on pools that have no limit or only Dagster's default one.

    Dagster 1.13 keeps per-pool limits in the instance database, not in dagster.yaml; a
    limit someone set by hand (UI or `dagster instance concurrency set`) is kept.
    """
    storage = instance.event_log_storage
    current = {pool.name: pool for pool in storage.get_pool_limits()}
    changed = []
    for name, limit in POOL_LIMITS.items():
        pool = current.get(name)
        if pool is None or (pool.from_default and pool.limit != limit):
            storage.set_concurrency_slots(name, limit)
            changed.append(f"Set the {name} pool limit to {limit}")
    return changed


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark started runs whose worker process has exited as failed.

    Only for the local run launcher, whose workers are processes on this machine; other
    launchers (Kubernetes) report worker health to the daemon's run monitoring.
    """
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = _worker_pid(instance, run.run_id)
        if pid is None or _is_running(pid):
            continue
        instance.report_run_failed(
            run, f"The run's worker process {pid} is gone (killed or crashed): marked failed."
        )
        failed.append(f"Marked run {run.run_id} as failed: its worker process {pid} is gone")
    return failed


def free_slots_of_finished_runs(instance: dg.DagsterInstance) -> list[str]:
    """Free the pool slots still held by runs that have ended, as the daemon would."""
    storage = instance.event_log_storage
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return []
    finished = dg.RunsFilter(run_ids=list(holders), statuses=list(FINISHED))
    freed = []
    for run in instance.get_runs(filters=finished):
        storage.free_concurrency_slots_for_run(run.run_id)
        freed.append(f"Freed the pool slots of run {run.run_id} ({run.status.value})")
    return freed


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that started executing the run (its RUN_START event's)."""
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    event = starts[-1].dagster_event if starts else None
    return event.pid if event else None


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        actions = [
            *fail_dead_runs(instance),
            *free_slots_of_finished_runs(instance),
            *apply_pool_limits(instance),
        ]
    for line in actions:
        print(line)


if __name__ == "__main__":
    main()
