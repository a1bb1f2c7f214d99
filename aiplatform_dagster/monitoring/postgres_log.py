"""The query log in PostgreSQL, for deployments where many replicas answer queries.

One table (``query_log`` by default, created if missing) with the embedding as ``float4[]``,
indexed by time so a daily window is a range scan. A server that is down or refuses the
write leaves the records buffered (bounded) for the next flush.
"""

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiplatform_dagster.monitoring.features import COLUMNS, EMBEDDING, QueryRecord
from aiplatform_dagster.monitoring.query_log import (
    DEFAULT_MAX_BUFFER,
    BufferedLog,
    QueryLogUnavailable,
    records_frame,
    utc,
)

if TYPE_CHECKING:
    import pandas as pd

CONNECT_TIMEOUT_S = 5
"""A flush waits at most this long for an unreachable server before keeping its buffer."""
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresQueryLog(BufferedLog):
    """Query records in the table ``table`` of the database ``dsn`` names."""

    def __init__(
        self, dsn: str, table: str = "query_log", max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> None:
        super().__init__(max_buffer)
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(
                f"table {table!r} is not a plain lower-case SQL name (letters, digits, _)"
            )
        self._dsn = dsn
        self.table = table
        self._connection: Any = None

    def _write(self, records: Sequence[QueryRecord]) -> None:
        from psycopg2.extras import execute_values

        rows = [
            tuple(
                record.embedding.tolist() if column == EMBEDDING else value
                for column, value in record.as_row().items()
            )
            for record in records
        ]
        insert = f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES %s"
        self._run(lambda cursor: execute_values(cursor, insert, rows, page_size=500), "write")

    def read(self, start: datetime, end: datetime) -> "pd.DataFrame":
        select = (
            f"SELECT {', '.join(COLUMNS)} FROM {self.table} "
            "WHERE ts >= %s AND ts < %s ORDER BY ts, id"
        )

        def fetch(cursor: Any) -> list[tuple[Any, ...]]:
            cursor.execute(select, (utc(start), utc(end)))
            return cursor.fetchall()

        rows = self._run(fetch, "read")
        return records_frame(QueryRecord(**dict(zip(COLUMNS, row, strict=True))) for row in rows)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _run(self, work: Callable[[Any], Any], action: str) -> Any:
        """``work(cursor)`` in one transaction; a failed connection is dropped, not reused."""
        import psycopg2

        try:
            connection = self._connect()
            with connection, connection.cursor() as cursor:
                return work(cursor)
        except psycopg2.Error as error:
            self.close()
            raise QueryLogUnavailable(
                f"cannot {action} the query log table {self.table} in PostgreSQL "
                f"(AIPLATFORM_MONITORING_QUERY_LOG_DSN): {str(error).strip()}; "
                f"{self.buffered} records wait for the next flush"
            ) from error

    def _connect(self) -> Any:
        import psycopg2

        if self._connection is None or self._connection.closed:
            connection = psycopg2.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S)
            with connection, connection.cursor() as cursor:
                cursor.execute(
                    f"""CREATE TABLE IF NOT EXISTS {self.table} (
                        id bigserial PRIMARY KEY,
                        ts timestamptz NOT NULL,
                        question_words integer NOT NULL,
                        question_chars integer NOT NULL,
                        top_score double precision,
                        score_margin double precision,
                        latency_ms double precision NOT NULL,
                        script text NOT NULL,
                        route text NOT NULL,
                        embedding float4[] NOT NULL
                    );
                    CREATE INDEX IF NOT EXISTS {self.table}_ts ON {self.table} (ts)"""
                )
            self._connection = connection
        return self._connection
