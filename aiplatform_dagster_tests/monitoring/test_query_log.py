"""The query log's two stores: Parquet files and the real PostgreSQL server."""

import math
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.monitoring.features import COLUMNS, QueryRecord
from aiplatform_dagster.monitoring.postgres_log import PostgresQueryLog
from aiplatform_dagster.monitoring.query_log import (
    ParquetQueryLog,
    QueryLogUnavailable,
    open_query_log,
)
from aiplatform_dagster_tests.dagster_dev import PROJECT_ROOT
from aiplatform_dagster_tests.monitoring.synthetic import day_start, traffic
from aiplatform_dagster_tests.postgres import POSTGRES_ADMIN_DSN, temporary_database

DAY, NEXT, AFTER = day_start("2026-12-01"), day_start("2026-12-02"), day_start("2026-12-03")


def assert_same(frame, records: list[QueryRecord]) -> None:
    assert len(frame) == len(records)
    for (_, row), record in zip(frame.iterrows(), records, strict=True):
        assert row["ts"].to_pydatetime() == record.ts
        for column in COLUMNS[1:-1]:
            expected, got = getattr(record, column), row[column]
            assert got == expected or (math.isnan(got) and math.isnan(expected)), column
        assert row["embedding"].dtype == np.float32
        np.testing.assert_array_equal(row["embedding"], record.embedding)


def test_parquet_round_trip_by_utc_day(tmp_path: Path) -> None:
    log = ParquetQueryLog(tmp_path / "log")
    first, second = traffic("2026-12-01", 40, seed=1), traffic("2026-12-02", 30, seed=2)
    first[3] = QueryRecord(**{**first[3].__dict__, "top_score": math.nan})
    for record in [*second[:10], *first, *second[10:]]:
        log.append(record)
    assert log.flush() == 70 and log.flush() == 0
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == [
        "date=2026-12-01",
        "date=2026-12-02",
    ]
    assert_same(log.read(DAY, NEXT), first)
    assert_same(log.read(NEXT, AFTER), second)
    assert_same(log.read(DAY, AFTER), first + second)
    assert log.read(AFTER, day_start("2026-12-05")).empty
    assert list(log.read(AFTER, day_start("2026-12-05")).columns) == list(COLUMNS)


def test_each_flush_is_a_new_file_and_windows_cut_inside_a_day(tmp_path: Path) -> None:
    log = ParquetQueryLog(tmp_path)
    records = traffic("2026-12-01", 48)
    for batch in (records[:20], records[20:]):
        for record in batch:
            log.append(record)
        log.flush()
    assert len(list((tmp_path / "date=2026-12-01").glob("*.parquet"))) == 2
    noon = day_start("2026-12-01").replace(hour=12)
    assert_same(log.read(DAY, noon), [r for r in records if r.ts < noon])


def test_open_query_log_follows_the_settings(tmp_path: Path) -> None:
    parquet = open_query_log(load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)}))
    assert isinstance(parquet, ParquetQueryLog)
    assert parquet.root == tmp_path / "monitoring" / "query_log"
    dsn = "postgresql://postgres@127.0.0.1:5432/x"
    postgres = open_query_log(load_settings({"AIPLATFORM_MONITORING_QUERY_LOG_DSN": dsn}))
    assert isinstance(postgres, PostgresQueryLog)


WRITER = """
import sys
from aiplatform_dagster.monitoring.query_log import ParquetQueryLog
from aiplatform_dagster_tests.monitoring.synthetic import traffic

log = ParquetQueryLog(sys.argv[1])
records = traffic("2026-12-01", 2000, seed=1, dim=384)
while True:
    for record in records:
        log.append(record)
    print(log.flush(), flush=True)
"""


def test_a_writer_killed_mid_flush_loses_nothing_already_flushed(tmp_path: Path) -> None:
    """SIGKILL while a flush writes its file: every file flushed before stays readable and
    the half-written one is never read."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE
    )
    assert writer.stdout is not None
    flushed = int(writer.stdout.readline())
    deadline = time.monotonic() + 30
    while not (scratch := list(tmp_path.glob("date=*/.*.tmp"))):
        assert time.monotonic() < deadline, "the writer never started a second flush"
        time.sleep(0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    assert any(path.exists() for path in scratch), "the kill came after the write finished"
    frame = ParquetQueryLog(tmp_path).read(DAY, NEXT)
    assert len(frame) >= flushed and len(frame) % 2000 == 0
    assert_same(
        frame.iloc[:2000].reset_index(drop=True), traffic("2026-12-01", 2000, seed=1, dim=384)
    )


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    with temporary_database("querylog") as dsn:
        yield dsn


def test_postgres_round_trip_and_table_created(postgres_dsn: str) -> None:
    log = PostgresQueryLog(postgres_dsn)
    records = traffic("2026-12-01", 25, seed=3) + traffic("2026-12-02", 5, seed=4)
    records[0] = QueryRecord(**{**records[0].__dict__, "score_margin": math.nan})
    for record in records:
        log.append(record)
    assert log.flush() == 30
    log.close()
    reader = PostgresQueryLog(postgres_dsn)
    assert_same(reader.read(DAY, NEXT), records[:25])
    assert_same(reader.read(DAY, AFTER), records)
    assert reader.read(AFTER, day_start("2026-12-04")).empty
    reader.close()


def test_postgres_outage_keeps_a_bounded_buffer_until_the_server_is_back() -> None:
    """The log points at a database that does not exist yet: flushes fail, keep the newest
    records, and succeed once the database is there."""
    name = f"querylog_late_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(POSTGRES_ADMIN_DSN)
    admin.autocommit = True
    params = admin.get_dsn_parameters()
    log = PostgresQueryLog(
        f"postgresql://{params['user']}@{params['host']}:{params['port']}/{name}", max_buffer=8
    )
    records = traffic("2026-12-01", 12)
    try:
        for record in records:
            log.append(record)
        with pytest.raises(QueryLogUnavailable, match=f'database "{name}" does not exist'):
            log.flush()
        assert (log.buffered, log.dropped) == (8, 4)
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        assert log.flush() == 8
        assert_same(log.read(DAY, NEXT), records[4:])
    finally:
        log.close()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_an_unwritable_folder_raises_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = ParquetQueryLog(blocker / "log")
    log.append(traffic("2026-12-01", 1)[0])
    with pytest.raises(QueryLogUnavailable, match="cannot write the query log"):
        log.flush()
    assert log.buffered == 1


def test_stray_scratch_files_are_ignored(tmp_path: Path) -> None:
    log = ParquetQueryLog(tmp_path)
    for record in traffic("2026-12-01", 3):
        log.append(record)
    log.flush()
    (tmp_path / "date=2026-12-01" / ".half.parquet.1234.tmp").write_bytes(b"PAR1 garbage")
    assert len(log.read(DAY, NEXT)) == 3


def test_a_flush_that_fails_on_one_day_never_rewrites_the_other(tmp_path: Path) -> None:
    log = ParquetQueryLog(tmp_path)
    first, second = traffic("2026-12-01", 4, seed=1), traffic("2026-12-02", 3, seed=2)
    for record in first + second:
        log.append(record)
    (tmp_path / "date=2026-12-02").write_text("a file where the day's folder goes")
    with pytest.raises(QueryLogUnavailable):
        log.flush()
    assert log.buffered == 3
    (tmp_path / "date=2026-12-02").unlink()
    assert log.flush() == 3
    assert_same(log.read(DAY, AFTER), first + second)
