"""Month-to-date LLM spend, shared by every replica, for the budget metric and its alerts.

A Prometheus counter restarts at zero with its process and knows no calendar month, so the
spend is kept in a ledger keyed by month: Redis (``INCRBYFLOAT``, shared by the replicas) when
the platform has one, else SQLite in the storage folder (one machine). A ledger that fails never
fails a query: ``add`` reports False and the caller counts the miss.
"""

import logging
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from aiplatform_dagster.config import Settings
from aiplatform_dagster.tallies import PendingTally

logger = logging.getLogger(__name__)
MONTH_TTL_S = 40 * 24 * 3600
"""A Redis month key outlives its month a little, then goes."""


def this_month(now: datetime | None = None) -> str:
    return f"{now or datetime.now(UTC):%Y-%m}"


class SpendLedger(Protocol):
    def add(self, usd: float) -> bool:
        """Add ``usd`` to this month; False when the ledger could not be written."""

    def month_to_date(self) -> float | None:
        """This month's spend so far (None when the ledger cannot be read)."""


class RedisSpend:
    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = f"{prefix}spend:"

    def add(self, usd: float) -> bool:
        import redis

        key = self._prefix + this_month()
        try:
            with self._client.pipeline() as pipe:
                pipe.incrbyfloat(key, usd).expire(key, MONTH_TTL_S).execute()
        except redis.RedisError as error:
            logger.warning("spend ledger not written: %s", error)
            return False
        return True

    def month_to_date(self) -> float | None:
        import redis

        try:
            value = self._client.get(self._prefix + this_month())
        except redis.RedisError:
            return None
        return float(value) if value is not None else 0.0


class LocalSpend:
    """The ledger in a SQLite file, for one machine.

    Additions are tallied in the process and written in one transaction each ``flush_s``, when
    the month is read, and at exit (a commit per answered query queued the API on the file's
    write lock); a killed process loses at most ``flush_s`` of spend.
    """

    def __init__(self, path: Path, flush_s: float = 1.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        with closing(_open(path)) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS spend (month TEXT PRIMARY KEY, usd REAL)")
        self._pending = PendingTally(flush_s)
        self._pending.flush_when_collected(self, partial(_add_months, path))

    def add(self, usd: float) -> bool:
        return self._write() if self._pending.add(this_month(), usd) else True

    def month_to_date(self) -> float | None:
        self._write()
        try:
            with closing(_open(self._path)) as db:
                row = db.execute(
                    "SELECT usd FROM spend WHERE month = ?", (this_month(),)
                ).fetchone()
        except sqlite3.Error:
            return None
        return float(row[0]) if row else 0.0

    def _write(self) -> bool:
        try:
            self._pending.flush(partial(_add_months, self._path))
        except sqlite3.Error as error:
            logger.warning("spend ledger not written (kept for the next try): %s", error)
            return False
        return True


def _open(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=5)
    connection.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit skips the fsync
    return connection


def _add_months(path: Path, spend: Counter[str]) -> None:
    """Module-level, so the finalizer holds no reference to the ledger it writes for."""
    with closing(_open(path)) as db, db:
        db.executemany(
            "INSERT INTO spend VALUES (?, ?) "
            "ON CONFLICT(month) DO UPDATE SET usd = usd + excluded.usd",
            list(spend.items()),
        )


def open_spend_ledger(settings: Settings) -> SpendLedger:
    if settings.cache.redis_url:
        return RedisSpend(settings.cache.redis_url, settings.cache.redis_prefix)
    return LocalSpend(settings.paths.storage_dir / "serving" / "spend.sqlite")
