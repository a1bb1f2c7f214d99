"""The query log: each query's features, appended in batches and read back by time window.

Two stores behind one protocol. ``ParquetQueryLog`` (the laptop default) writes one file per
flush under ``<storage>/monitoring/query_log/date=YYYY-MM-DD/`` (UTC), so a daily window reads
one folder; each file is written under a hidden scratch name and renamed into place, so a
process killed mid-write leaves every earlier file whole and no half file visible.
``PostgresQueryLog`` (``AIPLATFORM_MONITORING_QUERY_LOG_DSN``) serves many replicas.

Appends only buffer; ``flush`` writes. A store that cannot write keeps its buffer, bounded
(the oldest records go first and are counted in ``dropped``), and raises
``QueryLogUnavailable``; the recorder turns that into a warning, never a failed query.
"""

import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.monitoring.features import (
    COLUMNS,
    EMBEDDING,
    TIMESTAMP,
    QueryRecord,
)
from aiplatform_dagster.rag.index.atomic import write_atomically

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

DEFAULT_MAX_BUFFER = 50_000
"""Records a store holds while it cannot write (about 80 MB with 384-dimension embeddings)."""


class QueryLogUnavailable(PlatformError, RuntimeError):
    """The query log could not be written or read; the message names the store and the fix."""


class QueryLog(Protocol):
    """Where query records go: buffered appends, explicit flushes, reads by time window."""

    def append(self, record: QueryRecord) -> None: ...

    def flush(self) -> int:
        """Write what is buffered; return how many records were written."""
        ...

    def read(self, start: datetime, end: datetime) -> "pd.DataFrame":
        """Records with ``start <= ts < end`` (UTC), oldest first, columns ``COLUMNS``."""
        ...


class BufferedLog:
    """The bounded buffer both stores share; subclasses write a batch in ``_write`` and may
    split the buffer into batches that are written, and leave the buffer, one by one.

    Not thread-safe: one thread (the recorder's) appends and flushes.
    """

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer}")
        self._buffer: deque[QueryRecord] = deque()
        self._max_buffer = max_buffer
        self.dropped = 0
        """Records discarded because the buffer was full while the store could not write."""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def append(self, record: QueryRecord) -> None:
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(record)

    def flush(self) -> int:
        written = 0
        for batch in self._batches(list(self._buffer)):
            self._write(batch)
            done = {id(record) for record in batch}
            self._buffer = deque(r for r in self._buffer if id(r) not in done)
            written += len(batch)
        return written

    def _batches(self, records: list[QueryRecord]) -> list[list[QueryRecord]]:
        return [records] if records else []

    def _write(self, records: Sequence[QueryRecord]) -> None:
        raise NotImplementedError


class ParquetQueryLog(BufferedLog):
    """Parquet files under ``root``, one per flush and UTC day."""

    def __init__(self, root: Path, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        super().__init__(max_buffer)
        self.root = Path(root)

    def _batches(self, records: list[QueryRecord]) -> list[list[QueryRecord]]:
        """One batch per UTC day: a day written is never written again by a later retry."""
        by_day: dict[date, list[QueryRecord]] = {}
        for record in records:
            by_day.setdefault(_day(record.ts), []).append(record)
        return list(by_day.values())

    def _write(self, records: Sequence[QueryRecord]) -> None:
        path = self._day_folder(_day(records[0].ts)) / _file_name()
        try:
            write_parquet(records_table(records), path)
        except OSError as error:
            raise QueryLogUnavailable(
                f"cannot write the query log under {self.root}: {error}; free space or fix "
                "permissions there, or set AIPLATFORM_MONITORING_QUERY_LOG=false"
            ) from error

    def read(self, start: datetime, end: datetime) -> "pd.DataFrame":
        import pyarrow as pa
        import pyarrow.parquet as pq

        start, end = utc(start), utc(end)
        files = [
            path
            for day in _days(start, end)
            for path in sorted(self._day_folder(day).glob("*.parquet"))
        ]
        if not files:
            return records_frame([])
        table = pa.concat_tables(pq.read_table(path, schema=schema()) for path in files)
        return window(table.to_pandas(), start, end)

    def _day_folder(self, day: date) -> Path:
        return self.root / f"date={day.isoformat()}"


def open_query_log(settings: Settings) -> QueryLog:
    """PostgreSQL when a DSN is configured, Parquet under the storage folder otherwise."""
    dsn = settings.monitoring.query_log_dsn
    if dsn is not None:
        from aiplatform_dagster.monitoring.postgres_log import PostgresQueryLog

        return PostgresQueryLog(dsn.get_secret_value())
    return ParquetQueryLog(settings.paths.storage_dir / "monitoring" / "query_log")


def schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC")),
            pa.field("question_words", pa.int32()),
            pa.field("question_chars", pa.int32()),
            pa.field("top_score", pa.float64()),
            pa.field("score_margin", pa.float64()),
            pa.field("latency_ms", pa.float64()),
            pa.field("script", pa.string()),
            pa.field("route", pa.string()),
            pa.field(EMBEDDING, pa.list_(pa.float32())),
        ]
    )


def records_table(records: Iterable[QueryRecord]) -> "pa.Table":
    import pyarrow as pa

    rows = [record.as_row() for record in records]
    return pa.Table.from_pylist(rows, schema=schema())


def records_frame(records: Iterable[QueryRecord]) -> "pd.DataFrame":
    """Records as the DataFrame ``read`` returns (typed columns even when empty)."""
    return records_table(records).to_pandas()


def window(frame: "pd.DataFrame", start: datetime, end: datetime) -> "pd.DataFrame":
    """Rows with ``start <= ts < end``, oldest first, index 0..n-1."""
    import pandas as pd

    stamps = frame[TIMESTAMP]
    kept = frame[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))]
    return kept.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)[list(COLUMNS)]


def write_parquet(table: "pa.Table", path: Path) -> None:
    """Write ``table`` to ``path`` whole or not at all."""
    import pyarrow.parquet as pq

    write_atomically(path, lambda pending: pq.write_table(table, pending))


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no timezone: pass an aware datetime (UTC)")
    return moment.astimezone(UTC)


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _file_name() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"


def _days(start: datetime, end: datetime) -> list[date]:
    days, day = [], start.date()
    while datetime.combine(day, datetime.min.time(), UTC) < end:
        days.append(day)
        day += timedelta(days=1)
    return days
