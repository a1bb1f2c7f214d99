"""The thread index on both backends: rows round-trip, and prune deletes only finished threads
past the age, checkpoints included, or with a dry run only says which."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplatform_dagster.agents.checkpoints import migrate, open_checkpointer
from aiplatform_dagster.agents.threads import (
    InvalidThreadId,
    ThreadIndex,
    ThreadRecord,
    ThreadStatus,
    open_thread_index,
)
from aiplatform_dagster.config import Settings, load_settings
from aiplatform_dagster_tests.agents.test_checkpoints import two_step_graph
from aiplatform_dagster_tests.postgres import temporary_database

DAY = 24 * 3600.0
NOW = 1_750_000_000.0


class Clock:
    """A settable time.time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A migrated store of either backend."""
    environ = {"AIPLATFORM_STORAGE_DIR": str(tmp_path)}
    if request.param == "sqlite":
        migrate(load_settings(environ))
        yield load_settings(environ)
        return
    with temporary_database("agents_threads") as url:
        settings = load_settings({**environ, "AIPLATFORM_AGENTS_CHECKPOINT_DSN": url})
        migrate(settings)
        yield settings


def record(thread_id: str, status: ThreadStatus, **fields: str) -> ThreadRecord:
    return ThreadRecord(
        thread_id=thread_id,
        agent="analyst",
        mode="sequential",
        request="Summarise the paging policy",
        status=status,
        **fields,
    )


def test_records_round_trip_keep_their_creation_time_and_list_newest_first(
    settings: Settings,
) -> None:
    clock = Clock(NOW)
    with open_checkpointer(settings) as checkpointer:
        index = ThreadIndex.over(checkpointer, clock=clock)
        saved = index.save(record("a", ThreadStatus.RUNNING, graph_version="g1"))
        assert saved.created_at == saved.updated_at and saved.created_at.timestamp() == NOW
        clock.now += 60
        index.save(record("b", ThreadStatus.WAITING))
        clock.now += 60
        updated = index.save(record("a", ThreadStatus.FAILED, reason="tool sql_query failed"))
        assert updated.created_at.timestamp() == NOW and updated.updated_at.timestamp() == NOW + 120
        assert index.get("a") == updated and updated.finished
        assert index.get("a").graph_version is None and index.get("missing") is None
        assert [thread.thread_id for thread in index.list()] == ["a", "b"]
        assert [thread.thread_id for thread in index.list(limit=1)] == ["a"]
        assert [thread.thread_id for thread in index.waiting()] == ["b"]
        assert index.list(ThreadStatus.COMPLETED) == []
        with pytest.raises(InvalidThreadId, match="letters, digits"):
            index.save(record("../etc", ThreadStatus.RUNNING))
        waiting = index.get("b")
    with open_thread_index(settings) as reopened:
        assert reopened.get("b") == waiting


def test_prune_deletes_only_finished_threads_past_the_age_and_their_checkpoints(
    settings: Settings,
) -> None:
    clock = Clock(NOW - 40 * DAY)
    with open_checkpointer(settings) as checkpointer:
        index = ThreadIndex.over(checkpointer, clock=clock)
        graph = two_step_graph().compile(checkpointer=checkpointer)
        old = {
            "old-done": ThreadStatus.COMPLETED,
            "old-failed": ThreadStatus.FAILED,
            "old-rejected": ThreadStatus.REJECTED,
            "old-running": ThreadStatus.RUNNING,
            "old-waiting": ThreadStatus.WAITING,
        }
        for thread_id, status in old.items():
            graph.invoke({"steps": []}, {"configurable": {"thread_id": thread_id}})
            index.save(record(thread_id, status))
        clock.now = NOW - 1 * DAY
        graph.invoke({"steps": []}, {"configurable": {"thread_id": "new-done"}})
        index.save(record("new-done", ThreadStatus.COMPLETED))
        clock.now = NOW

        planned = index.prune(30 * DAY, checkpointer, dry_run=True)
        assert planned.dry_run and planned.cutoff.timestamp() == NOW - 30 * DAY
        assert sorted(thread.thread_id for thread in planned.threads) == [
            "old-done",
            "old-failed",
            "old-rejected",
        ]
        assert {thread.checkpoints for thread in planned.threads} == {4}
        assert planned.checkpoints == 12
        assert index.get("old-done") is not None  # a dry run deletes nothing
        assert checkpointer.get_tuple({"configurable": {"thread_id": "old-done"}}) is not None

        pruned = index.prune(30 * DAY, checkpointer)
        assert not pruned.dry_run and pruned.threads == planned.threads
        for thread in pruned.threads:
            assert index.get(thread.thread_id) is None
            assert checkpointer.get_tuple({"configurable": {"thread_id": thread.thread_id}}) is None
        kept = ["new-done", "old-running", "old-waiting"]
        assert sorted(thread.thread_id for thread in index.list()) == kept
        for thread_id in kept:
            assert checkpointer.get_tuple({"configurable": {"thread_id": thread_id}}) is not None
        assert index.prune(30 * DAY, checkpointer).threads == ()
