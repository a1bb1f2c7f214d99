"""The thread index: one row per agent thread (who runs it, what was asked, where it stands) in
the checkpoint database, so threads can be listed, resumed and pruned without reading
checkpoints.

Checkpoint tables grow without limit otherwise (langgraph#8531): ``prune`` deletes finished
threads older than an age, checkpoints first and the index row last, so an interrupted prune
leaves rows the next one finds again.
"""

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from aiplatform_dagster.agents.checkpoints import THREADS_TABLE, Database, open_checkpointer
from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""Thread ids name trace files, so they stay plain: no separators, no leading dot."""


class ThreadStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    REJECTED = "rejected"


FINISHED = frozenset(
    {
        ThreadStatus.COMPLETED,
        ThreadStatus.PARTIAL,
        ThreadStatus.FAILED,
        ThreadStatus.BUDGET_EXCEEDED,
        ThreadStatus.REJECTED,
    }
)
"""Statuses a thread does not leave by itself; only these are pruned."""

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {THREADS_TABLE} (
        thread_id TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        mode TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        graph_version TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {THREADS_TABLE}_status_updated "
    f"ON {THREADS_TABLE} (status, updated_at)",
)
COLUMNS = "thread_id, agent, mode, request, status, reason, graph_version, created_at, updated_at"


Decision = Literal["approve", "reject", "continue"]
"""A human's answer to a thread: approve or reject the step it waits on, or continue a thread
whose process died."""


def approval_of(decision: Decision) -> bool | None:
    """``decision`` as ``AgentRuntime.resume``'s ``approve`` argument."""
    return {"approve": True, "reject": False, "continue": None}[decision]


class InvalidThreadId(PlatformError):
    """A thread id that cannot name a thread."""


def check_thread_id(thread_id: str) -> str:
    """``thread_id`` if it is a usable thread id, else InvalidThreadId saying what is allowed."""
    if not THREAD_ID.fullmatch(thread_id):
        raise InvalidThreadId(
            f"invalid thread id {thread_id!r}: use 1 to 128 letters, digits, '_', '.', ':' or "
            "'-', starting with a letter or digit"
        )
    return thread_id


@dataclass(frozen=True)
class ThreadRecord:
    """A thread as the index knows it; the timestamps are set by ``ThreadIndex.save``."""

    thread_id: str
    agent: str
    mode: str
    request: str
    status: ThreadStatus
    reason: str | None = None
    graph_version: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class PrunedThread:
    thread_id: str
    status: ThreadStatus
    updated_at: datetime
    checkpoints: int


@dataclass(frozen=True)
class PruneReport:
    """What a prune deleted, or with ``dry_run`` would delete."""

    dry_run: bool
    cutoff: datetime
    threads: tuple[PrunedThread, ...]

    @property
    def checkpoints(self) -> int:
        return sum(thread.checkpoints for thread in self.threads)


class ThreadIndex:
    """Thread rows in table ``agent_threads`` of the checkpoint database."""

    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = database
        self._clock = clock

    @classmethod
    def over(
        cls, checkpointer: "BaseCheckpointSaver", clock: Callable[[], float] = time.time
    ) -> "ThreadIndex":
        """The index in ``checkpointer``'s database, on its connection or pool."""
        return cls(Database(checkpointer), clock)

    def setup(self) -> None:
        """Create the table and its index if missing (run by ``migrate``, never in a request)."""
        for statement in SCHEMA:
            self._db.rows(statement)

    def save(self, record: ThreadRecord) -> ThreadRecord:
        """Insert or update the thread; returns it with its creation and update times."""
        check_thread_id(record.thread_id)
        now = self._clock()
        stored = self._db.rows(
            f"INSERT INTO {THREADS_TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (thread_id) DO UPDATE SET agent = excluded.agent, "
            "mode = excluded.mode, request = excluded.request, status = excluded.status, "
            "reason = excluded.reason, graph_version = excluded.graph_version, "
            "updated_at = excluded.updated_at RETURNING created_at",
            _row(record, now),
        )
        return replace(
            record,
            status=ThreadStatus(record.status),
            created_at=_datetime(stored[0]["created_at"]),
            updated_at=_datetime(now),
        )

    def create(self, record: ThreadRecord) -> ThreadRecord | None:
        """Insert a new thread; None when the id is taken (two runs naming one thread: the
        first wins), so a run never takes over another's checkpoints."""
        check_thread_id(record.thread_id)
        now = self._clock()
        created = self._db.rows(
            f"INSERT INTO {THREADS_TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (thread_id) DO NOTHING RETURNING thread_id",
            _row(record, now),
        )
        if not created:
            return None
        return replace(record, created_at=_datetime(now), updated_at=_datetime(now))

    def claim(self, thread_id: str, expected: ThreadStatus) -> bool:
        """Move the thread from ``expected`` to running in one statement: of two resumes of
        one waiting thread, exactly one gets True and runs it."""
        claimed = self._db.rows(
            f"UPDATE {THREADS_TABLE} SET status = ?, reason = NULL, updated_at = ? "
            "WHERE thread_id = ? AND status = ? RETURNING thread_id",
            (ThreadStatus.RUNNING.value, self._clock(), thread_id, ThreadStatus(expected).value),
        )
        return bool(claimed)

    def get(self, thread_id: str) -> ThreadRecord | None:
        found = self._db.rows(
            f"SELECT {COLUMNS} FROM {THREADS_TABLE} WHERE thread_id = ?", (thread_id,)
        )
        return _record(found[0]) if found else None

    def waiting(self) -> list[ThreadRecord]:
        """Every thread paused for a human decision."""
        return self.list(ThreadStatus.WAITING, limit=None)

    def prune(
        self, older_than_s: float, checkpointer: "BaseCheckpointSaver", *, dry_run: bool = False
    ) -> PruneReport:
        """Delete finished threads not updated for ``older_than_s`` seconds: their checkpoints
        (through ``checkpointer``), then their rows. ``dry_run`` only reports them."""
        cutoff = self._clock() - older_than_s
        finished = sorted(status.value for status in FINISHED)
        rows = self._db.rows(
            f"SELECT thread_id, status, updated_at FROM {THREADS_TABLE} "
            f"WHERE status IN ({', '.join('?' * len(finished))}) AND updated_at < ? "
            "ORDER BY updated_at, thread_id",
            (*finished, cutoff),
        )
        threads = []
        for row in rows:
            thread_id = row["thread_id"]
            counted = self._db.rows(
                "SELECT count(*) AS n FROM checkpoints WHERE thread_id = ?", (thread_id,)
            )
            if not dry_run:
                checkpointer.delete_thread(thread_id)
                self._db.rows(f"DELETE FROM {THREADS_TABLE} WHERE thread_id = ?", (thread_id,))
            threads.append(
                PrunedThread(
                    thread_id=thread_id,
                    status=ThreadStatus(row["status"]),
                    updated_at=_datetime(row["updated_at"]),
                    checkpoints=int(counted[0]["n"]),
                )
            )
        return PruneReport(dry_run=dry_run, cutoff=_datetime(cutoff), threads=tuple(threads))

    # Last in the class: below it, ``list`` would name this method in annotations.
    def list(
        self, status: ThreadStatus | None = None, limit: int | None = 100
    ) -> list[ThreadRecord]:
        """Threads, most recently updated first; all of them when ``limit`` is None."""
        sql, params = f"SELECT {COLUMNS} FROM {THREADS_TABLE}", ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (ThreadStatus(status).value,)
        sql += " ORDER BY updated_at DESC, thread_id"
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        return [_record(row) for row in self._db.rows(sql, params)]


@contextmanager
def open_thread_index(settings: Settings) -> Iterator[ThreadIndex]:
    """The configured thread index, on a checkpointer of its own; a caller that already holds a
    checkpointer shares its connections with ``ThreadIndex.over(checkpointer)``."""
    with open_checkpointer(settings) as checkpointer:
        yield ThreadIndex.over(checkpointer)


def _row(record: ThreadRecord, now: float) -> tuple[Any, ...]:
    """``record``'s values in COLUMNS order, created and updated ``now``."""
    return (
        record.thread_id,
        record.agent,
        record.mode,
        record.request,
        ThreadStatus(record.status).value,
        record.reason,
        record.graph_version,
        now,
        now,
    )


def _record(row: dict[str, Any]) -> ThreadRecord:
    return ThreadRecord(
        thread_id=row["thread_id"],
        agent=row["agent"],
        mode=row["mode"],
        request=row["request"],
        status=ThreadStatus(row["status"]),
        reason=row["reason"],
        graph_version=row["graph_version"],
        created_at=_datetime(row["created_at"]),
        updated_at=_datetime(row["updated_at"]),
    )


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
